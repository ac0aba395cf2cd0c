//! The Llama-family decoder, built only from candle ops that have a backward pass.
//!
//! candle-nn's fused `softmax_last_dim`, `rms_norm` and `rope` kernels have no backward
//! pass: their outputs are graph leaves, so `backward()` succeeds but leaves everything
//! before them without a gradient. This decoder takes RMSNorm, RoPE, the attention
//! core, SwiGLU, per-example LoRA layers and the LM head with cross-entropy from
//! [`super::fused`], which run those kernels forward and carry hand-written backward
//! passes.
//!
//! Examples never interact (no batch statistics; attention stays within a sequence),
//! which the per-example gradients of [`crate::model::lora`] rely on. Sequences are padded
//! on the right: with causal attention, padding never influences real tokens.

use super::config::Config;
use super::frozen::FrozenLinear;
use super::load::Weights;
use super::lora::{Adapters, LoraParams, Target};
use super::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use super::fused::{causal_attention, frozen_head_nll, rms_norm, rope, swiglu};

/// A batch of token sequences for next-token prediction, padded on the right to a fixed
/// length, with a mask over the predicted positions.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    input_ids: Tensor,
    labels: Tensor,
    mask: Tensor,
    inv_counts: Tensor,
    token_counts: Vec<usize>,
}

impl TokenBatch {
    /// Sequence `s` predicts `s[1..]` from `s[..n-1]`, truncated to `seq_len` predictions
    /// and padded to exactly `seq_len` positions, so every batch of the same size has the
    /// same shape. A sequence of fewer than two tokens predicts nothing: its loss is 0 and
    /// so is its gradient (usable as a padding example).
    pub fn new<S: AsRef<[u32]>>(sequences: &[S], seq_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        if seq_len == 0 {
            return Err(ModelError::BadInput { field: "seq_len", reason: "must be positive".into() });
        }
        let b = sequences.len();
        let mut input = vec![0u32; b * seq_len];
        let mut labels = vec![0u32; b * seq_len];
        let mut mask = vec![0f32; b * seq_len];
        let mut token_counts = Vec::with_capacity(b);
        let mut inv_counts = Vec::with_capacity(b);
        for (i, s) in sequences.iter().enumerate() {
            let s = s.as_ref();
            let n = s.len().saturating_sub(1).min(seq_len);
            let row = i * seq_len;
            if n > 0 {
                input[row..row + n].copy_from_slice(&s[..n]);
                labels[row..row + n].copy_from_slice(&s[1..=n]);
                mask[row..row + n].fill(1.0);
            }
            token_counts.push(n);
            inv_counts.push(if n == 0 { 0.0 } else { 1.0 / n as f64 });
        }
        Ok(TokenBatch {
            input_ids: Tensor::from_vec(input, (b, seq_len), device)?,
            labels: Tensor::from_vec(labels, (b, seq_len), device)?,
            mask: Tensor::from_vec(mask, (b, seq_len), device)?.to_dtype(dtype)?,
            inv_counts: Tensor::from_vec(inv_counts, b, device)?.to_dtype(dtype)?,
            token_counts,
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.token_counts.len()
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.token_counts.is_empty()
    }

    /// Predicted (unmasked) positions per sequence.
    pub fn token_counts(&self) -> &[usize] {
        &self.token_counts
    }

    /// The inputs, `[batch, seq_len]` u32.
    pub fn input_ids(&self) -> &Tensor {
        &self.input_ids
    }
}

struct Block {
    input_norm: Tensor,
    post_norm: Tensor,
    /// Indexed by [`Target::index`].
    proj: Vec<FrozenLinear>,
}

/// A Llama-family causal language model with frozen weights.
pub struct Llama {
    config: Config,
    embed: Tensor,
    layers: Vec<Block>,
    norm: Tensor,
    lm_head: FrozenLinear,
}

impl Llama {
    /// Builds the decoder from weights under Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, ...).
    pub fn load(w: &Weights, cfg: &Config) -> Result<Self> {
        cfg.check()?;
        let h = cfg.hidden_size;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let proj = Target::ALL
                .iter()
                .map(|&t| {
                    let (in_dim, out_dim) = t.dims(cfg);
                    let has_bias = match t {
                        Target::Q | Target::K | Target::V => cfg.qkv_bias,
                        Target::O => cfg.o_bias,
                        Target::Gate | Target::Up | Target::Down => cfg.mlp_bias,
                    };
                    let name = format!("{p}.{}", t.module_path());
                    let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
                    let bias = if has_bias { Some(w.get(&format!("{name}.bias"), &[out_dim])?) } else { None };
                    FrozenLinear::new(weight, bias)
                })
                .collect::<Result<Vec<_>>>()?;
            layers.push(Block {
                input_norm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_norm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                proj,
            });
        }
        let embed = w.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let head = match w.get_opt("lm_head.weight", &[cfg.vocab_size, h])? {
            Some(head) if !cfg.tie_word_embeddings => head,
            // Tied checkpoints may still carry a copy of the embedding as lm_head.
            _ if cfg.tie_word_embeddings => embed.clone(),
            _ => return Err(ModelError::MissingTensor { name: "lm_head.weight".into() }),
        };
        Ok(Llama {
            config: cfg.clone(),
            embed,
            layers,
            norm: w.get("model.norm.weight", &[h])?,
            lm_head: FrozenLinear::new(head, None)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Every weight under its Hugging Face name, with `lora`'s updates merged into the
    /// adapted layers (for writing a merged checkpoint).
    pub fn named_weights(&self, lora: Option<&LoraParams>) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, block) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), block.input_norm.clone()));
            out.push((format!("{p}.post_attention_layernorm.weight"), block.post_norm.clone()));
            for t in Target::ALL {
                let layer = &block.proj[t.index()];
                let delta = match lora {
                    Some(l) => l.delta_weight(i, t)?,
                    None => None,
                };
                let weight = match delta {
                    Some(d) => (layer.weight() + d.to_dtype(self.dtype())?)?,
                    None => layer.weight().clone(),
                };
                out.push((format!("{p}.{}.weight", t.module_path()), weight));
                if let Some(b) = layer.bias() {
                    out.push((format!("{p}.{}.bias", t.module_path()), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if !self.config.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.weight().clone()));
        }
        Ok(out)
    }

