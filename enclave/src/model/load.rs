//! Loading base checkpoints: a Hugging Face directory (`config.json`, one or more
//! `*.safetensors` files, `tokenizer.json`) or a GGUF file of the llama architecture.
//!
//! Both are brought to the same in-memory form: tensors under their Hugging Face names in
//! PyTorch's `[out, in]` layout, in one dtype on one device. GGUF's quantised tensors are
//! dequantised and its permuted Q/K rows restored, so the same checkpoint gives the same
//! logits from either source.

use super::config::{Architecture, Config, LlamaConfig};
use super::tokenizer;
use super::{ModelError, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tokenizers::Tokenizer;

/// Named tensors of a checkpoint, under Hugging Face names.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Converts every tensor to `dtype` on `device`.
    pub fn new(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_dtype(dtype)?.to_device(device)?)))
            .collect::<Result<_>>()?;
        Ok(Weights { tensors })
    }

    /// The tensor `name`, which must have shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_opt(name, shape)?.ok_or_else(|| ModelError::MissingTensor { name: name.to_string() })
    }

    /// The tensor `name` if present; if present it must have shape `shape`.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        match self.tensors.get(name) {
            None => Ok(None),
            Some(t) if t.dims() == shape => Ok(Some(t.clone())),
            Some(t) => Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            }),
        }
    }
}

/// A loaded base model: configuration, weights and (when the source has one) tokenizer.
#[derive(Debug)]
pub struct Checkpoint {
    /// The checked configuration.
    pub config: Config,
    /// The weights, under Hugging Face names.
    pub weights: Weights,
    /// The tokenizer, if the checkpoint carries one.
    pub tokenizer: Option<Tokenizer>,
    /// The end-of-sequence token, if the checkpoint names one.
    pub eos_token_id: Option<u32>,
}

