//! PEFT-compatible adapter files and merged checkpoints (see `docs/formats/lora-adapter.md`).
//!
//! An adapter directory holds `adapter_config.json` and `adapter_model.safetensors`
//! exactly as PEFT's `save_pretrained` writes them for a LoRA on a causal LM, so
//! `PeftModel.from_pretrained(base, dir)` loads it, and llama.cpp's
//! `convert_lora_to_gguf.py` converts it.

use super::config::Config;
use super::decoder::Llama;
use super::lora::{LoraConfig, LoraParams};
use super::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File name of the adapter's configuration.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File name of the adapter's tensors.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File name of a merged checkpoint's tensors.
pub const MERGED_WEIGHTS: &str = "model.safetensors";

/// `adapter_config.json` with the fields PEFT (0.10 to 0.13) writes for a plain LoRA.
/// Fields PEFT reads but sealtune never varies are written with PEFT's defaults and
/// checked on import, so an adapter that needs a feature sealtune lacks is refused
/// rather than misread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftAdapterConfig {
    /// Per-module alpha overrides; must be empty.
    #[serde(default)]
    pub alpha_pattern: HashMap<String, serde_json::Value>,
    /// Set by PEFT only for custom models; null.
    #[serde(default)]
    pub auto_mapping: Option<serde_json::Value>,
    /// The base model's hub id or path.
    pub base_model_name_or_path: Option<String>,
    /// Which biases are trained; must be `none`.
    pub bias: String,
    /// Whether weights are stored `[in, out]` (GPT-2 Conv1D); must be false.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// True in saved adapters.
    #[serde(default)]
    pub inference_mode: bool,
    /// How PEFT initialised the adapter (`true`: Kaiming-uniform A, zero B).
    #[serde(default = "json_true")]
    pub init_lora_weights: serde_json::Value,
    /// Layer replication; must be null.
    #[serde(default)]
    pub layer_replication: Option<serde_json::Value>,
    /// Restricts adapted layers by pattern; must be null.
    #[serde(default)]
    pub layers_pattern: Option<serde_json::Value>,
    /// Restricts adapted layers by index; must be null.
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// LoftQ settings; empty.
    #[serde(default)]
    pub loftq_config: serde_json::Value,
    /// The LoRA alpha.
    pub lora_alpha: f64,
    /// Dropout on the adapter input during training; sealtune uses none.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Megatron settings; null.
    #[serde(default)]
    pub megatron_config: Option<serde_json::Value>,
    /// Megatron module; PEFT's default string.
    #[serde(default = "megatron_core")]
    pub megatron_core: Option<String>,
    /// Extra fully trained modules; must be null.
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
    /// `LORA`.
    pub peft_type: String,
    /// The rank.
    pub r: usize,
    /// Per-module rank overrides; must be empty.
    #[serde(default)]
    pub rank_pattern: HashMap<String, serde_json::Value>,
    /// Base model revision; null.
    #[serde(default)]
    pub revision: Option<String>,
    /// The adapted modules (`q_proj`, ...). PEFT also accepts a regex string, which is not supported.
    pub target_modules: Vec<String>,
    /// `CAUSAL_LM`.
    pub task_type: Option<String>,
    /// DoRA; must be false.
    #[serde(default)]
    pub use_dora: bool,
    /// rsLoRA scaling (alpha/√r); must be false.
    #[serde(default)]
    pub use_rslora: bool,
}

fn json_true() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

fn megatron_core() -> Option<String> {
    Some("megatron.core".to_string())
}

impl PeftAdapterConfig {
    /// The configuration PEFT would save for `lora` on `base_model`.
    pub fn for_lora(lora: &LoraConfig, base_model: &str) -> Self {
        PeftAdapterConfig {
            alpha_pattern: HashMap::new(),
            auto_mapping: None,
            base_model_name_or_path: Some(base_model.to_string()),
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: json_true(),
            layer_replication: None,
            layers_pattern: None,
            layers_to_transform: None,
            loftq_config: serde_json::Value::Object(Default::default()),
            lora_alpha: lora.alpha,
            lora_dropout: 0.0,
            megatron_config: None,
            megatron_core: megatron_core(),
            modules_to_save: None,
            peft_type: "LORA".into(),
            r: lora.rank,
            rank_pattern: HashMap::new(),
            revision: None,
            target_modules: lora.targets.iter().map(|t| t.peft_name().to_string()).collect(),
            task_type: Some("CAUSAL_LM".into()),
            use_dora: false,
            use_rslora: false,
        }
    }