    /// `cos` and `sin` of the rotary angles, `[t, head_dim / 2]`, computed in f64.
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.config.head_dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for pos in 0..t {
            for i in 0..half {
                let inv_freq = 1.0 / self.config.rope_theta.powf((2 * i) as f64 / self.config.head_dim as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let dev = self.device();
        Ok((
            Tensor::from_vec(cos, (t, half), dev)?.to_dtype(self.dtype())?,
            Tensor::from_vec(sin, (t, half), dev)?.to_dtype(self.dtype())?,
        ))
    }

    /// The final-norm hidden states, `[batch, seq, hidden]`, of `input_ids: [batch, seq]`.
    pub fn hidden(&self, input_ids: &Tensor, adapters: Adapters<'_>) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t) = input_ids.dims2()?;
        if t == 0 || t > cfg.max_seq_len {
            return Err(ModelError::BadInput { field: "input_ids", reason: format!("length {t}, the model accepts 1 to {}", cfg.max_seq_len) });
        }
        let max_id = input_ids.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if max_id as usize >= cfg.vocab_size {
            return Err(ModelError::BadInput { field: "input_ids", reason: format!("token {max_id} is outside the vocabulary of {}", cfg.vocab_size) });
        }
        let (cos, sin) = self.rope_tables(t)?;
        let group = cfg.num_heads / cfg.num_kv_heads;
        let mut x = self.embed.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, t, cfg.hidden_size))?;
        for (i, block) in self.layers.iter().enumerate() {
            let proj = |target: Target, x: &Tensor| adapters.apply(i, target, x, &block.proj[target.index()]);

            let xn = rms_norm(&x, &block.input_norm, cfg.rms_norm_eps)?;
            let heads = |y: Tensor, n: usize| y.reshape((b, t, n, cfg.head_dim))?.transpose(1, 2)?.contiguous();
            let q = rope(&heads(proj(Target::Q, &xn)?, cfg.num_heads)?, &cos, &sin)?;
            let k = rope(&heads(proj(Target::K, &xn)?, cfg.num_kv_heads)?, &cos, &sin)?;
            let v = heads(proj(Target::V, &xn)?, cfg.num_kv_heads)?;
            // Query heads are ordered by key/value group, so viewing them as
            // [b, kv, group*t, d] lines each up with its key/value head without copying
            // keys and values `group` times.
            let q = q.reshape((b, cfg.num_kv_heads, group * t, cfg.head_dim))?;
            let attn = causal_attention(&q, &k, &v, 1.0 / (cfg.head_dim as f64).sqrt())?;
            let attn = attn.reshape((b, cfg.num_heads, t, cfg.head_dim))?.transpose(1, 2)?.reshape((b, t, cfg.q_dim()))?;
            x = (x + proj(Target::O, &attn)?)?;

            let xn = rms_norm(&x, &block.post_norm, cfg.rms_norm_eps)?;
            let gated = swiglu(&proj(Target::Gate, &xn)?, &proj(Target::Up, &xn)?)?;
            x = (x + proj(Target::Down, &gated)?)?;
        }
        rms_norm(&x, &self.norm, cfg.rms_norm_eps)
    }

    /// Next-token logits, `[batch, seq, vocab]`.
    pub fn logits(&self, input_ids: &Tensor, adapters: Adapters<'_>) -> Result<Tensor> {
        self.lm_head.forward(&self.hidden(input_ids, adapters)?)
    }

    /// Logits of the last position only, `[batch, vocab]` (generation).
    pub fn last_logits(&self, input_ids: &Tensor, adapters: Adapters<'_>) -> Result<Tensor> {
        let h = self.hidden(input_ids, adapters)?;
        let t = h.dim(1)?;
        self.lm_head.forward(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// Negative log-likelihood of every label, `[batch, seq]`, zero at masked positions.
    /// The LM head and the cross-entropy run fused, a chunk of tokens at a time.
    pub fn token_nll(&self, batch: &TokenBatch, adapters: Adapters<'_>) -> Result<Tensor> {
        let h = self.hidden(&batch.input_ids, adapters)?;
        let (b, t, d) = h.dims3()?;
        let nll = frozen_head_nll(&h.reshape((b * t, d))?, self.lm_head.weight(), &batch.labels.flatten_all()?)?;
        Ok((nll.reshape((b, t))? * &batch.mask)?)
    }

    /// Per-example losses `[batch]`: each sequence's mean NLL over its predicted tokens
    /// (0 for a sequence with none). DP-SGD clips the gradient of each of these.
    pub fn per_example_nll(&self, batch: &TokenBatch, adapters: Adapters<'_>) -> Result<Tensor> {
        Ok((self.token_nll(batch, adapters)?.sum(1)? * &batch.inv_counts)?)
    }
}
