//! Gaussian noise for DP-SGD from a ChaCha20 CSPRNG seeded by the operating system.
//!
//! candle's own random tensors come from a non-cryptographic generator and are never
//! used for privacy noise. Floating-point Gaussian samplers leak through the gaps and
//! irregular spacing of the values they can produce (Mironov 2012; Holohan & Braghin
//! 2021). As Opacus's secure mode does, every sample is the normalised sum of four
//! independent draws, `(z₁ + z₂ + z₃ + z₄) / 2`, which is again exactly standard normal
//! but whose set of attainable values is far denser; draws use 53-bit uniforms and f64
//! arithmetic, and are rounded to the tensor's dtype only at the end.

use super::{DpError, Result};
use candle_core::{DType, Device, Shape, Tensor};
use rand_chacha::rand_core::{OsRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::f64::consts::TAU;

/// The source of DP-SGD's Gaussian noise.
#[derive(Debug)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
}

impl GaussianNoise {
    /// A generator seeded from the operating system.
    pub fn from_os() -> Result<Self> {
        let rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| DpError::Entropy(e.to_string()))?;
        Ok(GaussianNoise { rng })
    }

    /// A generator with a caller-chosen seed: tests only, never for training.
    #[cfg(test)]
    pub(crate) fn with_rng(rng: ChaCha20Rng) -> Self {
        GaussianNoise { rng }
    }

    /// Uniform on (0, 1], 53 bits.
    fn open_uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 * (-53f64).exp2()
    }

    /// Two independent standard normals (Box-Muller).
    fn box_muller(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.open_uniform().ln()).sqrt();
        let theta = TAU * self.open_uniform();
        (r * theta.cos(), r * theta.sin())
    }

    /// One hardened standard normal sample.
    pub fn standard(&mut self) -> f64 {
        let (a, b) = self.box_muller();
        let (c, d) = self.box_muller();
        (a + b + c + d) / 2.0
    }

    /// A tensor of independent `N(0, std²)` samples.
    pub fn tensor(&mut self, shape: impl Into<Shape>, std: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let values: Vec<f64> = (0..shape.elem_count()).map(|_| std * self.standard()).collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
    }
}
