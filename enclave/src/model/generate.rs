//! Text generation and perplexity, the checking tools for a base model or an adapter.

use super::decoder::{Llama, TokenBatch};
use super::lora::Adapters;
use super::{ModelError, Result};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_chacha::ChaCha20Rng;

/// Continues `prompt` by up to `max_tokens` tokens, stopping after `eos`. A temperature of
/// 0 picks the most likely token (greedy); otherwise tokens are sampled from the softmax
/// of `logits / temperature` with `rng`. The context is cut to the model's maximum length
/// from the left. There is no key/value cache: each step reruns the whole context.
pub fn generate(
    model: &Llama,
    adapters: Adapters<'_>,
    prompt: &[u32],
    max_tokens: usize,
    temperature: f64,
    eos: Option<u32>,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::BadInput { field: "prompt", reason: "is empty".into() });
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(ModelError::BadInput { field: "temperature", reason: format!("{temperature} is not a non-negative number") });
    }
    let max_len = model.config().max_seq_len;
    let mut tokens = prompt.to_vec();
    let mut generated = Vec::with_capacity(max_tokens);
    for _ in 0..max_tokens {
        let context = &tokens[tokens.len().saturating_sub(max_len)..];
        let ids = Tensor::new(context, model.device())?.unsqueeze(0)?;
        let logits: Vec<f64> = model.last_logits(&ids, adapters)?.squeeze(0)?.to_dtype(DType::F64)?.to_vec1()?;
        let next = if temperature == 0.0 { argmax(&logits) } else { sample(&logits, temperature, rng) };
        tokens.push(next);
        generated.push(next);
        if Some(next) == eos {
            break;
        }
    }
    Ok(generated)
}

fn argmax(logits: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f64], temperature: f64, rng: &mut ChaCha20Rng) -> u32 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits.iter().map(|l| ((l - max) / temperature).exp()).collect();
    let mut u = rng.gen::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    argmax(logits)
}

/// Total NLL and token count of a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Perplexity {
    /// Sum of the NLL (nats) of every predicted token.
    pub total_nll: f64,
    /// Number of predicted tokens.
    pub tokens: usize,
}

impl Perplexity {
    /// Mean NLL per token (nats).
    pub fn mean_nll(&self) -> f64 {
        self.total_nll / self.tokens as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// Scores every sequence (each cut into windows of at most `window` predictions, each
/// window scored from its own start) in batches of `batch` sequences.
pub fn perplexity(model: &Llama, adapters: Adapters<'_>, sequences: &[Vec<u32>], window: usize, batch: usize) -> Result<Perplexity> {
    if window == 0 || batch == 0 {
        return Err(ModelError::BadInput { field: "window", reason: "window and batch must be positive".into() });
    }
    let window = window.min(model.config().max_seq_len);
    // Windows overlap by one token so that every token but a sequence's first is predicted once.
    let pieces: Vec<&[u32]> = sequences
        .iter()
        .flat_map(|s| (0..s.len().saturating_sub(1)).step_by(window).map(move |start| &s[start..(start + window + 1).min(s.len())]))
        .collect();
    let mut result = Perplexity::default();
    for chunk in pieces.chunks(batch) {
        let longest = chunk.iter().map(|p| p.len() - 1).max().unwrap_or(1);
        let tb = TokenBatch::new(chunk, longest, model.dtype(), model.device())?;
        let nll = model.token_nll(&tb, adapters)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        result.total_nll += nll;
        result.tokens += tb.token_counts().iter().sum::<usize>();
    }
    Ok(result)
}
