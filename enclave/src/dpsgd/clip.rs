//! Flat per-unit clipping: each unit's gradient, all LoRA tensors taken as one vector,
//! is scaled to L2 norm at most `C`, and the scaled gradients are summed.

use super::Result;
use candle_core::{DType, Tensor};

/// Keeps the clip factor finite for zero gradients (padding rows) and makes
/// `factor · norm = C · norm / (norm + ε)` stay below `C`.
const NORM_EPS: f64 = 1e-6;

/// The clipped sum of one micro-batch.
///
/// `per_example[k]` is `[m, …]`, row `i` the gradient of tensor `k` for row `i` of the
/// micro-batch. With `units = Some((unit_of_row, n))`, rows `0..unit_of_row.len()`
/// belong to units `0..n` and are summed per unit before clipping (user-level privacy);
/// the remaining rows are padding. With `None` each row is its own unit. Returns, for
/// each tensor, `Σ_units min(1, C/‖g_unit‖) · g_unit` in the tensor's own shape.
pub(crate) fn clipped_sum(per_example: &[Tensor], units: Option<(&[usize], usize)>, clip: f64) -> Result<Vec<Tensor>> {
    let Some(first) = per_example.first() else { return Ok(Vec::new()) };
    let (m, dtype, device) = (first.dim(0)?, first.dtype(), first.device().clone());
    let flat = per_example.iter().map(|g| g.reshape((m, ()))).collect::<candle_core::Result<Vec<_>>>()?;
    let per_unit = match units {
        None => flat,
        Some((unit_of_row, n)) => {
            let mut s = vec![0f32; n * m];
            for (row, &u) in unit_of_row.iter().enumerate() {
                s[u * m + row] = 1.0;
            }
            let s = Tensor::from_vec(s, (n, m), &device)?.to_dtype(dtype)?;
            flat.iter().map(|g| s.matmul(g)).collect::<candle_core::Result<Vec<_>>>()?
        }
    };
    let units = per_unit[0].dim(0)?;
    let factor = if clip.is_infinite() {
        Tensor::ones((1, units), dtype, &device)?
    } else {
        let mut sq = Tensor::zeros(units, DType::F64, &device)?;
        for g in &per_unit {
            sq = (sq + g.to_dtype(DType::F64)?.sqr()?.sum(1)?)?;
        }
        let factor = ((sq.sqrt()? + NORM_EPS)?.recip()? * clip)?.clamp(0f64, 1f64)?;
        factor.to_dtype(dtype)?.reshape((1, units))?
    };
    Ok(per_unit
        .iter()
        .zip(per_example)
        .map(|(g, orig)| factor.matmul(g)?.reshape(&orig.dims()[1..]))
        .collect::<candle_core::Result<Vec<_>>>()?)
}
