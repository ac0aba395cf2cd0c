//! `sealtune model`: checking tools for base models and adapters (public weights only).

use crate::failure::{Failure, Outcome};
use candle_core::{DType, Device};
use clap::Subcommand;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sealtune_enclave::model::decoder::Llama;
use sealtune_enclave::model::export::load_adapter;
use sealtune_enclave::model::generate::{generate, perplexity};
use sealtune_enclave::model::load::{load_checkpoint, Checkpoint};
use sealtune_enclave::model::lora::{Adapters, LoraParams};
use sealtune_attestation::sealed::record::Record;
use sealtune_enclave::model::tokenizer::{decode, encode, record_text};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Continue a prompt; prints the continuation only.
    Generate {
        /// A GGUF file or a Hugging Face model directory.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter directory to apply.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// The text to continue.
        #[arg(long)]
        prompt: String,
        /// At most this many new tokens.
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
        /// 0 for greedy decoding, otherwise the sampling temperature.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Sampling seed (default: from the OS).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Mean token negative log-likelihood and perplexity on a JSON Lines file whose
    /// records have a `text` field or a `messages` list.
    Eval {
        /// A GGUF file or a Hugging Face model directory.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter directory to apply.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// The JSON Lines file.
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Longer records are scored in windows of this many tokens.
        #[arg(long, default_value_t = 512)]
        window: usize,
    },
}

pub(crate) fn run(command: ModelCommand) -> Outcome {
    match command {
        ModelCommand::Generate { model, adapter, prompt, max_tokens, temperature, seed } => {
            let loaded = Loaded::open(&model, adapter.as_deref())?;
            let tokenizer = loaded.tokenizer()?;
            let ids = encode(tokenizer, &prompt).map_err(Failure::input)?;
            let mut rng = match seed {
                Some(s) => ChaCha20Rng::seed_from_u64(s),
                None => ChaCha20Rng::from_entropy(),
            };
            let out = generate(&loaded.model, loaded.adapters(), &ids, max_tokens, temperature, loaded.checkpoint.eos_token_id, &mut rng)
                .map_err(Failure::input)?;
            println!("{}", decode(tokenizer, &out).map_err(Failure::input)?);
            Ok(())
        }
        ModelCommand::Eval { model, adapter, data, json, window } => {
            let loaded = Loaded::open(&model, adapter.as_deref())?;
            let tokenizer = loaded.tokenizer()?;
            let text = std::fs::read_to_string(&data).map_err(|e| Failure::input(format!("{}: {e}", data.display())))?;
            let mut sequences = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let record = Record::parse(line).map_err(|reason| Failure::input(format!("{} line {}: {reason}", data.display(), n + 1)))?;
                sequences.push(encode(tokenizer, &record_text(&record)).map_err(Failure::input)?);
            }
            let result = perplexity(&loaded.model, loaded.adapters(), &sequences, window, 4).map_err(Failure::input)?;
            if result.tokens == 0 {
                return Err(Failure::input(format!("{}: no record has two or more tokens", data.display())));
            }
            if json {
                let out = serde_json::json!({
                    "records": sequences.len(),
                    "tokens": result.tokens,
                    "mean_nll": result.mean_nll(),
                    "perplexity": result.perplexity(),
                });
                println!("{out}");
            } else {
                println!(
                    "{} records, {} tokens: mean NLL {:.4} nats/token, perplexity {:.3}",
                    sequences.len(),
                    result.tokens,
                    result.mean_nll(),
                    result.perplexity()
                );
            }
            Ok(())
        }
    }
}

struct Loaded {
    checkpoint: Checkpoint,
    model: Llama,
    adapter: Option<LoraParams>,
}

impl Loaded {
    fn open(model: &Path, adapter: Option<&Path>) -> Result<Self, Failure> {
        let device = Device::cuda_if_available(0).map_err(Failure::input)?;
        let checkpoint = load_checkpoint(model, DType::F32, &device).map_err(Failure::input)?;
        let llama = Llama::load(&checkpoint.weights, &checkpoint.config).map_err(Failure::input)?;
        let adapter = adapter
            .map(|dir| load_adapter(dir, &checkpoint.config, DType::F32, &device))
            .transpose()
            .map_err(Failure::input)?;
        Ok(Loaded { checkpoint, model: llama, adapter })
    }

    fn adapters(&self) -> Adapters<'_> {
        self.adapter.as_ref().map_or(Adapters::None, Adapters::Shared)
    }

    fn tokenizer(&self) -> Result<&Tokenizer, Failure> {
        self.checkpoint.tokenizer.as_ref().ok_or_else(|| Failure::input("the model carries no tokenizer (tokenizer.json or GGUF metadata)"))
    }
}