/// Loads a directory as a Hugging Face checkpoint and any other path as a GGUF file.
pub fn load_checkpoint(path: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    if path.is_dir() {
        load_hf_dir(path, dtype, device)
    } else {
        load_gguf(path, dtype, device)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ModelError::io(path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// Loads `config.json`, the safetensors (sharded through `model.safetensors.index.json`,
/// or every `*.safetensors` file) and `tokenizer.json` if present.
pub fn load_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    let hf_config = read_json::<LlamaConfig>(&dir.join("config.json"))?;
    let config = hf_config.resolve()?;
    let index_path = dir.join("model.safetensors.index.json");
    let index = if index_path.exists() { Some(read_json::<ShardIndex>(&index_path)?) } else { None };
    let files: BTreeSet<String> = match &index {
        Some(index) => index.weight_map.values().cloned().collect(),
        None => {
            let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
            let mut files = BTreeSet::new();
            for entry in entries {
                let name = entry.map_err(|e| ModelError::io(dir, e))?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".safetensors") {
                    files.insert(name);
                }
            }
            files
        }
    };
    if files.is_empty() {
        return Err(ModelError::MissingTensor { name: format!("{}/*.safetensors", dir.display()) });
    }
    let mut tensors = HashMap::new();
    for file in &files {
        // Read on the CPU and convert one shard at a time, so that at most one shard in
        // the file's dtype is held besides the converted weights.
        let shard = candle_core::safetensors::load_buffer(&read(&dir.join(file))?, &Device::Cpu)?;
        for (name, t) in shard {
            tensors.insert(name, t.to_dtype(dtype)?.to_device(device)?);
        }
    }
    if let Some(index) = &index {
        if let Some(name) = index.weight_map.keys().find(|n| !tensors.contains_key(*n)) {
            return Err(ModelError::MissingTensor { name: name.clone() });
        }
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() { Some(tokenizer::from_json_file(&tokenizer_path)?) } else { None };
    Ok(Checkpoint { config, weights: Weights { tensors }, tokenizer, eos_token_id: hf_config.eos_token() })
}

fn meta<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    ct.metadata.get(key)
}

fn meta_usize(ct: &gguf_file::Content, key: &str) -> Result<Option<usize>> {
    use gguf_file::Value as V;
    let v = match meta(ct, key) {
        None => return Ok(None),
        Some(V::U8(v)) => u64::from(*v),
        Some(V::U16(v)) => u64::from(*v),
        Some(V::U32(v)) => u64::from(*v),
        Some(V::U64(v)) => *v,
        Some(V::I32(v)) if *v >= 0 => *v as u64,
        Some(V::I64(v)) if *v >= 0 => *v as u64,
        Some(other) => return Err(ModelError::config(key, format!("expected a non-negative integer, found {other:?}"))),
    };
    usize::try_from(v).map(Some).map_err(|_| ModelError::config(key, format!("{v} does not fit in memory")))
}

fn require_usize(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    meta_usize(ct, key)?.ok_or_else(|| ModelError::config(key, "missing from the GGUF metadata"))
}

fn meta_f64(ct: &gguf_file::Content, key: &str) -> Result<Option<f64>> {
    match meta(ct, key) {
        None => Ok(None),
        // GGUF stores these as f32; going through the shortest decimal form recovers the
        // value `config.json` wrote (1e-5, not 9.99999974e-6), so both sources agree.
        Some(gguf_file::Value::F32(v)) => Ok(format!("{v}").parse().ok()),
        Some(gguf_file::Value::F64(v)) => Ok(Some(*v)),
        Some(other) => Err(ModelError::config(key, format!("expected a float, found {other:?}"))),
    }
}

/// The Hugging Face name of a llama-architecture GGUF tensor, `None` for names this
/// decoder does not use.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let module = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// Undoes llama.cpp's permutation of Q/K rows: GGUF interleaves the two rotary halves of
/// each head (`[h, half, 2]`), Hugging Face stores them split (`[h, 2, half]`).
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let mut shape = vec![heads, half, 2];
    shape.extend_from_slice(&dims[1..]);
    Ok(t.reshape(shape)?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// Loads a GGUF file of the llama architecture, dequantising every tensor.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    read_gguf(&mut std::io::BufReader::new(file), dtype, device)
}

/// Reads a GGUF model of the llama architecture from `file` (a file, or bytes in
/// memory such as a base model fetched from the store), dequantising every tensor.
pub fn read_gguf<R: std::io::Read + std::io::Seek>(file: &mut R, dtype: DType, device: &Device) -> Result<Checkpoint> {
    let ct = gguf_file::Content::read(file)?;
    let arch = match meta(&ct, "general.architecture") {
        Some(gguf_file::Value::String(s)) => s.clone(),
        _ => return Err(ModelError::config("general.architecture", "missing or not a string")),
    };
    if arch != "llama" {
        return Err(ModelError::UnsupportedArchitecture(arch));
    }
    if ct.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(ModelError::config("rope_freqs.weight", "RoPE scaling is not implemented"));
    }
    if let Some(gguf_file::Value::String(kind)) = meta(&ct, "llama.rope.scaling.type") {
        if kind != "none" {
            return Err(ModelError::config("llama.rope.scaling.type", format!("`{kind}` is not implemented")));
        }
    }
    let hidden_size = require_usize(&ct, "llama.embedding_length")?;
    let num_heads = require_usize(&ct, "llama.attention.head_count")?;
    let num_kv_heads = meta_usize(&ct, "llama.attention.head_count_kv")?.unwrap_or(num_heads);
    let vocab_size = match meta_usize(&ct, "llama.vocab_size")? {
        Some(v) => v,
        None => match ct.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => return Err(ModelError::MissingTensor { name: "token_embd.weight".into() }),
        },
    };
    let has = |name: &str| ct.tensor_infos.contains_key(name);
    let config = Config {
        architecture: Architecture::Llama,
        hidden_size,
        intermediate_size: require_usize(&ct, "llama.feed_forward_length")?,
        num_layers: require_usize(&ct, "llama.block_count")?,
        num_heads,
        num_kv_heads,
        head_dim: meta_usize(&ct, "llama.attention.key_length")?.unwrap_or(hidden_size / num_heads.max(1)),
        vocab_size,
        rms_norm_eps: meta_f64(&ct, "llama.attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| ModelError::config("llama.attention.layer_norm_rms_epsilon", "missing from the GGUF metadata"))?,
        rope_theta: meta_f64(&ct, "llama.rope.freq_base")?.unwrap_or(10_000.0),
        max_seq_len: meta_usize(&ct, "llama.context_length")?.unwrap_or(2048),
        tie_word_embeddings: !has("output.weight"),
        qkv_bias: has("blk.0.attn_q.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
    };
    config.check()?;
    if config.qkv_bias != config.o_bias {
        return Err(ModelError::config("blk.0.attn_output.bias", "llama biases all four attention projections or none"));
    }
    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let t = ct.tensor(file, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        let t = if hf.contains(".self_attn.q_proj.") {
            unpermute(&t, config.num_heads)?
        } else if hf.contains(".self_attn.k_proj.") {
            unpermute(&t, config.num_kv_heads)?
        } else {
            t
        };
        tensors.insert(hf, t.to_dtype(dtype)?.to_device(device)?);
    }
    let tokenizer = tokenizer::from_gguf(&ct)?;
    let eos_token_id = meta_usize(&ct, "tokenizer.ggml.eos_token_id")?.and_then(|id| u32::try_from(id).ok());
    Ok(Checkpoint { config, weights: Weights { tensors }, tokenizer, eos_token_id })
}
