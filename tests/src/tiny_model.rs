//! A tiny random model of the SmolLM2 (llama) architecture as a GGUF file,
//! with a byte-level GPT-2 tokenizer in its metadata: what the service
//! fetches from the store and trains in tests.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const HIDDEN: usize = 32;
const INTERMEDIATE: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;

/// GPT-2's byte-to-character table: printable bytes stand for themselves,
/// the rest map to code points from 256 up.
fn byte_tokens() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).expect("a valid code point").to_string()
        })
        .collect()
}

fn random(rng: &mut ChaCha20Rng, shape: &[usize], scale: f32) -> QTensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| ((rng.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale).collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).expect("a tensor");
    QTensor::quantize(&t, GgmlDType::F32).expect("f32 quantises")
}

fn ones(n: usize) -> QTensor {
    QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).expect("a tensor"), GgmlDType::F32)
        .expect("f32 quantises")
}

/// The bytes of a tiny random llama GGUF (2 layers, hidden 32, 257 tokens),
/// the same for the same `seed`.
pub fn tiny_gguf(seed: u64) -> Vec<u8> {
    let mut tokens = byte_tokens();
    tokens.push("<|endoftext|>".into());
    let vocab = tokens.len();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut tensors = vec![
        ("token_embd.weight".to_string(), random(&mut rng, &[vocab, HIDDEN], 0.5)),
        ("output_norm.weight".to_string(), ones(HIDDEN)),
        ("output.weight".to_string(), random(&mut rng, &[vocab, HIDDEN], 0.2)),
    ];
    let kv = KV_HEADS * HEAD_DIM;
    for l in 0..LAYERS {
        let mut add = |name: &str, t: QTensor| tensors.push((format!("blk.{l}.{name}"), t));
        add("attn_norm.weight", ones(HIDDEN));
        add("ffn_norm.weight", ones(HIDDEN));
        add("attn_q.weight", random(&mut rng, &[HIDDEN, HIDDEN], 0.2));
        add("attn_k.weight", random(&mut rng, &[kv, HIDDEN], 0.2));
        add("attn_v.weight", random(&mut rng, &[kv, HIDDEN], 0.2));
        add("attn_output.weight", random(&mut rng, &[HIDDEN, HIDDEN], 0.2));
        add("ffn_gate.weight", random(&mut rng, &[INTERMEDIATE, HIDDEN], 0.2));
        add("ffn_up.weight", random(&mut rng, &[INTERMEDIATE, HIDDEN], 0.2));
        add("ffn_down.weight", random(&mut rng, &[HIDDEN, INTERMEDIATE], 0.2));
    }
    let u = |v: usize| gguf_file::Value::U32(v as u32);
    let strings = |v: Vec<String>| gguf_file::Value::Array(v.into_iter().map(gguf_file::Value::String).collect());
    let meta = vec![
        ("general.architecture", gguf_file::Value::String("llama".into())),
        ("llama.embedding_length", u(HIDDEN)),
        ("llama.feed_forward_length", u(INTERMEDIATE)),
        ("llama.block_count", u(LAYERS)),
        ("llama.attention.head_count", u(HEADS)),
        ("llama.attention.head_count_kv", u(KV_HEADS)),
        ("llama.attention.layer_norm_rms_epsilon", gguf_file::Value::F32(1e-5)),
        ("llama.rope.freq_base", gguf_file::Value::F32(10_000.0)),
        ("llama.context_length", u(256)),
        ("tokenizer.ggml.model", gguf_file::Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(tokens)),
        ("tokenizer.ggml.merges", strings(Vec::new())),
        ("tokenizer.ggml.eos_token_id", u(vocab - 1)),
    ];
    let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &meta_refs, &tensor_refs).expect("writing GGUF to memory");
    bytes.into_inner()
}
