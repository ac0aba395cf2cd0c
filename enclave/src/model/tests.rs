//! Tests on tiny random models built in memory and written as real checkpoint files.

use super::config::{Architecture, Config};
use super::decoder::{Llama, TokenBatch};
use super::export::{load_adapter, save_adapter, save_merged, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use super::frozen::FrozenLinear;
use super::load::{load_checkpoint, load_gguf, load_hf_dir, Weights};
use super::lora::{Adapters, LoraConfig, LoraParams};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::path::Path;

const ALL_TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// Widths are multiples of 32 so that the weights can be written in GGUF's block formats.
pub(crate) fn tiny_config() -> Config {
    Config {
        architecture: Architecture::Llama,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        vocab_size: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_seq_len: 64,
        tie_word_embeddings: false,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
    }
}

fn uniform(rng: &mut ChaCha20Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Random weights under Hugging Face names, f32.
pub(crate) fn random_weights(cfg: &Config, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (h, i, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h])];
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
    shapes.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let t = if shape.len() == 1 {
                uniform(&mut rng, &shape, 0.8, 1.2)
            } else {
                let bound = 1.5 / (shape[1] as f64).sqrt();
                uniform(&mut rng, &shape, -bound, bound)
            };
            (name, t.to_dtype(DType::F32).unwrap())
        })
        .collect()
}

fn hf_config_json(cfg: &Config) -> String {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32"
    })
    .to_string()
}

