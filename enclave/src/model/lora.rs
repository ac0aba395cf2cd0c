//! LoRA adapters: the trainable parameters, initialised as PEFT does, and their
//! per-example copies for DP-SGD.
//!
//! An adapted layer computes `W x + (α/r) · B A x` with `A: [r, in]`, `B: [out, r]`.
//!
//! # Per-example gradients in one backward pass
//! [`LoraParams::per_example`] copies every adapter tensor `batch` times into fresh
//! variables of shape `[batch, r, in]` and `[batch, out, r]`. Run with
//! [`Adapters::PerExample`], example `i` of the batch goes through copy `i` only (batched
//! matmul), and nothing in the decoder mixes examples. So for the summed per-example
//! losses `L = Σᵢ Lᵢ`, `∂L/∂copyᵢ = ∂Lᵢ/∂A`: one backward of `L` leaves the gradient of
//! every example in slice `i` of the copies' gradient ([`PerExampleLora::gradients`]).

use super::config::Config;
use super::frozen::FrozenLinear;
use super::fused::per_example_lora;
use super::{ModelError, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;

/// A linear layer of a decoder block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `self_attn.q_proj`
    Q,
    /// `self_attn.k_proj`
    K,
    /// `self_attn.v_proj`
    V,
    /// `self_attn.o_proj`
    O,
    /// `mlp.gate_proj`
    Gate,
    /// `mlp.up_proj`
    Up,
    /// `mlp.down_proj`
    Down,
}

impl Target {
    /// Every target, in the order of a block's layers.
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The module name PEFT's `target_modules` uses (`q_proj`, ...).
    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module's path inside a decoder block (`self_attn.q_proj`, ...).
    pub fn module_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Parses `q` or `q_proj` (likewise k, v, o, gate, up, down).
    pub fn parse(name: &str) -> Result<Self> {
        let short = name.strip_suffix("_proj").unwrap_or(name);
        Target::ALL
            .into_iter()
            .find(|t| t.peft_name().strip_suffix("_proj") == Some(short))
            .ok_or_else(|| ModelError::config("target_modules", format!("unknown module `{name}` (expected q, k, v, o, gate, up or down)")))
    }

