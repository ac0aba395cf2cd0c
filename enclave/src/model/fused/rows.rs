//! The CPU kernels of the fused ops: one pass over each row, reading the tensors'
//! buffers in place and writing one output buffer, split across the rayon pool.
//! Arithmetic is in the tensors' own type, with row sums accumulated in f64.

use candle_core::{CpuStorage, Device, Storage, Tensor, WithDType};
use num_traits::{Float, NumAssign};
use rayon::prelude::*;

/// Elements per rayon task: below this, splitting costs more than it saves.
const TASK_ELEMENTS: usize = 16 * 1024;

/// The element types the kernels run on.
pub(super) trait Real: WithDType + Float + NumAssign + Send + Sync {}
impl Real for f32 {}
impl Real for f64 {}

/// Calls `f` with the elements of a contiguous CPU tensor.
pub(super) fn with_slice<T: Real, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("a fused CPU kernel got a tensor on another device") };
    slice(cpu, layout).map(f)
}

/// The elements of a contiguous layout of `storage`.
pub(super) fn slice<'a, T: Real>(storage: &'a CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("a fused CPU kernel got a non-contiguous tensor"),
    }
}

/// A tensor of `shape` from a buffer the kernels filled.
pub(super) fn tensor<T: Real>(data: Vec<T>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Fills `out` (rows of `d`) by `f(row index, output row)`, in parallel tasks of whole rows.
fn for_rows<T: Real>(out: &mut [T], d: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows_per_task = (TASK_ELEMENTS / d.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * d).enumerate().for_each(|(task, chunk)| {
        for (i, row) in chunk.chunks_exact_mut(d).enumerate() {
            f(task * rows_per_task + i, row);
        }
    });
}

fn wide<T: Real>(x: T) -> f64 {
    WithDType::to_f64(x)
}

fn narrow<T: Real>(x: f64) -> T {
    <T as WithDType>::from_f64(x)
}

fn zeros<T: Real>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `silu(g) ⊙ u`.
pub(super) fn swiglu<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
    let mut y = zeros(g.len());
    y.par_chunks_mut(TASK_ELEMENTS).enumerate().for_each(|(task, y)| {
        let start = task * TASK_ELEMENTS;
        for ((y, &g), &u) in y.iter_mut().zip(&g[start..]).zip(&u[start..]) {
            *y = g * sigmoid(g) * u;
        }
    });
    y
}

/// With s = σ(g): ∂/∂g = dy · u · s · (1 + g · (1 − s)), ∂/∂u = dy · g · s.
pub(super) fn swiglu_backward<T: Real>(g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut dg, mut du) = (zeros(g.len()), zeros(g.len()));
    dg.par_chunks_mut(TASK_ELEMENTS).zip(du.par_chunks_mut(TASK_ELEMENTS)).enumerate().for_each(|(task, (dg, du))| {
        let start = task * TASK_ELEMENTS;
        for (i, (dg, du)) in dg.iter_mut().zip(du).enumerate() {
            let (g, u, dy) = (g[start + i], u[start + i], dy[start + i]);
            let s = sigmoid(g);
            *dg = dy * u * s * (T::one() + g * (T::one() - s));
            *du = dy * g * s;
        }
    });
    (dg, du)
}

/// RMSNorm of rows of `d` with weight `w`, and each row's `1 / rms`.
pub(super) fn rms_norm<T: Real>(x: &[T], w: &[T], eps: f64, d: usize) -> (Vec<T>, Vec<T>) {
    let r: Vec<T> = x
        .par_chunks(d)
        .with_min_len((TASK_ELEMENTS / d.max(1)).max(1))
        .map(|xr| narrow::<T>(1.0 / (xr.iter().map(|&x| wide(x) * wide(x)).sum::<f64>() / d as f64 + eps).sqrt()))
        .collect();
    let mut y = zeros(x.len());
    for_rows(&mut y, d, |row, y| {
        for ((y, &x), &w) in y.iter_mut().zip(&x[row * d..(row + 1) * d]).zip(w) {
            *y = x * r[row] * w;
        }
    });
    (y, r)
}

/// With g' = g ⊙ w and r = 1/rms: dx = r · g' − x · r³ · mean(g' ⊙ x).
pub(super) fn rms_norm_backward<T: Real>(x: &[T], g: &[T], w: &[T], r: &[T], d: usize) -> Vec<T> {
    let mut dx = zeros(x.len());
    for_rows(&mut dx, d, |row, dx| {
        let (xr, gr, r) = (&x[row * d..(row + 1) * d], &g[row * d..(row + 1) * d], wide(r[row]));
        let dot: f64 = xr.iter().zip(gr).zip(w).map(|((&x, &g), &w)| wide(x) * wide(g) * wide(w)).sum();
        let (r, c) = (narrow::<T>(r), narrow::<T>(r * r * r * dot / d as f64));
        for (((dx, &x), &g), &w) in dx.iter_mut().zip(xr).zip(gr).zip(w) {
            *dx = r * g * w - c * x;
        }
    });
    dx
}