/// Writes an HF directory with the weights split over two shards and an index.
fn write_hf_dir(dir: &Path, cfg: &Config, weights: &[(String, Tensor)]) {
    std::fs::write(dir.join("config.json"), hf_config_json(cfg)).unwrap();
    let (first, second) = weights.split_at(weights.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let tensors: HashMap<String, Tensor> = part.iter().cloned().collect();
        candle_core::safetensors::save(&tensors, dir.join(file)).unwrap();
        for (name, _) in part {
            map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// llama.cpp's `convert_hf_to_gguf.py` permutation of Q/K rows, written out from its
/// Python: `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(w.shape)`.
fn llama_cpp_permute(w: &Tensor, n_head: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    w.reshape((n_head, 2, rows / n_head / 2, cols)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((rows, cols)).unwrap()
}

/// Writes the weights as a llama GGUF file, the way llama.cpp's converter names and
/// permutes them, matrices in `matrix_dtype`.
fn write_gguf(path: &Path, cfg: &Config, weights: &[(String, Tensor)], matrix_dtype: GgmlDType, extra_meta: &[(&str, gguf_file::Value)]) {
    let gguf_name = |hf: &str| -> String {
        match hf {
            "model.embed_tokens.weight" => return "token_embd.weight".into(),
            "model.norm.weight" => return "output_norm.weight".into(),
            "lm_head.weight" => return "output.weight".into(),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (l, rest) = rest.split_once('.').unwrap();
        let short = match rest {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            other => panic!("{other}"),
        };
        format!("blk.{l}.{short}")
    };
    let qtensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(name, t)| {
            let t = if name.ends_with("q_proj.weight") {
                llama_cpp_permute(t, cfg.num_heads)
            } else if name.ends_with("k_proj.weight") {
                llama_cpp_permute(t, cfg.num_kv_heads)
            } else {
                t.clone()
            };
            let dtype = if t.rank() == 1 { GgmlDType::F32 } else { matrix_dtype };
            (gguf_name(name), QTensor::quantize(&t, dtype).unwrap())
        })
        .collect();
    let u = |v: usize| gguf_file::Value::U32(v as u32);
    let mut meta: Vec<(&str, gguf_file::Value)> = vec![
        ("general.architecture", gguf_file::Value::String("llama".into())),
        ("llama.embedding_length", u(cfg.hidden_size)),
        ("llama.feed_forward_length", u(cfg.intermediate_size)),
        ("llama.block_count", u(cfg.num_layers)),
        ("llama.attention.head_count", u(cfg.num_heads)),
        ("llama.attention.head_count_kv", u(cfg.num_kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", gguf_file::Value::F32(1e-5)),
        ("llama.rope.freq_base", gguf_file::Value::F32(10_000.0)),
        ("llama.context_length", u(cfg.max_seq_len)),
    ];
    meta.extend(extra_meta.iter().cloned());
    let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

pub(crate) fn model_from(cfg: &Config, weights: &[(String, Tensor)], dtype: DType) -> Llama {
    let w = Weights::new(weights.iter().cloned().collect(), dtype, &Device::Cpu).unwrap();
    Llama::load(&w, cfg).unwrap()
}

fn sequences() -> Vec<Vec<u32>> {
    vec![vec![1, 5, 9, 2, 33, 7, 7, 60, 3], vec![4, 8, 15, 16, 23, 42], vec![0, 63, 12]]
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn max_abs(a: &Tensor) -> f64 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Adapters on every target with random (non-zero) B, so that every tensor has a
/// non-trivial gradient: at PEFT's initialisation B = 0 and so dL/dA = 0 exactly.
pub(crate) fn random_lora(cfg: &Config, dtype: DType, seed: u64) -> LoraParams {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let params = LoraParams::init(cfg, LoraConfig::new(2, 4.0, &ALL_TARGETS).unwrap(), &mut rng, dtype, &Device::Cpu).unwrap();
    for t in params.tensors() {
        if t.var.as_tensor().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() == 0.0 {
            let r = uniform(&mut rng, t.var.dims(), -0.3, 0.3).to_dtype(dtype).unwrap();
            t.var.set(&r).unwrap();
        }
    }
    params
}

#[test]
fn hf_and_gguf_checkpoints_give_the_same_logits() {
    for tied in [false, true] {
        let cfg = Config { tie_word_embeddings: tied, ..tiny_config() };
        let weights = random_weights(&cfg, 1);
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        write_hf_dir(&hf, &cfg, &weights);
        let gguf = dir.path().join("tiny.gguf");
        write_gguf(&gguf, &cfg, &weights, GgmlDType::F32, &[]);

        let a = load_hf_dir(&hf, DType::F32, &Device::Cpu).unwrap();
        let b = load_checkpoint(&gguf, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.config, cfg);
        assert_eq!(b.config, cfg);
        let ids = Tensor::new(&[[3u32, 14, 15, 9, 26, 5, 35, 8], [9, 7, 9, 3, 2, 38, 4, 6]], &Device::Cpu).unwrap();
        let la = Llama::load(&a.weights, &a.config).unwrap().logits(&ids, Adapters::None).unwrap();
        let lb = Llama::load(&b.weights, &b.config).unwrap().logits(&ids, Adapters::None).unwrap();
        // Both files hold the same f32 values, so the logits agree to rounding.
        let diff = max_abs_diff(&la, &lb);
        assert!(diff <= 1e-6, "tied={tied}: HF and GGUF logits differ by {diff}");
        assert!(max_abs(&la) > 0.1);
    }
}

#[test]
fn quantised_gguf_dequantises_close_to_the_original() {
    let cfg = tiny_config();
    let weights = random_weights(&cfg, 2);
    let dir = tempfile::tempdir().unwrap();
    // (type, bound on the relative Frobenius error of every matrix)
    for (dtype, tolerance) in [(GgmlDType::Q8_0, 0.01), (GgmlDType::Q4_1, 0.15), (GgmlDType::Q4_0, 0.2), (GgmlDType::F16, 1e-3)] {
        let path = dir.path().join(format!("{dtype:?}.gguf"));
        write_gguf(&path, &cfg, &weights, dtype, &[]);
        let ckpt = load_gguf(&path, DType::F32, &Device::Cpu).unwrap();
        for (name, original) in &weights {
            let loaded = ckpt.weights.get(name, original.dims()).unwrap();
            let err = (&loaded - original).unwrap().sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
            let norm = original.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
            assert!(f64::from(err / norm) < tolerance, "{dtype:?} {name}: relative error {}", err / norm);
        }
    }
}

#[test]
fn loading_reports_missing_and_misshapen_tensors() {
    let cfg = tiny_config();
    let mut weights = random_weights(&cfg, 3);
    weights.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    let w = Weights::new(weights.iter().cloned().collect(), DType::F32, &Device::Cpu).unwrap();
    let err = Llama::load(&w, &cfg).err().unwrap();
    assert!(err.to_string().contains("model.layers.1.mlp.up_proj.weight"), "{err}");

    let mut weights = random_weights(&cfg, 3);
    weights[1].1 = Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap();
    let w = Weights::new(weights.iter().cloned().collect(), DType::F32, &Device::Cpu).unwrap();
    let err = Llama::load(&w, &cfg).err().unwrap();
    assert!(matches!(err, super::ModelError::ShapeMismatch { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), hf_config_json(&cfg).replace("\"llama\"", "\"gpt2\"")).unwrap();
    let err = load_hf_dir(dir.path(), DType::F32, &Device::Cpu).err().unwrap();
    assert!(matches!(err, super::ModelError::UnsupportedArchitecture(ref a) if a == "gpt2"), "{err}");
}

#[test]
fn frozen_linear_is_bit_identical_to_matmul_and_gives_no_weight_gradient() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let x = Var::from_tensor(&uniform(&mut rng, &[2, 5, 32], -1.0, 1.0).to_dtype(DType::F32).unwrap()).unwrap();
    let w = Var::from_tensor(&uniform(&mut rng, &[48, 32], -0.5, 0.5).to_dtype(DType::F32).unwrap()).unwrap();
    let r = uniform(&mut rng, &[2, 5, 48], -1.0, 1.0).to_dtype(DType::F32).unwrap();

    let plain = x.as_tensor().reshape((10, 32)).unwrap().matmul(&w.as_tensor().t().unwrap()).unwrap().reshape((2, 5, 48)).unwrap();
    let plain_grads = (&plain * &r).unwrap().sum_all().unwrap().backward().unwrap();

    let frozen_layer = FrozenLinear::new(w.as_tensor().clone(), None).unwrap();
    let frozen = frozen_layer.forward(x.as_tensor()).unwrap();
    let frozen_grads = (&frozen * &r).unwrap().sum_all().unwrap().backward().unwrap();

    assert_eq!(plain.to_vec3::<f32>().unwrap(), frozen.to_vec3::<f32>().unwrap());
    let gx_plain = plain_grads.get(x.as_tensor()).unwrap().to_vec3::<f32>().unwrap();
    let gx_frozen = frozen_grads.get(x.as_tensor()).unwrap().to_vec3::<f32>().unwrap();
    assert_eq!(gx_plain, gx_frozen);
    assert!(plain_grads.get(w.as_tensor()).is_some());
    assert!(frozen_grads.get(w.as_tensor()).is_none());
    assert!(frozen_grads.get(frozen_layer.weight()).is_none());
}

#[test]
fn every_lora_tensor_gets_a_nonzero_gradient() {
    let cfg = tiny_config();
    let model = model_from(&cfg, &random_weights(&cfg, 5), DType::F32);
    let batch = TokenBatch::new(&sequences(), 8, DType::F32, &Device::Cpu).unwrap();
    let params = random_lora(&cfg, DType::F32, 6);

    let grads = model.per_example_nll(&batch, Adapters::Shared(&params)).unwrap().sum_all().unwrap().backward().unwrap();
    for t in params.tensors() {
        let g = grads.get(t.var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {}", t.name));
        assert!(max_abs(g) > 0.0, "zero gradient for {}", t.name);
    }

    // At PEFT's initialisation B = 0, so exactly dL/dA = 0 and only B learns in the first
    // step (the DP engine's "every tensor changed" check must expect noise-only A updates).
    let fresh = LoraParams::init(&cfg, params.config().clone(), &mut ChaCha20Rng::seed_from_u64(7), DType::F32, &Device::Cpu).unwrap();
    let grads = model.per_example_nll(&batch, Adapters::Shared(&fresh)).unwrap().sum_all().unwrap().backward().unwrap();
    for t in fresh.tensors() {
        let g = max_abs(grads.get(t.var.as_tensor()).unwrap());
        assert_eq!(g == 0.0, t.name.contains("lora_A"), "{}: max |grad| {g}", t.name);
    }

    let copies = params.per_example(3).unwrap();
    let grads = model.per_example_nll(&batch, Adapters::PerExample(&copies)).unwrap().sum_all().unwrap().backward().unwrap();
    for (t, g) in params.tensors().iter().zip(copies.gradients(&grads).unwrap()) {
        for i in 0..3 {
            assert!(max_abs(&g.get(i).unwrap()) > 0.0, "zero gradient for {} of example {i}", t.name);
        }
    }
}

#[test]
fn peft_initialisation_is_kaiming_uniform_and_zero() {
    let cfg = tiny_config();
    let lora = LoraConfig::new(8, 16.0, &["q_proj", "v", "down_proj"]).unwrap();
    let init = |seed| LoraParams::init(&cfg, lora.clone(), &mut ChaCha20Rng::seed_from_u64(seed), DType::F64, &Device::Cpu).unwrap();
    let (p, same, other) = (init(7), init(7), init(8));
    assert_eq!(p.tensors().len(), cfg.num_layers * 3 * 2);
    for ((t, s), o) in p.tensors().iter().zip(same.tensors()).zip(other.tensors()) {
        let v: Vec<f64> = t.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, s.var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap());
        if t.name.contains("lora_B") {
            assert!(v.iter().all(|&x| x == 0.0), "{}", t.name);
            continue;
        }
        assert_ne!(v, o.var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let fan_in = t.var.dims()[1] as f64;
        let bound = 1.0 / fan_in.sqrt();
        assert!(v.iter().all(|x| x.abs() < bound), "{}", t.name);
        // U(-b, b) has variance b²/3; with n ≥ 256 samples the estimate is within 25%.
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.25, "{}: variance {var}", t.name);
    }
}

/// Sum of the per-example losses, in f64, with the given adapters.
fn total_loss(model: &Llama, batch: &TokenBatch, params: &LoraParams) -> f64 {
    model.per_example_nll(batch, Adapters::Shared(params)).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn lora_gradients_match_central_finite_differences() {
    let cfg = tiny_config();
    let model = model_from(&cfg, &random_weights(&cfg, 9), DType::F64);
    let batch = TokenBatch::new(&sequences(), 8, DType::F64, &Device::Cpu).unwrap();
    let params = random_lora(&cfg, DType::F64, 10);
    let grads = model.per_example_nll(&batch, Adapters::Shared(&params)).unwrap().sum_all().unwrap().backward().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let h = 1e-5;
    for t in params.tensors() {
        let original = t.var.as_tensor().copy().unwrap();
        let shape = original.dims().to_vec();
        let n: usize = shape.iter().product();
        let autograd: Vec<f64> = grads.get(t.var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        // Four random elements per tensor keep the test fast; each tensor is checked.
        for _ in 0..4 {
            let idx = rng.gen_range(0..n);
            let perturbed = |delta: f64| {
                let mut v = base.clone();
                v[idx] += delta;
                t.var.set(&Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap()).unwrap();
                total_loss(&model, &batch, &params)
            };
            let fd = (perturbed(h) - perturbed(-h)) / (2.0 * h);
            num += (fd - autograd[idx]).powi(2);
            den += fd.powi(2);
        }
        t.var.set(&original).unwrap();
        let rel = (num / den).sqrt();
        assert!(den > 0.0 && rel < 1e-5, "{}: relative error {rel:e}", t.name);
    }
}

#[test]
fn per_example_gradients_in_one_backward_equal_the_one_at_a_time_loop() {
    for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let cfg = tiny_config();
        let model = model_from(&cfg, &random_weights(&cfg, 12), dtype);
        let seqs = sequences();
        let batch = TokenBatch::new(&seqs, 8, dtype, &Device::Cpu).unwrap();
        let params = random_lora(&cfg, dtype, 13);

        let copies = params.per_example(seqs.len()).unwrap();
        let losses = model.per_example_nll(&batch, Adapters::PerExample(&copies)).unwrap();
        let per_example = copies.gradients(&losses.sum_all().unwrap().backward().unwrap()).unwrap();

        for (i, seq) in seqs.iter().enumerate() {
            let single = TokenBatch::new(&[seq], 8, dtype, &Device::Cpu).unwrap();
            let loss = model.per_example_nll(&single, Adapters::Shared(&params)).unwrap();
            let diff = max_abs_diff(&loss.get(0).unwrap(), &losses.get(i).unwrap());
            assert!(diff <= tolerance, "{dtype:?}: loss of example {i} differs by {diff}");
            let grads = loss.sum_all().unwrap().backward().unwrap();
            for (t, g) in params.tensors().iter().zip(&per_example) {
                let alone = grads.get(t.var.as_tensor()).unwrap();
                let together = g.get(i).unwrap();
                let rel = max_abs_diff(alone, &together) / max_abs(alone);
                assert!(rel <= tolerance, "{dtype:?} {} example {i}: relative difference {rel:e}", t.name);
            }
        }
    }
}

#[test]
fn padding_does_not_change_a_sequence_loss() {
    let cfg = tiny_config();
    let model = model_from(&cfg, &random_weights(&cfg, 14), DType::F64);
    let seq = vec![5u32, 9, 2, 33, 7];
    let exact = TokenBatch::new(&[&seq], seq.len() - 1, DType::F64, &Device::Cpu).unwrap();
    let padded = TokenBatch::new(&[&seq, &vec![1u32], &vec![]], 12, DType::F64, &Device::Cpu).unwrap();
    let a = model.per_example_nll(&exact, Adapters::None).unwrap().to_vec1::<f64>().unwrap();
    let b = model.per_example_nll(&padded, Adapters::None).unwrap().to_vec1::<f64>().unwrap();
    assert!((a[0] - b[0]).abs() < 1e-12, "{a:?} {b:?}");
    assert_eq!(b[1], 0.0, "a one-token sequence predicts nothing");
    assert_eq!(b[2], 0.0, "nor does an empty one");
    assert_eq!(padded.token_counts(), &[4, 0, 0]);
    // A near-uniform random model: the mean NLL is close to ln(vocab).
    assert!((a[0] - (cfg.vocab_size as f64).ln()).abs() < 1.5, "{a:?}");
}

#[test]
fn adapter_export_follows_the_peft_convention_and_round_trips() {
    let cfg = tiny_config();
    let model = model_from(&cfg, &random_weights(&cfg, 15), DType::F32);
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let lora = LoraConfig::new(4, 8.0, &["v_proj", "q_proj", "gate_proj", "down_proj"]).unwrap();
    let params = LoraParams::init(&cfg, lora, &mut rng, DType::F32, &Device::Cpu).unwrap();
    for t in params.tensors().iter().filter(|t| t.name.contains("lora_B")) {
        t.var.set(&uniform(&mut rng, t.var.dims(), -0.2, 0.2).to_dtype(DType::F32).unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&params, "HuggingFaceTB/SmolLM2-135M-Instruct", dir.path()).unwrap();

    // adapter_config.json, read as plain JSON.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(ADAPTER_CONFIG)).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["bias"], "none");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    assert_eq!(json["lora_dropout"], 0.0);
    assert_eq!(json["fan_in_fan_out"], false);
    assert_eq!(json["inference_mode"], true);
    assert_eq!(json["use_dora"], false);
    assert_eq!(json["base_model_name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");
    let mut targets: Vec<&str> = json["target_modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, ["down_proj", "gate_proj", "q_proj", "v_proj"]);

    // adapter_model.safetensors: names and [r, in] / [out, r] shapes, from the PEFT
    // convention written out here rather than from the exporter's own tables.
    let bytes = std::fs::read(dir.path().join(ADAPTER_WEIGHTS)).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (h, i, q) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim());
    let mut expected = Vec::new();
    for l in 0..cfg.num_layers {
        for (module, din, dout) in [("self_attn.q_proj", h, q), ("self_attn.v_proj", h, cfg.kv_dim()), ("mlp.gate_proj", h, i), ("mlp.down_proj", i, h)] {
            let p = format!("base_model.model.model.layers.{l}.{module}");
            expected.push((format!("{p}.lora_A.weight"), vec![4, din]));
            expected.push((format!("{p}.lora_B.weight"), vec![dout, 4]));
        }
    }
    expected.sort();
    let mut found: Vec<(String, Vec<usize>)> = file.tensors().into_iter().map(|(n, v)| {
        assert_eq!(v.dtype(), safetensors::Dtype::F32);
        (n, v.shape().to_vec())
    }).collect();
    found.sort();
    assert_eq!(found, expected);

    // Re-import: same tensors, same logits.
    let back = load_adapter(dir.path(), &cfg, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(back.config(), params.config());
    for (a, b) in params.tensors().iter().zip(back.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(max_abs_diff(a.var.as_tensor(), b.var.as_tensor()), 0.0);
    }
    let ids = Tensor::new(&[[3u32, 1, 4, 1, 5, 9, 2, 6]], &Device::Cpu).unwrap();
    let la = model.logits(&ids, Adapters::Shared(&params)).unwrap();
    let lb = model.logits(&ids, Adapters::Shared(&back)).unwrap();
    assert_eq!(max_abs_diff(&la, &lb), 0.0);
    let base = model.logits(&ids, Adapters::None).unwrap();
    assert!(max_abs_diff(&la, &base) > 1e-3, "the adapter must change the model");

    // A merged checkpoint reproduces base + adapter.
    let merged_dir = dir.path().join("merged");
    save_merged(&model, &params, None, &merged_dir).unwrap();
    let merged = load_hf_dir(&merged_dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(merged.config, cfg);
    let lm = Llama::load(&merged.weights, &merged.config).unwrap().logits(&ids, Adapters::None).unwrap();
    let diff = max_abs_diff(&la, &lm);
    assert!(diff < 1e-5, "merged logits differ by {diff}");

    // PEFT features sealtune does not implement are refused, naming the field.
    let cfg_path = dir.path().join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace("\"use_rslora\": false", "\"use_rslora\": true");
    std::fs::write(&cfg_path, text).unwrap();
    let err = load_adapter(dir.path(), &cfg, DType::F32, &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("use_rslora"), "{err}");
}

#[test]
fn smollm_gguf_tokenizer_does_not_add_a_prefix_space() {
    let cfg = tiny_config();
    let weights = random_weights(&cfg, 17);
    let tokens = ["T", "h", "e", "Ġ", "c", "a", "t", "1", "2", "Th", "The", "Ġc", "Ġca", "Ġcat"];
    let merges = ["T h", "Th e", "Ġ c", "Ġc a", "Ġca t"];
    let strings = |v: &[&str]| gguf_file::Value::Array(v.iter().map(|s| gguf_file::Value::String(s.to_string())).collect());
    let meta = [
        ("tokenizer.ggml.model", gguf_file::Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", gguf_file::Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok.gguf");
    write_gguf(&path, &cfg, &weights, GgmlDType::F32, &meta);
    let tok = load_gguf(&path, DType::F32, &Device::Cpu).unwrap().tokenizer.unwrap();
    let ids = super::tokenizer::encode(&tok, "The cat 12").unwrap();
    let id = |s: &str| tokens.iter().position(|t| *t == s).unwrap() as u32;
    assert_eq!(ids, [id("The"), id("Ġcat"), id("Ġ"), id("1"), id("2")]);
    assert_eq!(super::tokenizer::decode(&tok, &ids).unwrap(), "The cat 12");
}

#[test]
fn perplexity_windows_cover_every_token_once() {
    let cfg = tiny_config();
    let model = model_from(&cfg, &random_weights(&cfg, 18), DType::F64);
    let seqs = sequences();
    let whole = super::generate::perplexity(&model, Adapters::None, &seqs, 64, 2).unwrap();
    assert_eq!(whole.tokens, seqs.iter().map(|s| s.len() - 1).sum::<usize>());
    let batch = TokenBatch::new(&seqs, 8, DType::F64, &Device::Cpu).unwrap();
    let direct = model.token_nll(&batch, Adapters::None).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    assert!((whole.total_nll - direct).abs() < 1e-9);
    let windowed = super::generate::perplexity(&model, Adapters::None, &seqs, 3, 2).unwrap();
    assert_eq!(windowed.tokens, whole.tokens);
}

/// The real demo model, when `scripts/fetch-model.sh` has put it in `models/`:
/// `cargo test -p sealtune-enclave -- --ignored smollm2`.
#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf from scripts/fetch-model.sh"]
fn smollm2_gguf_tokenises_and_answers_paris() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let ckpt = load_gguf(&path, DType::F32, &Device::Cpu).unwrap();
    assert!(ckpt.config.tie_word_embeddings);
    assert_eq!((ckpt.config.num_layers, ckpt.config.hidden_size, ckpt.config.num_kv_heads), (30, 576, 3));
    let tok = ckpt.tokenizer.as_ref().unwrap();
    let ids = super::tokenizer::encode(tok, "The capital of France is").unwrap();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    let model = Llama::load(&ckpt.weights, &ckpt.config).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let probs = candle_nn::ops::softmax(&model.last_logits(&input, Adapters::None).unwrap(), 1).unwrap().squeeze(0).unwrap();
    let paris = super::tokenizer::encode(tok, " Paris").unwrap();
    assert_eq!(paris.len(), 1);
    let p = probs.get(paris[0] as usize).unwrap().to_scalar::<f32>().unwrap();
    // Measured with an independent implementation: 0.773. A wrong Q/K row order still
    // answers " Paris", but with a visibly different probability.
    assert!((p - 0.773).abs() < 0.01, "P(' Paris') = {p}");
    let out = super::generate::generate(&model, Adapters::None, &ids, 8, 0.0, ckpt.eos_token_id, &mut ChaCha20Rng::seed_from_u64(0)).unwrap();
    assert!(super::tokenizer::decode(tok, &out).unwrap().starts_with(" Paris"));

    // Export at the real shapes: a small random adapter on q and v, its PEFT directory
    // and the merged checkpoint (tied embeddings, tokenizer.json) give the same logits.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let params = LoraParams::init(&ckpt.config, LoraConfig::new(8, 16.0, &["q", "v"]).unwrap(), &mut rng, DType::F32, &Device::Cpu).unwrap();
    for t in params.tensors().iter().filter(|t| t.name.contains("lora_B")) {
        t.var.set(&uniform(&mut rng, t.var.dims(), -0.02, 0.02).to_dtype(DType::F32).unwrap()).unwrap();
    }
    let dir = std::env::temp_dir().join("sealtune-smollm2-export");
    save_adapter(&params, "HuggingFaceTB/SmolLM2-135M-Instruct", &dir.join("adapter")).unwrap();
    save_merged(&model, &params, Some(tok), &dir.join("merged")).unwrap();
    let adapter = load_adapter(&dir.join("adapter"), &ckpt.config, DType::F32, &Device::Cpu).unwrap();
    let merged = load_hf_dir(&dir.join("merged"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(super::tokenizer::encode(merged.tokenizer.as_ref().unwrap(), "The capital of France is").unwrap(), ids);
    let with_adapter = model.logits(&input, Adapters::Shared(&adapter)).unwrap();
    let merged_logits = Llama::load(&merged.weights, &merged.config).unwrap().logits(&input, Adapters::None).unwrap();
    let diff = max_abs_diff(&with_adapter, &merged_logits);
    assert!(diff < 1e-3, "merged logits differ by {diff}");
    assert!(max_abs_diff(&with_adapter, &model.logits(&input, Adapters::None).unwrap()) > 1e-3);
}

/// `Σ y ⊙ c` and its gradient with respect to `x`, for `y = op(x)`.
fn weighted_sum_and_grad(x: &Tensor, c: &Tensor, op: impl Fn(&Tensor) -> Tensor) -> (f64, Tensor) {
    let var = Var::from_tensor(x).unwrap();
    let loss = (op(var.as_tensor()) * c).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    (loss.to_scalar::<f64>().unwrap(), grads.get(var.as_tensor()).unwrap().clone())
}

/// Central finite differences of `Σ op(x) ⊙ c` at a few coordinates of `x`, checked
/// against `grad` (relative error below 1e-6, f64).
fn check_finite_differences(x: &Tensor, c: &Tensor, grad: &Tensor, op: impl Fn(&Tensor) -> Tensor) {
    let shape = x.dims().to_vec();
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let grad: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let f = |v: &[f64]| -> f64 {
        let t = Tensor::from_slice(v, shape.as_slice(), &Device::Cpu).unwrap();
        (op(&t) * c).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    for i in (0..base.len()).step_by(base.len() / 13 + 1) {
        let h = 1e-5;
        let (mut plus, mut minus) = (base.clone(), base.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (f(&plus) - f(&minus)) / (2.0 * h);
        let err = (numeric - grad[i]).abs() / numeric.abs().max(1e-3);
        assert!(err < 1e-6, "coordinate {i}: autograd {} vs finite differences {numeric}", grad[i]);
    }
}

/// A fused op against the primitive-op composition it replaces, on `Σ op(x) ⊙ c`: the
/// losses differ by less than `loss_tolerance(composed loss)`, the gradients by less than
/// 1e-12, and the fused gradient matches central finite differences.
fn assert_fused_matches(
    x: &Tensor,
    c: &Tensor,
    composed: impl Fn(&Tensor) -> Tensor,
    fused: impl Fn(&Tensor) -> Tensor + Copy,
    loss_tolerance: impl Fn(f64) -> f64,
) {
    let (loss_c, grad_c) = weighted_sum_and_grad(x, c, composed);
    let (loss_f, grad_f) = weighted_sum_and_grad(x, c, fused);
    assert!((loss_c - loss_f).abs() < loss_tolerance(loss_c), "{loss_c} vs {loss_f}");
    assert!(max_abs_diff(&grad_c, &grad_f) < 1e-12);
    check_finite_differences(x, c, &grad_f, fused);
}

#[test]
fn fused_rms_norm_matches_its_composition_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let x = uniform(&mut rng, &[3, 5, 16], -2.0, 2.0);
    let w = uniform(&mut rng, &[16], 0.5, 1.5);
    let c = uniform(&mut rng, &[3, 5, 16], -1.0, 1.0);
    let eps = 1e-5;
    let composed = |x: &Tensor| {
        let ms = x.sqr().unwrap().mean_keepdim(candle_core::D::Minus1).unwrap();
        x.broadcast_div(&(ms + eps).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap()
    };
    let fused = |x: &Tensor| super::fused::rms_norm(x, &w, eps).unwrap();
    assert_fused_matches(&x, &c, composed, fused, |_| 1e-12);
}

#[test]
fn fused_head_nll_matches_log_softmax_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    // More tokens than one chunk, and a last chunk that is not full.
    let n = super::fused::NLL_CHUNK * 2 + 17;
    let (vocab, d) = (40, 8);
    let h = uniform(&mut rng, &[n, d], -1.0, 1.0);
    let w = uniform(&mut rng, &[vocab, d], -1.0, 1.0);
    let labels: Vec<u32> = (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let c = uniform(&mut rng, &[n], 0.0, 1.0);
    let composed = |h: &Tensor| {
        let logp = candle_nn::ops::log_softmax(&h.matmul(&w.t().unwrap()).unwrap(), candle_core::D::Minus1).unwrap();
        logp.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap().neg().unwrap()
    };
    let fused = |h: &Tensor| super::fused::frozen_head_nll(h, &w, &labels).unwrap();
    assert_fused_matches(&h, &c, composed, fused, |loss| 1e-9 * loss.abs());
}

#[test]
fn fused_rope_matches_its_composition_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let (t, d) = (6, 8);
    let x = uniform(&mut rng, &[2, 3, t, d], -1.0, 1.0);
    let angles = uniform(&mut rng, &[t, d / 2], 0.0, 6.0);
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let c = uniform(&mut rng, &[2, 3, t, d], -1.0, 1.0);
    let composed = |x: &Tensor| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap();
    let fused = |x: &Tensor| super::fused::rope(x, &cos, &sin).unwrap();
    assert_fused_matches(&x, &c, composed, fused, |_| 1e-12);
}

#[test]
fn fused_swiglu_matches_its_composition_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    // Gate and up side by side, so one input carries the gradient of both.
    let x = uniform(&mut rng, &[2, 5, 2 * 12], -4.0, 4.0);
    let c = uniform(&mut rng, &[2, 5, 12], -1.0, 1.0);
    let halves = |x: &Tensor| (x.narrow(2, 0, 12).unwrap(), x.narrow(2, 12, 12).unwrap());
    let composed = |x: &Tensor| {
        let (g, u) = halves(x);
        (candle_nn::ops::silu(&g).unwrap() * u).unwrap()
    };
    let fused = |x: &Tensor| {
        let (g, u) = halves(x);
        super::fused::swiglu(&g, &u).unwrap()
    };
    assert_fused_matches(&x, &c, composed, fused, |_| 1e-12);
}

#[test]
fn fused_causal_attention_matches_its_composition_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(26);
    // Two query heads per key/value head, stacked as rows; q, k and v side by side
    // along the rows, so one input carries the gradient of all three.
    let (b, kv, group, t, d) = (2, 2, 2, 5, 4);
    let rows = group * t;
    let x = uniform(&mut rng, &[b, kv, rows + 2 * t, d], -1.0, 1.0);
    let c = uniform(&mut rng, &[b, kv, rows, d], -1.0, 1.0);
    let mask: Vec<f64> = (0..rows).flat_map(|r| (0..t).map(move |j| if j <= r % t { 0.0 } else { f64::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (rows, t), &Device::Cpu).unwrap();
    let scale = 0.5;
    let qkv = |x: &Tensor| (x.narrow(2, 0, rows).unwrap(), x.narrow(2, rows, t).unwrap(), x.narrow(2, rows + t, t).unwrap());
    let composed = |x: &Tensor| {
        let (q, k, v) = qkv(x);
        let scores = ((q * scale).unwrap().matmul(&k.t().unwrap()).unwrap()).broadcast_add(&mask).unwrap();
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1).unwrap().matmul(&v).unwrap()
    };
    let fused = |x: &Tensor| {
        let (q, k, v) = qkv(x);
        super::fused::causal_attention(&q, &k, &v, scale).unwrap()
    };
    assert_fused_matches(&x, &c, composed, fused, |_| 1e-12);
}

#[test]
fn fused_per_example_lora_matches_its_composition_and_finite_differences() {
    let mut rng = ChaCha20Rng::seed_from_u64(27);
    let (b, t, d_in, d_out, r) = (3, 4, 6, 5, 2);
    let linear = FrozenLinear::new(uniform(&mut rng, &[d_out, d_in], -1.0, 1.0), Some(uniform(&mut rng, &[d_out], -1.0, 1.0))).unwrap();
    // x, the A copies and the B copies flattened into one input, so one gradient covers all three.
    let sizes = [b * t * d_in, b * r * d_in, b * d_out * r];
    let all = uniform(&mut rng, &[sizes.iter().sum()], -1.0, 1.0);
    let c = uniform(&mut rng, &[b, t, d_out], -1.0, 1.0);
    let scale = 1.5;
    let parts = |all: &Tensor| {
        let x = all.narrow(0, 0, sizes[0]).unwrap().reshape((b, t, d_in)).unwrap();
        let a = all.narrow(0, sizes[0], sizes[1]).unwrap().reshape((b, r, d_in)).unwrap();
        let bb = all.narrow(0, sizes[0] + sizes[1], sizes[2]).unwrap().reshape((b, d_out, r)).unwrap();
        (x, a, bb)
    };
    let composed = |all: &Tensor| {
        let (x, a, bb) = parts(all);
        let h = (x.matmul(&a.t().unwrap()).unwrap() * scale).unwrap();
        (linear.forward(&x).unwrap() + h.matmul(&bb.t().unwrap()).unwrap()).unwrap()
    };
    let fused = |all: &Tensor| {
        let (x, a, bb) = parts(all);
        super::fused::per_example_lora(&x, &linear, &a, &bb, scale).unwrap()
    };
    assert_fused_matches(&all, &c, composed, fused, |_| 1e-12);
}
