//! The fused ops against the primitive-op compositions they replace, forward and
//! backward, at the SmolLM2-135M shapes of one micro-batch (8 × 128 tokens, hidden 576,
//! vocabulary 49152). Prints time and peak RSS; asserts nothing.
//!
//! `cargo bench -p sealtune-enclave --bench fused [-- rms_norm|rope|attention|swiglu|lora|head_nll]`
//!
//! Each measurement runs in a child process of its own (peak RSS is per process), with
//! the malloc settings the enclave runs with; fused and composed children alternate,
//! and the medians are reported.

mod common;

use common::{median, peak_rss_mb};
use candle_core::{DType, Device, Tensor, Var, D};
use sealtune_enclave::model::frozen::FrozenLinear;
use sealtune_enclave::model::fused::{causal_attention, frozen_head_nll, per_example_lora, rms_norm, rope, swiglu};
use std::process::Command;
use std::time::Instant;

const TOKENS: usize = 8 * 128;
const HIDDEN: usize = 576;
const VOCAB: usize = 49152;
const REPEATS: usize = 5;

/// Seconds of one forward and backward of `op` on a fresh variable (median of repeats).
fn time(x: &Tensor, op: impl Fn(&Tensor) -> Tensor) -> f64 {
    let times: Vec<f64> = (0..=REPEATS)
        .map(|_| {
            let var = Var::from_tensor(x).unwrap();
            let start = Instant::now();
            let grads = op(var.as_tensor()).sum_all().unwrap().backward().unwrap();
            drop(grads);
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(times[1..].to_vec())
}

fn child(op: &str, fused: bool) {
    let dev = Device::Cpu;
    let seconds = match op {
        "rms_norm" => {
            let x = Tensor::randn(0f32, 1.0, (8, 128, HIDDEN), &dev).unwrap();
            let w = Tensor::ones(HIDDEN, DType::F32, &dev).unwrap();
            if fused {
                time(&x, |x| rms_norm(x, &w, 1e-5).unwrap())
            } else {
                time(&x, |x| {
                    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                    x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap()
                })
            }
        }
        "head_nll" => {
            let h = Tensor::randn(0f32, 1.0, (TOKENS, HIDDEN), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.04, (VOCAB, HIDDEN), &dev).unwrap();
            let labels = Tensor::arange(0u32, TOKENS as u32, &dev).unwrap();
            if fused {
                time(&h, |h| frozen_head_nll(h, &w, &labels).unwrap())
            } else {
                // What the decoder did before: the frozen head (no weight gradient), then
                // log-softmax over the whole vocabulary and a gather.
                let head = FrozenLinear::new(w, None).unwrap();
                time(&h, |h| {
                    let logp = candle_nn::ops::log_softmax(&head.forward(h).unwrap(), D::Minus1).unwrap();
                    logp.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap().neg().unwrap()
                })
            }
        }
        "attention" => {
            // One layer: 3 key/value heads of 3 query heads each, stacked as rows; q, k
            // and v side by side along the rows.
            let (rows, t, d) = (3 * 128, 128, 64);
            let x = Tensor::randn(0f32, 1.0, (8, 3, rows + 2 * t, d), &dev).unwrap();
            let mask: Vec<f32> = (0..rows).flat_map(|r| (0..t).map(move |j| if j <= r % t { 0.0 } else { f32::NEG_INFINITY })).collect();
            let mask = Tensor::from_vec(mask, (rows, t), &dev).unwrap();
            let qkv = |x: &Tensor| (x.narrow(2, 0, rows).unwrap(), x.narrow(2, rows, t).unwrap(), x.narrow(2, rows + t, t).unwrap());
            let scale = 1.0 / (d as f64).sqrt();
            if fused {
                time(&x, |x| {
                    let (q, k, v) = qkv(x);
                    causal_attention(&q, &k, &v, scale).unwrap()
                })
            } else {
                time(&x, |x| {
                    let (q, k, v) = qkv(x);
                    let scores = (q * scale).unwrap().matmul(&k.t().unwrap()).unwrap().broadcast_add(&mask).unwrap();
                    candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(&v).unwrap()
                })
            }
        }
        "swiglu" => {
            // Gate and up side by side: [tokens, 2 × intermediate].
            let x = Tensor::randn(0f32, 1.0, (8, 128, 2 * 1536), &dev).unwrap();
            let halves = |x: &Tensor| (x.narrow(2, 0, 1536).unwrap(), x.narrow(2, 1536, 1536).unwrap());
            if fused {
                time(&x, |x| {
                    let (g, u) = halves(x);
                    swiglu(&g, &u).unwrap()
                })
            } else {
                time(&x, |x| {
                    let (g, u) = halves(x);
                    (candle_nn::ops::silu(&g).unwrap() * u).unwrap()
                })
            }
        }
        "lora" => {
            // q_proj with a rank-8 adapter copy per example.
            let linear = FrozenLinear::new(Tensor::randn(0f32, 0.04, (HIDDEN, HIDDEN), &dev).unwrap(), None).unwrap();
            let a = Var::randn(0f32, 0.04, (8, 8, HIDDEN), &dev).unwrap();
            let b = Var::randn(0f32, 0.04, (8, HIDDEN, 8), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (8, 128, HIDDEN), &dev).unwrap();
            if fused {
                time(&x, |x| per_example_lora(x, &linear, a.as_tensor(), b.as_tensor(), 2.0).unwrap())
            } else {
                time(&x, |x| {
                    let h = (x.matmul(&a.as_tensor().t().unwrap()).unwrap() * 2.0).unwrap();
                    (linear.forward(x).unwrap() + h.matmul(&b.as_tensor().t().unwrap()).unwrap()).unwrap()
                })
            }
        }
        "rope" => {
            let x = Tensor::randn(0f32, 1.0, (8, 9, 128, 64), &dev).unwrap();
            let angles = Tensor::randn(0f32, 1.0, (128, 32), &dev).unwrap();
            let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
            if fused {
                time(&x, |x| rope(x, &cos, &sin).unwrap())
            } else {
                time(&x, |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap())
            }
        }
        other => panic!("unknown op {other}"),
    };
    println!("{seconds} {}", peak_rss_mb());
}

fn main() {
    // The thread settings the enclave runs with.
    sealtune_enclave::model::settle_thread_settings();
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(&args[pos + 1], args[pos + 2] == "fused");
        return;
    }
    println!("fused ops vs primitive compositions, forward + backward, f32, CPU, {TOKENS} tokens");
    println!("{:<9} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}", "op", "composed s", "fused s", "composed MB", "fused MB", "speed", "memory");
    let wanted: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
    for op in ["rms_norm", "rope", "attention", "swiglu", "lora", "head_nll"] {
        if !wanted.is_empty() && !wanted.iter().any(|w| *w == op) {
            continue;
        }
        let (mut t, mut m) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _round in 0..3 {
            for (k, mode) in ["composed", "fused"].iter().enumerate() {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["--child", op, mode])
                    .env("GLIBC_TUNABLES", sealtune_enclave::MALLOC_TUNABLES)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8_lossy(&out.stdout);
                let mut it = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
                t[k].push(it.next().unwrap());
                m[k].push(it.next().unwrap());
            }
        }
        let (tc, tf, mc, mf) = (median(t[0].clone()), median(t[1].clone()), median(m[0].clone()), median(m[1].clone()));
        println!("{op:<9} {tc:>12.4} {tf:>12.4} {mc:>12.0} {mf:>12.0} {:>7.2}x {:>7.2}x", tc / tf, mf / mc);
    }
    println!("speed = composed time over fused time; memory = fused peak RSS over composed (both include the inputs).");
}