/// The gradient of the scores under [`causal_softmax`]: with `p` its probabilities
/// and `g` theirs, `scale · p ⊙ (g − Σ g ⊙ p)` over each row's unmasked columns
/// (the masked ones have `p = 0`, so their gradient is 0).
pub(super) fn causal_softmax_backward<T: Real>(p: &[T], g: &[T], t: usize, scale: f64) -> Vec<T> {
    let scale = narrow::<T>(scale);
    let mut dx = zeros(p.len());
    for_rows(&mut dx, t, |row, dx| {
        let seen = row % t + 1;
        let (pr, gr) = (&p[row * t..row * t + seen], &g[row * t..row * t + seen]);
        let along = narrow::<T>(pr.iter().zip(gr).map(|(&p, &g)| wide(p) * wide(g)).sum::<f64>());
        for ((dx, &p), &g) in dx.iter_mut().zip(pr).zip(gr) {
            *dx = scale * p * (g - along);
        }
    });
    dx
}

/// The RoPE input gradient (halves layout) for rows of `d` at positions
/// `row % seq`, with `cos`, `sin: [seq, d / 2]`: for j < d/2,
/// dx[j] = g[j] cos[j] + g[j + d/2] sin[j] and dx[j + d/2] = g[j + d/2] cos[j] − g[j] sin[j].
pub(super) fn rope_backward<T: Real>(g: &[T], cos: &[T], sin: &[T], seq: usize, d: usize) -> Vec<T> {
    let half = d / 2;
    let mut dx = zeros(g.len());
    for_rows(&mut dx, d, |row, dx| {
        let gr = &g[row * d..(row + 1) * d];
        let at = (row % seq) * half;
        let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
        for j in 0..half {
            dx[j] = gr[j] * c[j] + gr[j + half] * s[j];
            dx[j + half] = gr[j + half] * c[j] - gr[j] * s[j];
        }
    });
    dx
}

/// Softmax of `scale · s` over rows of `t` under a causal mask: row `r` holds the
/// scores of the query at position `r % t` (query heads stacked as rows), which sees
/// columns `0..=r % t`; the columns after it get probability 0.
pub(super) fn causal_softmax<T: Real>(s: &[T], t: usize, scale: f64) -> Vec<T> {
    let scale = narrow::<T>(scale);
    let mut p = zeros(s.len());
    for_rows(&mut p, t, |row, p| {
        let seen = row % t + 1;
        let sr = &s[row * t..row * t + seen];
        let max = sr.iter().fold(T::neg_infinity(), |m, &x| Float::max(m, x * scale));
        let mut sum = 0f64;
        for (p, &x) in p.iter_mut().zip(sr) {
            *p = (x * scale - max).exp();
            sum += wide(*p);
        }
        let inv = narrow::<T>(1.0 / sum);
        for p in &mut p[..seen] {
            *p *= inv;
        }
    });
    p
}

/// For rows of `vocab` logits and one label each: the negative log-likelihood of the
/// label and the row's log-sum-exp.
pub(super) fn nll<T: Real>(logits: &[T], labels: &[u32], vocab: usize) -> (Vec<T>, Vec<T>) {
    let lse: Vec<T> = logits
        .par_chunks(vocab)
        .with_min_len((TASK_ELEMENTS / vocab.max(1)).max(1))
        .map(|row| {
            let max = row.iter().fold(T::neg_infinity(), |m, &x| Float::max(m, x));
            let sum: f64 = row.iter().map(|&x| wide((x - max).exp())).sum();
            narrow::<T>(sum.ln()) + max
        })
        .collect();
    let nll = lse.iter().zip(labels).enumerate().map(|(i, (&lse, &label))| lse - logits[i * vocab + label as usize]).collect();
    (nll, lse)
}

/// The logits' gradient of [`nll`] for output gradient `g`: (softmax − onehot(label)) · g.
pub(super) fn nll_backward<T: Real>(logits: &[T], lse: &[T], labels: &[u32], g: &[T], vocab: usize) -> Vec<T> {
    let mut d = zeros(logits.len());
    for_rows(&mut d, vocab, |row, d| {
        for (d, &x) in d.iter_mut().zip(&logits[row * vocab..(row + 1) * vocab]) {
            *d = (x - lse[row]).exp() * g[row];
        }
        d[labels[row] as usize] -= g[row];
    });
    d
}
