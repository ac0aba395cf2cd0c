//! Seal and open throughput of the sealed-corpus format, and peak memory for
//! a large streamed file. Prints figures; not a test.
//!
//! cargo bench -p sealtune-attestation --bench sealed

use sealtune_attestation::sealed::{open, seal, DataKey, SealOptions, CHUNK_SIZE};
use std::io::{Read, Write};
use std::time::Instant;

/// An endless reader of pseudo-random bytes, so no input buffer is held.
struct Source {
    left: u64,
    state: u64,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let key = DataKey::generate();
    let options = SealOptions { dataset_id: "bench".into(), content_type: "jsonl".into(), chunk_size: CHUNK_SIZE, created: 0 };

    // Memory: seal 2 GiB from a generator into a counting sink.
    let before = peak_rss_kib();
    let big = 2u64 << 30;
    let mut sink = Sink(0);
    seal(Source { left: big, state: 7 }, &mut sink, &key, &options).unwrap();
    println!("streamed seal of {} GiB: peak RSS {} MiB (before: {} MiB)", big >> 30, peak_rss_kib() / 1024, before / 1024);

    // Throughput on 256 MiB held in memory (input generation not timed).
    let size = 256u64 << 20;
    let mut plain = vec![0u8; size as usize];
    Source { left: size, state: 1 }.read_exact(&mut plain).unwrap();
    let mut sealed = Vec::with_capacity(plain.len() + plain.len() / 4096 + 4096);
    let t = Instant::now();
    seal(&plain[..], Sink(0), &key, &options).unwrap();
    let seal_s = t.elapsed().as_secs_f64();
    seal(&plain[..], &mut sealed, &key, &options).unwrap();
    let t = Instant::now();
    let mut sink = Sink(0);
    open(&sealed[..], &mut sink, &key).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(sink.0, size);
    let mb = size as f64 / 1e6;
    println!("seal: {:.0} MB/s on one core ({} MiB; includes the SHA-256 commitment)", mb / seal_s, size >> 20);
    println!("open: {:.0} MB/s on one core ({} MiB)", mb / open_s, size >> 20);
    drop((plain, sealed));

}
