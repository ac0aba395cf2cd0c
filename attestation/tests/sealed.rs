//! The sealed-corpus format: round trips, test vectors, and every kind of
//! tampering (bit flips, truncation, reordering, duplication, splicing).

use sealtune_attestation::sealed::{open, seal, seal_with_randomness, DataKey, Opener, SealOptions, SealedError, CHUNK_SIZE};

fn options(chunk_size: u32) -> SealOptions {
    SealOptions { dataset_id: "notes".into(), content_type: "jsonl".into(), chunk_size, created: 1_700_000_000 }
}

fn sealed(plain: &[u8], key: &DataKey, chunk_size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    seal(plain, &mut out, key, &options(chunk_size)).unwrap();
    out
}

fn opened(file: &[u8], key: &DataKey) -> Result<Vec<u8>, SealedError> {
    let mut out = Vec::new();
    open(file, &mut out, key).map(|_| out)
}

/// Offset of the first chunk: magic, length, header, MAC.
fn body_start(file: &[u8]) -> usize {
    12 + u32::from_be_bytes(file[8..12].try_into().unwrap()) as usize + 32
}

#[test]
fn round_trips_at_every_interesting_size() {
    let key = DataKey::generate();
    for chunk in [16u32, CHUNK_SIZE] {
        let c = chunk as usize;
        for len in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let file = sealed(&plain, &key, chunk);
            // Every chunk carries a 16-byte tag; an exact multiple ends with a full final chunk.
            let chunks = if len == 0 { 1 } else { len.div_ceil(c) };
            assert_eq!(file.len(), body_start(&file) + len + 16 * chunks, "len {len} chunk {chunk}");
            assert_eq!(opened(&file, &key).unwrap(), plain, "len {len} chunk {chunk}");
        }
    }
}

#[test]
fn sealing_is_randomised_and_the_commitment_is_the_file_hash() {
    use sha2::{Digest, Sha256};
    let key = DataKey::generate();
    let mut a = Vec::new();
    let commitment = seal(&b"same"[..], &mut a, &key, &options(16)).unwrap();
    assert_eq!(commitment, <[u8; 32]>::from(Sha256::digest(&a)));
    assert_ne!(a, sealed(b"same", &key, 16));
}

#[test]
fn the_wrong_key_is_named_as_such() {
    let file = sealed(b"secret", &DataKey::generate(), 16);
    assert!(matches!(opened(&file, &DataKey::generate()), Err(SealedError::WrongKey)));
}

#[test]
fn every_single_byte_flip_fails() {
    let key = DataKey::generate();
    let plain = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEF".to_vec(); // 3 chunks of 16
    let file = sealed(&plain, &key, 16);
    for at in 0..file.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[at] ^= bit;
            assert!(opened(&bad, &key).is_err(), "flip {bit:#x} at byte {at} of {} accepted", file.len());
        }
    }
    // In the body, the failure names the chunk.
    let start = body_start(&file);
    for chunk in 0..3u64 {
        let mut bad = file.clone();
        bad[start + chunk as usize * 32 + 5] ^= 1;
        assert!(matches!(opened(&bad, &key), Err(SealedError::TamperedChunk(c)) if c == chunk));
    }
}

#[test]
fn truncation_anywhere_fails_and_at_chunk_boundaries_says_so() {
    let key = DataKey::generate();
    let file = sealed(&[9u8; 64], &key, 16); // 4 full chunks, the last one final
    let start = body_start(&file);
    for cut in 0..file.len() {
        assert!(opened(&file[..cut], &key).is_err(), "truncation to {cut} bytes accepted");
    }
    for complete in 1..4u64 {
        let cut = start + complete as usize * 32;
        assert!(matches!(opened(&file[..cut], &key), Err(SealedError::TruncatedAfterChunk(c)) if c == complete - 1));
    }
    assert!(matches!(opened(&file[..start], &key), Err(SealedError::TruncatedAfterChunk(0))));
}

