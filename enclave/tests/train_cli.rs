//! `sealtune-enclave train` end to end on a tiny random model with a word-level tokenizer.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::Tokenizer;

const VOCAB: usize = 64;

/// A 2-layer Llama (hidden 32) with random weights, as a Hugging Face directory.
fn write_model(dir: &Path) {
    let (h, inter, layers, kv) = (32usize, 64usize, 2usize, 16usize);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, h]), ("model.norm.weight".into(), vec![h])];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![inter, h]),
            ("mlp.up_proj.weight", vec![inter, h]),
            ("mlp.down_proj.weight", vec![h, inter]),
        ] {
            shapes.push((format!("{p}.{name}"), shape));
        }
    }
    let tensors: HashMap<String, Tensor> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let t = if shape.len() == 1 {
                Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
            } else {
                let bound = 1.5 / (shape[1] as f64).sqrt();
                Tensor::rand(-bound as f32, bound as f32, shape, &Device::Cpu).unwrap()
            };
            (name, t)
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let vocab: HashMap<String, u32> = (0..VOCAB as u32).map(|i| (format!("w{i}"), i)).collect();
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("w0".into()).build().unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

fn counting_line(start: usize, user: Option<usize>) -> String {
    let text: Vec<String> = (0..10).map(|i| format!("w{}", (start + i) % VOCAB)).collect();
    let mut record = serde_json::json!({ "text": text.join(" ") });
    if let Some(u) = user {
        record["user_id"] = serde_json::json!(format!("user-{u}"));
    }
    record.to_string()
}

fn train(dir: &Path, data: &str, out: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sealtune-enclave"))
        .args(["train", "--model"])
        .arg(dir.join("model"))
        .arg("--data")
        .arg(dir.join(data))
        .arg("--out")
        .arg(dir.join(out))
        .args(["--epsilon", "8", "--delta", "1e-5", "--clip", "1", "--expected-batch", "16", "--lora-rank", "4", "--seq-len", "12"])
        .args(["--accountant", "rdp", "--lr", "0.01"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn train_writes_a_peft_adapter_and_a_summary_with_both_accountants() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    write_model(&dir.path().join("model"));
    let records: Vec<String> = (0..128).map(|i| counting_line(i % VOCAB, None)).collect();
    std::fs::write(dir.path().join("records.jsonl"), records.join("\n")).unwrap();

    let out = train(dir.path(), "records.jsonl", "adapter", &["--steps", "6", "--lora-targets", "q,v,o"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Progress carries the step count and ε only.
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(progress.len(), 6, "{stderr}");
    assert!(progress.iter().all(|l| l.contains("ε = ") && !l.to_lowercase().contains("loss")));

    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("adapter/training-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 6);
    assert_eq!(summary["declared_units"], 128);
    assert_eq!(summary["sampling_rate"], 0.125);
    assert_eq!(summary["expected_batch"], 16.0);
    assert_eq!(summary["clip"], 1.0);
    assert_eq!(summary["delta"], 1e-5);
    assert_eq!(summary["privacy_unit"]["kind"], "record");
    assert!(summary["neighbouring_relation"].as_str().unwrap().contains("one record"));
    assert!(summary["noise_multiplier"].as_f64().unwrap() > 0.0);
    let (rdp, pld) = (summary["epsilon"]["rdp"].as_f64().unwrap(), summary["epsilon"]["pld"].as_f64().unwrap());
    assert!(rdp <= 8.0 && pld <= rdp && pld > 0.0, "{rdp} {pld}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["r"], 4);
    assert!(dir.path().join("adapter/adapter_model.safetensors").exists());
}

#[test]
fn records_with_user_ids_train_at_user_level() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    write_model(&dir.path().join("model"));
    let records: Vec<String> = (0..90).map(|i| counting_line(i % VOCAB, Some(i % 30))).collect();
    std::fs::write(dir.path().join("users.jsonl"), records.join("\n")).unwrap();
    let out = train(dir.path(), "users.jsonl", "adapter", &["--epochs", "1", "--max-records-per-user", "2", "--micro-batch", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("adapter/training-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["privacy_unit"], serde_json::json!({"kind": "user", "max_records": 2}));
    assert_eq!(summary["declared_units"], 30);
    assert_eq!(summary["steps"], 2, "one epoch at q = 16/30");
    assert!(summary["neighbouring_relation"].as_str().unwrap().contains("one user"));

    // Mixing records with and without user ids is refused.
    let mut mixed = records.clone();
    mixed.push(counting_line(3, None));
    std::fs::write(dir.path().join("mixed.jsonl"), mixed.join("\n")).unwrap();
    let out = train(dir.path(), "mixed.jsonl", "mixed-out", &["--steps", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user_id"));
    assert!(!dir.path().join("mixed-out").exists(), "nothing is written when the job is refused");
}