    /// The LoRA configuration, refusing every PEFT feature sealtune does not implement.
    pub fn to_lora(&self) -> Result<LoraConfig> {
        let refuse = |field: &str, what: &str| Err(ModelError::config(field, format!("{what} is not supported")));
        if self.peft_type != "LORA" {
            return refuse("peft_type", &format!("`{}`", self.peft_type));
        }
        if self.bias != "none" {
            return refuse("bias", &format!("bias training `{}`", self.bias));
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out", "the [in, out] layout");
        }
        if self.use_dora {
            return refuse("use_dora", "DoRA");
        }
        if self.use_rslora {
            return refuse("use_rslora", "rsLoRA scaling");
        }
        if !self.rank_pattern.is_empty() {
            return refuse("rank_pattern", "per-module ranks");
        }
        if !self.alpha_pattern.is_empty() {
            return refuse("alpha_pattern", "per-module alphas");
        }
        if self.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("layers_to_transform", "adapting a subset of layers");
        }
        if self.layer_replication.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("layer_replication", "layer replication");
        }
        if self.modules_to_save.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("modules_to_save", "fully trained extra modules");
        }
        let targets: Vec<&str> = self.target_modules.iter().map(String::as_str).collect();
        LoraConfig::new(self.r, self.lora_alpha, &targets)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))
}

/// PEFT (through `safetensors.torch.save_file`) tags its files with `format: pt`.
fn pt_metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string())]))
}

/// `tensors` as f32 safetensors bytes (adapters and merged checkpoints are small
/// enough, and f32 loads into every tool).
fn safetensors_bytes(tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>> {
    let tensors = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(tensors, pt_metadata()).map_err(|e| ModelError::Candle(e.into()))
}

/// The files of a PEFT adapter for `base_model`, as (file name, contents): the
/// enclave hands these out without writing them anywhere.
pub fn adapter_files(params: &LoraParams, base_model: &str) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let config = PeftAdapterConfig::for_lora(params.config(), base_model);
    let json = serde_json::to_string_pretty(&config).map_err(|e| ModelError::config(ADAPTER_CONFIG, e.to_string()))?;
    let tensors = params.tensors().iter().map(|t| (t.name.clone(), t.var.as_tensor().clone())).collect();
    Ok(vec![(ADAPTER_CONFIG, json.into_bytes()), (ADAPTER_WEIGHTS, safetensors_bytes(tensors)?)])
}

/// Writes `params` to `dir` (created if needed) as a PEFT adapter for `base_model`.
pub fn save_adapter(params: &LoraParams, base_model: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    for (name, bytes) in adapter_files(params, base_model)? {
        write(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// Reads a PEFT adapter directory for a model of configuration `model`.
pub fn load_adapter(dir: &Path, model: &Config, dtype: DType, device: &Device) -> Result<LoraParams> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let bytes = std::fs::read(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let peft: PeftAdapterConfig =
        serde_json::from_slice(&bytes).map_err(|source| ModelError::Json { path: config_path.clone(), source })?;
    let lora = peft.to_lora()?;
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&weights_path).map_err(|e| ModelError::io(&weights_path, e))?;
    let named = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?.to_device(device)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    LoraParams::from_named(model, lora, named)
}

/// Writes a full checkpoint with the adapter merged into the base weights, as a Hugging
/// Face directory (`config.json`, `model.safetensors`; plus `tokenizer.json` when given)
/// that Transformers and [`super::load::load_hf_dir`] load.
pub fn save_merged(model: &Llama, params: &LoraParams, tokenizer: Option<&tokenizers::Tokenizer>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    write(&dir.join("config.json"), model.config().to_hf_json()?.as_bytes())?;
    write(&dir.join(MERGED_WEIGHTS), &safetensors_bytes(model.named_weights(Some(params))?)?)?;
    if let Some(tok) = tokenizer {
        let path = dir.join("tokenizer.json");
        tok.save(&path, false).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
