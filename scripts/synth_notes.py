#!/usr/bin/env python3
"""Synthetic clinical notes for demos and tests: JSONL records with a `text`
field and a `user_id` (the patient). Every name and number is made up.
Usage: synth_notes.py HOSPITAL_NAME COUNT SEED"""
import json, random, sys

FIRST = ["Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaja", "Luca"]
LAST = ["Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rossi", "Svensson", "Tanaka", "Urbina", "Varga"]
COMPLAINTS = ["persistent cough", "lower back pain", "migraine", "seasonal allergies", "mild hypertension",
              "sprained ankle", "type 2 diabetes follow-up", "insomnia", "acid reflux", "eczema flare"]
PLANS = ["rest and fluids", "ibuprofen 400 mg as needed", "follow-up in two weeks", "referral to physiotherapy",
         "adjust metformin dose", "blood panel ordered", "antihistamine daily", "sleep hygiene counselling"]


def main(hospital, count, seed):
    rng = random.Random(seed)
    patients = [(f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"P{rng.randrange(10**7):07d}") for _ in range(max(1, count // 3))]
    for i in range(count):
        name, pid = rng.choice(patients)
        note = (f"{hospital} visit note {i + 1}. Patient {name} (ID {pid}), age {rng.randrange(18, 90)}, "
                f"presents with {rng.choice(COMPLAINTS)}. Vitals stable: BP {rng.randrange(105, 150)}/"
                f"{rng.randrange(65, 95)}, HR {rng.randrange(55, 100)}. Plan: {rng.choice(PLANS)}.")
        print(json.dumps({"text": note, "user_id": pid}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
