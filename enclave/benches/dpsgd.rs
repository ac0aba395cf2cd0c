//! Per-step time and peak memory of a DP-SGD step against a non-private step on the
//! same model, batch and sequence length. Prints figures; asserts nothing.
//!
//! `cargo bench -p sealtune-enclave --bench dpsgd [-- tiny|135m]`
//!
//! Each measurement runs in a child process of its own so that its peak RSS (VmHWM) is
//! its alone, with the malloc settings the enclave runs with; DP and non-private
//! children alternate, and the medians are reported.

mod common;

use common::{median, peak_rss_mb};
use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sealtune_enclave::dpsgd::engine::{DpSgd, DpSgdConfig, OptimizerConfig};
use sealtune_enclave::dpsgd::sampling::{Dataset, Layout, PrivacyUnit};
use sealtune_enclave::model::config::{Architecture, Config};
use sealtune_enclave::model::decoder::{Llama, TokenBatch};
use sealtune_enclave::model::load::Weights;
use sealtune_enclave::model::lora::{Adapters, LoraConfig, LoraParams};
use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

const BATCH: usize = 8;
const SEQ: usize = 128;
const LR: f64 = 1e-3;

struct Shape {
    name: &'static str,
    config: Config,
    steps: usize,
}

fn shapes() -> Vec<Shape> {
    let base = Config {
        architecture: Architecture::Llama,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_seq_len: 2048,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
    };
    let tiny = Config { hidden_size: 64, intermediate_size: 128, num_layers: 2, num_heads: 4, num_kv_heads: 2, head_dim: 16, vocab_size: 512, ..base.clone() };
    vec![Shape { name: "tiny", config: tiny, steps: 30 }, Shape { name: "135m", config: base, steps: 3 }]
}

/// Random weights (these shapes only need to cost what the real model costs).
fn model(cfg: &Config) -> Llama {
    let (h, i, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h]), ("model.norm.weight".into(), vec![h])];
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let t = if shape.len() == 1 {
                Tensor::ones(shape, DType::F32, &Device::Cpu)
            } else {
                Tensor::randn(0f32, 1.0 / (shape[1] as f32).sqrt(), shape, &Device::Cpu)
            };
            (name, t.unwrap())
        })
        .collect();
    Llama::load(&Weights::new(tensors, DType::F32, &Device::Cpu).unwrap(), cfg).unwrap()
}

fn lora(cfg: &Config) -> LoraParams {
    LoraParams::init(cfg, LoraConfig::new(8, 16.0, &["q", "v"]).unwrap(), &mut ChaCha20Rng::seed_from_u64(1), DType::F32, &Device::Cpu).unwrap()
}

fn records(cfg: &Config) -> Vec<Vec<u32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    (0..BATCH).map(|_| (0..=SEQ).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect()).collect()
}

/// One child: `steps` timed steps after one warm-up; prints "seconds peak_mb".
fn child(shape: &Shape, dp: bool) {
    let cfg = &shape.config;
    let model = model(cfg);
    let params = lora(cfg);
    let mut times = Vec::new();
    if dp {
        // q = 1 and B̄ = 8: every step is exactly the 8 records in one micro-batch of 8,
        // the batch the non-private step sees.
        let config = DpSgdConfig {
            sampling_rate: 1.0,
            expected_batch: BATCH as f64,
            noise_multiplier: 1.0,
            clip: 1.0,
            max_steps: shape.steps as u64 + 1,
            seq_len: SEQ,
            layout: Layout::new(BATCH, 1, PrivacyUnit::Record).unwrap(),
            optimizer: OptimizerConfig::adamw(LR),
        };
        let data = Dataset::records(records(cfg));
        let mut trainer = DpSgd::new(&model, params, config).unwrap();
        let mut last = Instant::now();
        trainer
            .train(&data, f64::INFINITY, &mut |_| Ok(0.0), &mut |_| {
                times.push(last.elapsed().as_secs_f64());
                last = Instant::now();
            })
            .unwrap();
    } else {
        let mut opt = candle_nn::AdamW::new_lr(params.vars(), LR).unwrap();
        let batch = TokenBatch::new(&records(cfg), SEQ, DType::F32, &Device::Cpu).unwrap();
        for _ in 0..=shape.steps {
            let start = Instant::now();
            // As the DP-SGD engine runs its steps.
            sealtune_enclave::model::on_compute_pool(|| {
                let loss = model.per_example_nll(&batch, Adapters::Shared(&params)).unwrap().mean_all().unwrap();
                opt.backward_step(&loss).unwrap();
            });
            times.push(start.elapsed().as_secs_f64());
        }
    }
    println!("{} {}", median(times[1..].to_vec()), peak_rss_mb());
}

fn main() {
    // The thread settings the enclave runs with.
    sealtune_enclave::model::settle_thread_settings();
    let args: Vec<String> = std::env::args().collect();
    // For bench/trainer.sh, which runs PyTorch with the same settings.
    if args.iter().any(|a| a == "--malloc-tunables") {
        println!("{}", sealtune_enclave::MALLOC_TUNABLES);
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let shape = shapes().into_iter().find(|s| s.name == args[pos + 1]).unwrap();
        child(&shape, args[pos + 2] == "dp");
        return;
    }
    let wanted: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
    println!("DP-SGD vs non-private step, B = {BATCH}, T = {SEQ}, LoRA r = 8 on q,v, f32, CPU");
    println!("{:<6} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}", "shape", "np s/step", "dp s/step", "np peak MB", "dp peak MB", "thrpt", "memory");
    for shape in shapes() {
        if !wanted.is_empty() && !wanted.iter().any(|w| *w == shape.name) {
            continue;
        }
        let (mut t, mut m) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _round in 0..2 {
            for (k, mode) in ["np", "dp"].iter().enumerate() {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["--child", shape.name, mode])
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
        let (tn, td, mn, md) = (median(t[0].clone()), median(t[1].clone()), median(m[0].clone()), median(m[1].clone()));
        println!("{:<6} {tn:>12.4} {td:>12.4} {mn:>12.0} {md:>12.0} {:>9.2}x {:>9.2}x", shape.name, tn / td, md / mn);
    }
    println!("thrpt = DP samples/s over non-private samples/s; memory = DP peak RSS over non-private.");
}
