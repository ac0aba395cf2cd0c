//! Model configuration: the serde view of a Hugging Face `config.json`, resolved and
//! checked into the [`Config`] the decoder uses. GGUF metadata resolves into the same.

use super::{ModelError, Result};
use serde::{Deserialize, Serialize};

/// The Llama-family variants this decoder implements. They differ only in which linear
/// layers carry biases and in how `config.json` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (also SmolLM).
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM`: biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    fn from_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "llama" => Ok(Architecture::Llama),
            "mistral" => Ok(Architecture::Mistral),
            "qwen2" => Ok(Architecture::Qwen2),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }

    /// The `architectures` entry of `config.json`.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// The fields of a Hugging Face `config.json` that this decoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest sequence the model was trained for.
    #[serde(default = "default_max_position")]
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for biases on all four attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama's switch for biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation; only `silu` is implemented.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// RoPE scaling (Llama 3.1 and others); not implemented, so it must be absent or null.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Mistral's sliding attention window; sequences are limited to it.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2's switch for the sliding window.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// End-of-sequence token: one id or a list (the first is used).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_position() -> usize {
    2048
}

fn default_act() -> String {
    "silu".to_string()
}

/// A checked model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The variant.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads; divides `num_heads`.
    pub num_kv_heads: usize,
    /// Per-head width (even, for RoPE).
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Longest sequence accepted (the trained context, or Mistral's window if smaller).
    pub max_seq_len: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
}

impl LlamaConfig {
    /// The end-of-sequence token id, if the configuration names one.
    pub fn eos_token(&self) -> Option<u32> {
        let v = self.eos_token_id.as_ref()?;
        let first = v.as_array().map_or(Some(v), |a| a.first())?;
        first.as_u64().and_then(|id| u32::try_from(id).ok())
    }

    /// Checks the fields and resolves defaults.
    pub fn resolve(&self) -> Result<Config> {
        let architecture = Architecture::from_model_type(&self.model_type)?;
        if self.hidden_act != "silu" {
            return Err(ModelError::config("hidden_act", format!("`{}` is not implemented, only `silu`", self.hidden_act)));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ModelError::config("rope_scaling", "RoPE scaling is not implemented"));
        }
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        let window = match architecture {
            Architecture::Mistral => self.sliding_window,
            Architecture::Qwen2 if self.use_sliding_window => self.sliding_window,
            _ => None,
        };
        let qwen2 = architecture == Architecture::Qwen2;
        let config = Config {
            architecture,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_seq_len: window.map_or(self.max_position_embeddings, |w| w.min(self.max_position_embeddings)),
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias || qwen2,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
        };
        config.check()?;
        Ok(config)
    }
}

/// What [`Config::to_hf_json`] writes: a `config.json` that Transformers and
/// [`LlamaConfig`] both read back.
#[derive(Serialize)]
struct HfConfigOut {
    architectures: [&'static str; 1],
    model_type: &'static str,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    vocab_size: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    max_position_embeddings: usize,
    tie_word_embeddings: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    attention_bias: bool,
    mlp_bias: bool,
    hidden_act: &'static str,
    torch_dtype: &'static str,
}

impl Config {
    /// Checks that the sizes are positive and consistent.
    pub fn check(&self) -> Result<()> {
        for (field, value) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_seq_len),
        ] {
            if value == 0 {
                return Err(ModelError::config(field, "must be positive"));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.num_kv_heads, self.num_heads),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(ModelError::config("head_dim", format!("{} is odd; RoPE rotates pairs", self.head_dim)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(ModelError::config("rms_norm_eps", "must be a positive number"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ModelError::config("rope_theta", "must be a positive number"));
        }
        // Qwen2 and Mistral configs cannot express these combinations.
        if self.architecture != Architecture::Llama && (self.o_bias || self.mlp_bias) {
            return Err(ModelError::config("attention_bias", "only llama checkpoints may bias o_proj or the MLP"));
        }
        Ok(())
    }

    /// Width of the query projection's output.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key and value projections' outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// This configuration as a Hugging Face `config.json`.
    pub fn to_hf_json(&self) -> Result<String> {
        let out = HfConfigOut {
            architectures: [self.architecture.class_name()],
            model_type: self.architecture.model_type(),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_layers,
            num_attention_heads: self.num_heads,
            num_key_value_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_seq_len,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.architecture == Architecture::Llama && self.qkv_bias,
            mlp_bias: self.mlp_bias,
            hidden_act: "silu",
            torch_dtype: "float32",
        };
        serde_json::to_string_pretty(&out).map_err(|e| ModelError::config("config.json", e.to_string()))
    }
}