#[test]
fn reordered_duplicated_appended_and_spliced_chunks_fail() {
    let key = DataKey::generate();
    let plain = [1u8; 48];
    let file = sealed(&plain, &key, 16);
    let start = body_start(&file);
    let chunk = |f: &[u8], i: usize| f[start + 32 * i..start + 32 * (i + 1)].to_vec();
    let with_chunks = |f: &[u8], order: &[Vec<u8>]| [f[..start].to_vec(), order.concat()].concat();

    let swapped = with_chunks(&file, &[chunk(&file, 1), chunk(&file, 0), chunk(&file, 2)]);
    assert!(matches!(opened(&swapped, &key), Err(SealedError::TamperedChunk(0))));
    let duplicated = with_chunks(&file, &[chunk(&file, 0), chunk(&file, 0), chunk(&file, 1), chunk(&file, 2)]);
    assert!(matches!(opened(&duplicated, &key), Err(SealedError::TamperedChunk(1))));
    let mut appended = file.clone();
    appended.extend_from_slice(&chunk(&file, 2));
    assert!(opened(&appended, &key).is_err());

    // A chunk from another file sealed with the same DEK at the same position.
    let other = sealed(&plain, &key, 16);
    let spliced = with_chunks(&file, &[chunk(&file, 0), chunk(&other, 1), chunk(&file, 2)]);
    assert!(matches!(opened(&spliced, &key), Err(SealedError::TamperedChunk(1))));
}

#[test]
fn no_plaintext_is_released_before_a_chunk_authenticates() {
    let key = DataKey::generate();
    let file = sealed(&[5u8; 40], &key, 16);
    let mut bad = file.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1; // the final chunk's tag
    let mut opener = Opener::new(&bad[..], &key).unwrap();
    assert_eq!(opener.next_chunk().unwrap().unwrap().as_slice(), &[5u8; 16]);
    assert_eq!(opener.next_chunk().unwrap().unwrap().as_slice(), &[5u8; 16]);
    assert!(matches!(opener.next_chunk(), Err(SealedError::TamperedChunk(2))));
}

#[test]
fn not_sealed_and_unsupported_versions_are_named() {
    let key = DataKey::generate();
    assert!(matches!(opened(b"{\"text\":\"plain\"}\n", &key), Err(SealedError::NotSealed)));
    let file = sealed(b"x", &key, 16);
    // The header's first field is `version` = 1 (CBOR: 0x67 "version" 0x01).
    let at = file.windows(7).position(|w| w == b"version").unwrap() + 7;
    let mut v2 = file.clone();
    v2[at] = 0x02;
    assert!(matches!(opened(&v2, &key), Err(SealedError::UnsupportedVersion(2))));
}

/// docs/formats/sealed-corpus.md, "Test vector": DEK 00 01 .. 1f, nonce
/// prefix a0..a6, salt 32×0x5a, chunk size 16, created 1700000000, dataset
/// `notes`, content type `jsonl`, plaintext `{"text":"hello sealtune"}\n`.
const VECTOR_DEK: &str = "sealtune-dek-v1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
const VECTOR_PLAINTEXT: &[u8] = b"{\"text\":\"hello sealtune\"}\n";
const VECTOR_SEALED: &str = include_str!("vectors/sealed-v1.hex");
const VECTOR_COMMITMENT: &str = "c01b261814da2921c4cfa4d4046e2c609b499c88f36cee8483113937ce188f7e";

#[test]
fn test_vector_opens_and_reseals_to_the_same_bytes() {
    let key = DataKey::from_file(VECTOR_DEK).unwrap();
    let mut out = Vec::new();
    let prefix = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6];
    let commitment = seal_with_randomness(&mut &VECTOR_PLAINTEXT[..], &mut out, &key, &options(16), prefix, [0x5a; 32]).unwrap();
    assert_eq!(hex::encode(&out), VECTOR_SEALED.trim());
    assert_eq!(hex::encode(commitment), VECTOR_COMMITMENT);
    let expected = hex::decode(VECTOR_SEALED.trim()).unwrap();
    assert_eq!(opened(&expected, &key).unwrap(), VECTOR_PLAINTEXT);
}
