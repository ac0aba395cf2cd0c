#!/usr/bin/env bash
# Trainer speed and memory: one DP-SGD step and one non-private step of sealtune
# (candle) and of PyTorch (+ Opacus for DP-SGD) on the same model shape, batch and
# sequence length (B = 8, T = 128, LoRA r = 8 on q and v, f32), alternating the four
# in each round, one process per measurement. Prints samples/s, peak RSS and ratios.
#
# usage: bench/trainer.sh [--setup] [--rounds N] [--threads N] [tiny] [135m]
#   --setup     create bench/.venv with `pip install torch opacus` first (about 3 GB
#               download, 5.5 GB on disk: PyPI's torch brings its CUDA libraries)
#   --rounds N  measurement rounds per shape (default 2; the median is reported)
#   --threads N compute threads for both frameworks (default 2)
# Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

setup=0 rounds=2 threads=2 shapes=()
while [ $# -gt 0 ]; do
    case "$1" in
        --setup) setup=1 ;;
        --rounds) rounds=$2; shift ;;
        --threads) threads=$2; shift ;;
        tiny|135m) shapes+=("$1") ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#shapes[@]} -gt 0 ] || shapes=(tiny 135m)
venv=bench/.venv
if [ "$setup" = 1 ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch opacus
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "no $venv: run bench/trainer.sh --setup first" >&2
    exit 2
fi
sealtune=$(cargo bench -p sealtune-enclave --bench dpsgd --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
[ -x "$sealtune" ] || { echo "cannot build the sealtune bench" >&2; exit 1; }

tunables=$("$sealtune" --malloc-tunables)

"$venv/bin/python" - "$sealtune" "$venv/bin/python" "$rounds" "$threads" "$tunables" "${shapes[@]}" <<'PY'
import json, os, statistics, subprocess, sys

sealtune, python, rounds, threads, tunables, shapes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:]
BATCH = 8
STEPS = {"tiny": 20, "135m": 3}
# Both frameworks run with the malloc settings `sealtune host launch` gives the enclave
# (sealtune_enclave::MALLOC_TUNABLES: freed memory kept mapped, one arena), so neither
# pays for re-faulting fresh pages.
# sealtune's compute threads are rayon's; candle's element-wise pool keeps the
# enclave's own setting (model::settle_thread_settings).
env = dict(os.environ, RAYON_NUM_THREADS=threads, OMP_NUM_THREADS=threads, GLIBC_TUNABLES=tunables)

def sealtune_run(shape, mode):
    out = subprocess.run([sealtune, "--child", shape, mode], env=env, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])

def torch_run(shape, mode):
    cmd = [python, "bench/torch_step.py", shape, mode, str(STEPS[shape]), threads]
    r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    return r["seconds"], r["peak_mb"]

print(f"B = {BATCH}, T = 128, LoRA r = 8 on q,v, f32, {threads} threads, GLIBC_TUNABLES as the enclave gets; median of {rounds} rounds, one process each")
print(f"{'shape':<6} {'trainer':<22} {'samples/s':>10} {'peak MB':>9}")
for shape in shapes:
    runs = {k: [] for k in ["sealtune np", "sealtune dp", "pytorch np", "opacus dp"]}
    for _ in range(rounds):
        runs["sealtune dp"].append(sealtune_run(shape, "dp"))
        runs["opacus dp"].append(torch_run(shape, "dp"))
        runs["sealtune np"].append(sealtune_run(shape, "np"))
        runs["pytorch np"].append(torch_run(shape, "np"))
    med = {k: (BATCH / statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in runs.items()}
    for k, (sps, mb) in med.items():
        print(f"{shape:<6} {k:<22} {sps:>10.2f} {mb:>9.0f}")
    (s_dp, m_dp), (o_dp, om_dp) = med["sealtune dp"], med["opacus dp"]
    (s_np, m_np), (p_np, pm_np) = med["sealtune np"], med["pytorch np"]
    print(f"{shape:<6} sealtune DP / Opacus DP: {s_dp / o_dp:.2f}x samples/s, {m_dp / om_dp:.2f}x peak RSS; "
          f"non-private sealtune / PyTorch: {s_np / p_np:.2f}x samples/s, {m_np / pm_np:.2f}x peak RSS")
PY
