//! The DP-SGD training loop (see the module docs of [`crate::dpsgd`]).

use super::clip::clipped_sum;
use super::noise::GaussianNoise;
use super::sampling::{Dataset, Layout, PoissonSampler, PrivacyUnit};
use super::{DpError, Result};
use crate::model::decoder::{Llama, TokenBatch};
use crate::model::lora::{Adapters, LoraParams};
use candle_core::{DType, Tensor};
use candle_nn::Optimizer as _;
use serde::Serialize;

/// The optimiser applied to the noised gradient (post-processing: it costs no privacy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Plain SGD.
    Sgd {
        /// Learning rate.
        lr: f64,
    },
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator offset.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// AdamW with PyTorch's defaults but no weight decay.
    pub fn adamw(lr: f64) -> Self {
        OptimizerConfig::AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

enum Optimizer {
    Sgd(candle_nn::SGD),
    AdamW(candle_nn::AdamW),
}

/// The public parameters of a DP-SGD job. None of them may depend on the private data:
/// `expected_batch` in particular is `q · N_declared` for a declared dataset size, never
/// the realised size of any batch or of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DpSgdConfig {
    /// `q`: the probability that a unit is in a step's batch.
    pub sampling_rate: f64,
    /// `B̄ = q · N_declared`: the noised sum is divided by this.
    pub expected_batch: f64,
    /// `σ`: the noise standard deviation is `σ · C`.
    pub noise_multiplier: f64,
    /// `C`: the L2 bound of every unit's gradient (∞ only with `σ = 0`, in tests).
    pub clip: f64,
    /// The most steps the job may take (the accountant's calibration assumed this many).
    pub max_steps: u64,
    /// Tokens per sequence; longer records are truncated, shorter ones padded.
    pub seq_len: usize,
    /// The physical shape of every step.
    pub layout: Layout,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
}

impl DpSgdConfig {
    fn check(&self, model: &Llama) -> Result<()> {
        let c = self;
        if !(c.sampling_rate > 0.0 && c.sampling_rate <= 1.0) {
            return Err(DpError::bad("sampling_rate", format!("{} is not in (0, 1]", c.sampling_rate)));
        }
        if !(c.expected_batch.is_finite() && c.expected_batch > 0.0) {
            return Err(DpError::bad("expected_batch", "must be a positive number"));
        }
        if !(c.noise_multiplier.is_finite() && c.noise_multiplier >= 0.0) {
            return Err(DpError::bad("noise_multiplier", "must be a non-negative number"));
        }
        if c.clip.is_nan() || c.clip <= 0.0 || (c.clip.is_infinite() && c.noise_multiplier > 0.0) {
            return Err(DpError::bad("clip", "must be positive, and finite when there is noise"));
        }
        if c.seq_len < 2 || c.seq_len > model.config().max_seq_len {
            return Err(DpError::bad("seq_len", format!("must be 2 to {}", model.config().max_seq_len)));
        }
        let lr = match c.optimizer {
            OptimizerConfig::Sgd { lr } | OptimizerConfig::AdamW { lr, .. } => lr,
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(DpError::bad("learning_rate", "must be a positive number"));
        }
        Ok(())
    }
}

/// What the progress callback receives after every step: nothing computed from the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// Steps taken so far.
    pub step: u64,
    /// The job's step limit.
    pub max_steps: u64,
    /// ε spent so far, by the enforcing accountant.
    pub epsilon: f64,
}

/// ε spent after a number of steps of this job's mechanism (Poisson rate `q`, noise
/// multiplier `σ`, the job's δ): the privacy accountant the engine enforces the budget with.
pub trait Accountant {
    /// ε after `steps` steps.
    fn epsilon_after(&mut self, steps: u64) -> Result<f64>;
}

impl<F: FnMut(u64) -> Result<f64>> Accountant for F {
    fn epsilon_after(&mut self, steps: u64) -> Result<f64> {
        self(steps)
    }
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The configured number of steps was reached.
    MaxSteps,
    /// One more step would have spent more than the ε budget.
    Budget,
}

/// The result of [`DpSgd::train`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// Steps taken in total.
    pub steps: u64,
    /// ε spent by the enforcing accountant.
    pub epsilon: f64,
    /// Why training ended.
    pub stop: Stop,
}

/// A DP-SGD trainer of the LoRA adapters of a frozen model.
pub struct DpSgd<'m> {
    model: &'m Llama,
    params: LoraParams,
    optimizer: Optimizer,
    config: DpSgdConfig,
    sampler: PoissonSampler,
    noise: GaussianNoise,
    steps: u64,
}

impl<'m> DpSgd<'m> {
    /// A trainer for `params` on `model`, both random generators seeded from the OS.
    ///
    /// Fails closed before touching any data: it runs one micro-batch of public filler
    /// tokens through the per-example path and refuses to start if any adapter tensor
    /// gets no per-example gradient.
    pub fn new(model: &'m Llama, params: LoraParams, config: DpSgdConfig) -> Result<Self> {
        let sampler = PoissonSampler::from_os(config.sampling_rate)?;
        Self::with_generators(model, params, config, sampler, GaussianNoise::from_os()?)
    }

    pub(crate) fn with_generators(
        model: &'m Llama,
        params: LoraParams,
        config: DpSgdConfig,
        sampler: PoissonSampler,
        noise: GaussianNoise,
    ) -> Result<Self> {
        config.check(model)?;
        let optimizer = match config.optimizer {
            OptimizerConfig::Sgd { lr } => Optimizer::Sgd(candle_nn::SGD::new(params.vars(), lr)?),
            OptimizerConfig::AdamW { lr, beta1, beta2, eps, weight_decay } => Optimizer::AdamW(candle_nn::AdamW::new(
                params.vars(),
                candle_nn::ParamsAdamW { lr, beta1, beta2, eps, weight_decay },
            )?),
        };
        let trainer = DpSgd { model, params, optimizer, config, sampler, noise, steps: 0 };
        trainer.check_gradient_path()?;
        Ok(trainer)
    }