    /// `(in, out)` widths of this layer.
    pub fn dims(self, cfg: &Config) -> (usize, usize) {
        match self {
            Target::Q => (cfg.hidden_size, cfg.q_dim()),
            Target::K | Target::V => (cfg.hidden_size, cfg.kv_dim()),
            Target::O => (cfg.q_dim(), cfg.hidden_size),
            Target::Gate | Target::Up => (cfg.hidden_size, cfg.intermediate_size),
            Target::Down => (cfg.intermediate_size, cfg.hidden_size),
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Rank, scaling and placement of the adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank `r`.
    pub rank: usize,
    /// `lora_alpha`; the update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// The adapted layers of every block, sorted and without repeats.
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// A configuration from module names (`q`, `q_proj`, ...).
    pub fn new(rank: usize, alpha: f64, targets: &[&str]) -> Result<Self> {
        let mut targets = targets.iter().map(|t| Target::parse(t)).collect::<Result<Vec<_>>>()?;
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(ModelError::config("target_modules", "at least one module must be adapted"));
        }
        if rank == 0 {
            return Err(ModelError::config("r", "the rank must be positive"));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(ModelError::config("lora_alpha", "must be a positive number"));
        }
        Ok(LoraConfig { rank, alpha, targets })
    }

    /// The factor `alpha / rank` applied to `B A x`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Which of the two factors a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A`, shape `[r, in]`.
    A,
    /// `lora_B`, shape `[out, r]`.
    B,
}

/// One trainable tensor.
#[derive(Debug, Clone)]
pub struct LoraTensor {
    /// Its PEFT name, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
    pub name: String,
    /// The decoder block.
    pub layer: usize,
    /// The adapted layer.
    pub target: Target,
    /// A or B.
    pub factor: Factor,
    /// The variable.
    pub var: Var,
}

/// The PEFT name of an adapter tensor.
pub fn peft_tensor_name(layer: usize, target: Target, factor: Factor) -> String {
    let f = match factor {
        Factor::A => "lora_A",
        Factor::B => "lora_B",
    };
    format!("base_model.model.model.layers.{layer}.{}.{f}.weight", target.module_path())
}

/// Where the A factor of each (layer, target) sits in the tensor list; B follows it.
#[derive(Debug, Clone)]
struct Slots(Vec<Option<usize>>);

impl Slots {
    fn get(&self, layer: usize, target: Target) -> Option<usize> {
        self.0.get(layer * Target::ALL.len() + target.index()).copied().flatten()
    }
}

/// The trainable adapter tensors of a whole model, A then B for each adapted layer,
/// layers in order, targets in [`Target::ALL`] order.
#[derive(Debug, Clone)]
pub struct LoraParams {
    config: LoraConfig,
    tensors: Vec<LoraTensor>,
    slots: Slots,
}

impl LoraParams {
    /// Fresh adapters initialised as PEFT does: A from Kaiming-uniform with `a = √5`
    /// (PyTorch's `nn.Linear` default, i.e. U(−1/√in, 1/√in)), B zeros, so the adapted
    /// model starts equal to the base model. `rng` must be seeded by the caller (from
    /// the OS for training; fixed in tests).
    pub fn init(model: &Config, config: LoraConfig, rng: &mut ChaCha20Rng, dtype: DType, device: &Device) -> Result<Self> {
        let mut named = HashMap::new();
        for layer in 0..model.num_layers {
            for &target in &config.targets {
                let (in_dim, out_dim) = target.dims(model);
                let bound = 1.0 / (in_dim as f64).sqrt();
                let a: Vec<f64> = (0..config.rank * in_dim).map(|_| rng.gen_range(-bound..bound)).collect();
                let a = Tensor::from_vec(a, (config.rank, in_dim), device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((out_dim, config.rank), dtype, device)?;
                named.insert(peft_tensor_name(layer, target, Factor::A), a);
                named.insert(peft_tensor_name(layer, target, Factor::B), b);
            }
        }
        Self::from_named(model, config, named)
    }

    /// Adapters from tensors under their PEFT names; every adapted layer needs both
    /// factors with the right shapes, and no other tensor may be present.
    pub fn from_named(model: &Config, config: LoraConfig, mut named: HashMap<String, Tensor>) -> Result<Self> {
        let mut tensors = Vec::new();
        let mut slots = vec![None; model.num_layers * Target::ALL.len()];
        for layer in 0..model.num_layers {
            for &target in &config.targets {
                let (in_dim, out_dim) = target.dims(model);
                slots[layer * Target::ALL.len() + target.index()] = Some(tensors.len());
                for (factor, shape) in [(Factor::A, [config.rank, in_dim]), (Factor::B, [out_dim, config.rank])] {
                    let name = peft_tensor_name(layer, target, factor);
                    let t = named.remove(&name).ok_or_else(|| ModelError::MissingTensor { name: name.clone() })?;
                    if t.dims() != shape {
                        return Err(ModelError::ShapeMismatch { name, expected: shape.to_vec(), found: t.dims().to_vec() });
                    }
                    tensors.push(LoraTensor { name, layer, target, factor, var: Var::from_tensor(&t.detach())? });
                }
            }
        }
        if let Some(name) = named.keys().min() {
            return Err(ModelError::config(
                "target_modules",
                format!("the adapter file has `{name}`, which the configured targets and layers do not cover"),
            ));
        }
        Ok(LoraParams { config, tensors, slots: Slots(slots) })
    }

    /// Rank, alpha and targets.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Every trainable tensor, in a fixed order (see the type's docs).
    pub fn tensors(&self) -> &[LoraTensor] {
        &self.tensors
    }

    /// The variables, in [`Self::tensors`] order, for an optimiser such as `candle_nn::AdamW`.
    pub fn vars(&self) -> Vec<Var> {
        self.tensors.iter().map(|t| t.var.clone()).collect()
    }

    /// A gradient store holding `grads[i]` for `tensors()[i]`, to hand a computed (for
    /// DP-SGD: clipped, summed, noised and normalised) gradient to an optimiser's `step`.
    pub fn grad_store(&self, grads: &[Tensor]) -> Result<GradStore> {
        if grads.len() != self.tensors.len() {
            return Err(ModelError::BadInput {
                field: "grads",
                reason: format!("{} gradients for {} tensors", grads.len(), self.tensors.len()),
            });
        }
        let mut store = GradStore::default();
        for (t, g) in self.tensors.iter().zip(grads) {
            if g.dims() != t.var.dims() {
                return Err(ModelError::ShapeMismatch { name: t.name.clone(), expected: t.var.dims().to_vec(), found: g.dims().to_vec() });
            }
            store.insert(t.var.as_tensor(), g.clone());
        }
        Ok(store)
    }

    /// `(A, B)` of an adapted layer.
    pub fn factors(&self, layer: usize, target: Target) -> Option<(&Tensor, &Tensor)> {
        self.slots.get(layer, target).map(|i| (self.tensors[i].var.as_tensor(), self.tensors[i + 1].var.as_tensor()))
    }

    /// The weight update `(α/r) · B A` of an adapted layer, shape `[out, in]`.
    pub fn delta_weight(&self, layer: usize, target: Target) -> Result<Option<Tensor>> {
        match self.factors(layer, target) {
            None => Ok(None),
            Some((a, b)) => Ok(Some((b.matmul(a)? * self.config.scale())?)),
        }
    }

    /// Per-example copies of every tensor for a batch of `batch` examples.
    pub fn per_example(&self, batch: usize) -> Result<PerExampleLora> {
        let copies = self
            .tensors
            .iter()
            .map(|t| {
                let mut shape = vec![batch];
                shape.extend_from_slice(t.var.dims());
                Ok(Var::from_tensor(&t.var.as_tensor().unsqueeze(0)?.broadcast_as(shape)?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PerExampleLora {
            batch,
            scale: self.config.scale(),
            slots: self.slots.clone(),
            names: self.tensors.iter().map(|t| t.name.clone()).collect(),
            copies,
        })
    }
}

/// Per-example copies of [`LoraParams`] (see the module docs), in the same order.
#[derive(Debug)]
pub struct PerExampleLora {
    batch: usize,
    scale: f64,
    slots: Slots,
    names: Vec<String>,
    copies: Vec<Var>,
}

impl PerExampleLora {
    /// The batch size the copies were made for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The copies, `[batch, ...]`, in [`LoraParams::tensors`] order.
    pub fn copies(&self) -> &[Var] {
        &self.copies
    }

    /// The per-example gradients after `grads = losses.sum_all()?.backward()?`: for each
    /// tensor of [`LoraParams::tensors`], a `[batch, ...]` tensor whose slice `i` is the
    /// gradient of example `i`'s loss. Fails if any tensor received no gradient, which
    /// would mean a broken gradient path.
    pub fn gradients(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        self.copies
            .iter()
            .zip(&self.names)
            .map(|(c, name)| grads.get(c.as_tensor()).cloned().ok_or_else(|| ModelError::MissingGradient { name: name.clone() }))
            .collect()
    }
}

/// The adapters a forward pass uses.
#[derive(Debug, Clone, Copy)]
pub enum Adapters<'a> {
    /// The base model alone.
    None,
    /// The same adapter for every example (evaluation, generation, non-private training).
    Shared(&'a LoraParams),
    /// Example `i` uses copy `i` (DP-SGD).
    PerExample(&'a PerExampleLora),
}

impl Adapters<'_> {
    /// `linear(x) + (α/r) · B A x` for one layer, with `x: [batch, seq, in]`.
    pub(crate) fn apply(&self, layer: usize, target: Target, x: &Tensor, linear: &FrozenLinear) -> Result<Tensor> {
        let (b, t, in_dim) = x.dims3()?;
        match *self {
            Adapters::None => linear.forward(x),
            Adapters::Shared(p) => match p.factors(layer, target) {
                None => linear.forward(x),
                Some((a, bb)) => {
                    let base = linear.forward(x)?;
                    // Scaling the rank-r intermediate is cheaper than scaling the output.
                    let h = (x.reshape((b * t, in_dim))?.matmul(&a.t()?)? * p.config.scale())?;
                    let d = h.matmul(&bb.t()?)?.reshape(base.shape())?;
                    Ok((base + d)?)
                }
            },
            Adapters::PerExample(p) => match p.slots.get(layer, target) {
                None => linear.forward(x),
                Some(i) => {
                    if b != p.batch {
                        return Err(ModelError::BadInput {
                            field: "batch",
                            reason: format!("{b} examples but the per-example adapters were made for {}", p.batch),
                        });
                    }
                    per_example_lora(x, linear, p.copies[i].as_tensor(), p.copies[i + 1].as_tensor(), p.scale)
                }
            },
        }
    }
}