    fn check_gradient_path(&self) -> Result<()> {
        let vocab = self.model.config().vocab_size as u32;
        let filler: Vec<u32> = (0..self.config.seq_len as u32 + 1).map(|i| i % vocab).collect();
        let rows = vec![filler; self.config.layout.micro_batch];
        let grads = self.per_example_gradients(&rows)?;
        for (t, g) in self.params.tensors().iter().zip(&grads) {
            let mut expected = vec![rows.len()];
            expected.extend_from_slice(t.var.dims());
            if g.dims() != expected {
                return Err(crate::model::ModelError::MissingGradient { name: t.name.clone() }.into());
            }
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &DpSgdConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The adapters as trained so far (differentially private after every step).
    pub fn params(&self) -> &LoraParams {
        &self.params
    }

    /// The trained adapters.
    pub fn into_params(self) -> LoraParams {
        self.params
    }

    /// Trains on `data` until `max_steps` or until one more step would spend more than
    /// `target_epsilon` by `accountant`; after each step calls `progress` with the step
    /// count and ε only.
    pub fn train(
        &mut self,
        data: &Dataset,
        target_epsilon: f64,
        accountant: &mut dyn Accountant,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Outcome> {
        Layout::new(self.config.layout.micro_batch, self.config.layout.micro_batches, data.privacy_unit())?;
        let mut epsilon = if self.steps == 0 { 0.0 } else { accountant.epsilon_after(self.steps)? };
        while self.steps < self.config.max_steps {
            let next = accountant.epsilon_after(self.steps + 1)?;
            if next.is_nan() || next > target_epsilon {
                return Ok(Outcome { steps: self.steps, epsilon, stop: Stop::Budget });
            }
            self.step(data)?;
            epsilon = next;
            progress(Progress { step: self.steps, max_steps: self.config.max_steps, epsilon });
        }
        Ok(Outcome { steps: self.steps, epsilon, stop: Stop::MaxSteps })
    }

    /// One DP-SGD step: sample, clip, sum, noise, normalise, optimise. The first step
    /// fails closed if any adapter tensor did not change.
    pub(crate) fn step(&mut self, data: &Dataset) -> Result<()> {
        crate::model::on_compute_pool(|| self.step_on_worker(data))
    }

    fn step_on_worker(&mut self, data: &Dataset) -> Result<()> {
        let batch = self.sampler.sample(data);
        let sums = self.clipped_sum(data, &batch)?;
        let std = self.config.noise_multiplier * self.config.clip;
        let mut update = Vec::with_capacity(sums.len());
        for s in sums {
            let noised = if std > 0.0 { (&s + self.noise.tensor(s.shape(), std, s.dtype(), s.device())?)? } else { s };
            update.push((noised / self.config.expected_batch)?);
        }
        let before = if self.steps == 0 { Some(self.snapshot()?) } else { None };
        let store = self.params.grad_store(&update)?;
        match &mut self.optimizer {
            Optimizer::Sgd(o) => o.step(&store)?,
            Optimizer::AdamW(o) => o.step(&store)?,
        }
        self.steps += 1;
        if let Some(before) = before {
            for (t, b) in self.params.tensors().iter().zip(before) {
                let changed = t.var.as_tensor().ne(&b)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
                if changed == 0.0 {
                    return Err(DpError::Unchanged { name: t.name.clone() });
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self.params.tensors().iter().map(|t| t.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?)
    }

    /// `Σ_units clip_C(g_unit)` over a sampled batch, before noise and normalisation,
    /// computed in exactly `max(layout.micro_batches, needed)` micro-batches of
    /// `layout.micro_batch` rows whatever the batch holds.
    pub(crate) fn clipped_sum(&self, data: &Dataset, batch: &[Vec<usize>]) -> Result<Vec<Tensor>> {
        let mut sums: Vec<Tensor> = self
            .params
            .tensors()
            .iter()
            .map(|t| t.var.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let by_user = matches!(data.privacy_unit(), PrivacyUnit::User { .. });
        for mb in self.config.layout.pack(batch) {
            let rows: Vec<&[u32]> = mb.records.iter().map(|&r| data.record(r)).collect();
            let grads = self.per_example_gradients(&rows)?;
            let units = by_user.then_some((mb.unit_of_row.as_slice(), mb.units));
            for (s, c) in sums.iter_mut().zip(clipped_sum(&grads, units, self.config.clip)?) {
                *s = (&*s + c)?;
            }
        }
        Ok(sums)
    }

    /// Per-example gradients of `rows`, padded with empty rows to one micro-batch, in a
    /// single backward pass through per-example adapter copies.
    fn per_example_gradients<S: AsRef<[u32]>>(&self, rows: &[S]) -> Result<Vec<Tensor>> {
        let m = self.config.layout.micro_batch;
        let mut seqs: Vec<&[u32]> = rows.iter().map(|r| r.as_ref()).collect();
        seqs.resize(m, &[]);
        let batch = TokenBatch::new(&seqs, self.config.seq_len, self.model.dtype(), self.model.device())?;
        let copies = self.params.per_example(m)?;
        let losses = self.model.per_example_nll(&batch, Adapters::PerExample(&copies))?;
        let grads = losses.sum_all()?.backward()?;
        Ok(copies.gradients(&grads)?)
    }
}
