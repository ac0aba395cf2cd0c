//! Fused operations with hand-written backward passes, where composing primitive ops
//! costs the most: RMSNorm and RoPE (several full-size intermediates per call, all
//! kept by the autograd graph), the attention core from scores to output (the
//! `[seq, seq]` scores and probabilities never enter the graph), SwiGLU's
//! `silu(gate) ⊙ up` (candle's silu backward alone is nine full-size ops), a frozen
//! linear layer with its per-example LoRA adapter, and the frozen LM head with
//! cross-entropy (full `[tokens, vocab]` logits and log-probabilities, 2 × 200 MB per
//! micro-batch at the SmolLM2 shape).
//!
//! Each op computes its forward value on detached tensors, with candle's fused
//! kernels or the row kernels of `fused::rows` (CPU), so no intermediate enters the
//! graph; it joins the graph through one custom-op node whose backward recomputes
//! or reuses what it needs. Every node costs candle's backward a zero-filled
//! gradient buffer and an addition, so fewer, larger nodes are faster as well as
//! smaller. The LM-head op works through the tokens in chunks, so the logits of at
//! most [`NLL_CHUNK`] tokens exist at once, forward or backward. Each op is checked
//! against its primitive-op composition and finite differences (`model::tests`).

mod rows;

use super::frozen::{input_gradient, FrozenLinear};
use super::Result;
use rows::Real;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor, D};

/// Tokens whose logits the fused LM head materialises at once.
pub const NLL_CHUNK: usize = 256;

type Backward = Box<dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// A graph node whose value was computed outside the graph: its forward hands
/// out a copy of `value`, its backward maps (input, output gradient) to the
/// input gradient.
struct Fused {
    name: &'static str,
    value: Tensor,
    backward: Backward,
}

impl Fused {
    /// Attaches `value` (a function of `input`) to the graph with `backward`.
    fn attach(name: &'static str, input: &Tensor, value: Tensor, backward: Backward) -> Result<Tensor> {
        let value = value.contiguous()?;
        Ok(input.apply_op1(Fused { name, value, backward })?)
    }
}

/// A copy of a precomputed value's buffer on the CPU, as a custom op's forward output.
fn cpu_value(name: &str, value: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let (storage, layout) = value.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => copy_value(name, s, layout),
        _ => candle_core::bail!("{name}: the value is not on the CPU"),
    }
}

/// The same on the GPU.
fn cuda_value(name: &str, value: &Tensor) -> candle_core::Result<(CudaStorage, Shape)> {
    let (storage, layout) = value.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => copy_value(name, s, layout),
        _ => candle_core::bail!("{name}: the value is not on the GPU"),
    }
}

fn copy_value<S: BackendStorage>(name: &str, storage: &S, layout: &Layout) -> candle_core::Result<(S, Shape)> {
    // A backend clones the whole buffer: the value must be all of it.
    if layout.start_offset() != 0 || !layout.is_contiguous() {
        candle_core::bail!("{name}: the value is a view, not a buffer of its own");
    }
    Ok((storage.try_clone(layout)?, layout.shape().clone()))
}

impl CustomOp1 for Fused {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_value(self.name, &self.value)
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_value(self.name, &self.value)
    }

    fn bwd(&self, input: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some((self.backward)(&input.detach(), &grad.detach())?))
    }
}

/// `1 / sqrt(mean(x²) + eps)` over the last dimension, keeping it.
fn inv_rms(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()
}

/// Whether the row kernels serve this tensor (CPU, f32 or f64).
fn on_rows(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The f32 or f64 instance of a generic row-kernel wrapper, by the tensor's type
/// (callers have checked [`on_rows`]).
macro_rules! by_dtype {
    ($t:expr, $kernel:ident) => {
        match $t.dtype() {
            DType::F32 => $kernel::<f32>,
            _ => $kernel::<f64>,
        }
    };
}

/// RMSNorm `x / sqrt(mean(x²) + eps) · w` over the last dimension, with `w` frozen:
/// the gradient flows to `x` only.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let weight = weight.detach().contiguous()?;
    let xd = x.detach().contiguous()?;
    let (value, r) = if on_rows(&xd) {
        by_dtype!(xd, rms_norm_rows)(&xd, &weight, eps)?
    } else {
        (candle_nn::ops::rms_norm(&xd, &weight, eps as f32)?, inv_rms(&xd, eps)?)
    };
    let backward: Backward = Box::new(move |x, grad| {
        if on_rows(x) {
            return by_dtype!(x, rms_norm_backward_rows)(x, &grad.contiguous()?, &weight, &r);
        }
        // With g' = g ⊙ w: dx = r · g' − x · r³ · mean(g' ⊙ x), r = 1/rms kept from forward.
        let gw = grad.broadcast_mul(&weight)?;
        let along = ((&gw * x)?.mean_keepdim(D::Minus1)? * r.sqr()?)?;
        (gw - x.broadcast_mul(&along)?)?.broadcast_mul(&r)
    });
    Fused::attach("fused-rms-norm", x, value, backward)
}

fn rms_norm_rows<T: Real>(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let d = x.dim(D::Minus1)?;
    let (y, r) = rows::with_slice::<T, _>(x, |xs| rows::with_slice::<T, _>(weight, |w| rows::rms_norm(xs, w, eps, d)))??;
    let mut r_shape = x.dims().to_vec();
    *r_shape.last_mut().expect("a row dimension") = 1;
    Ok((rows::tensor(y, x.dims())?, rows::tensor(r, &r_shape)?))
}

fn rms_norm_backward_rows<T: Real>(x: &Tensor, grad: &Tensor, weight: &Tensor, r: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let dx = rows::with_slice::<T, _>(x, |xs| {
        rows::with_slice::<T, _>(grad, |g| {
            rows::with_slice::<T, _>(weight, |w| rows::with_slice::<T, _>(r, |r| rows::rms_norm_backward(xs, g, w, r, d)))
        })
    })????;
    rows::tensor(dx, x.dims())
}

/// The three input gradients of an op from its output gradient.
type Backward3 = Box<dyn Fn(&Tensor) -> candle_core::Result<[Tensor; 3]> + Send + Sync>;

/// [`Fused`] for an op of three inputs.
struct Fused3 {
    name: &'static str,
    value: Tensor,
    backward: Backward3,
}

impl CustomOp3 for Fused3 {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_value(self.name, &self.value)
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_value(self.name, &self.value)
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [a, b, c] = (self.backward)(&grad.detach())?;
        Ok((Some(a), Some(b), Some(c)))
    }
}

/// The causal attention core `softmax(q · kᵀ · scale + causal mask) · v` for `q:
/// [batch, kv_heads, rows, d]` (the query heads of each key/value group stacked as
/// rows, `rows` a multiple of `t`, row `r` the query at position `r % t`) and `k`, `v:
/// [batch, kv_heads, t, d]`, as one graph node: the `[rows, t]` scores and probabilities
/// (the largest activations of a layer) never enter the graph, where each would cost a
/// gradient buffer. On the CPU the scaling, mask and softmax are one pass over the
/// unmasked half of each row.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (qd, kd, vd) = (q.detach().contiguous()?, k.detach().contiguous()?, v.detach().contiguous()?);
    let scores = qd.matmul(&kd.t()?)?;
    let p = if on_rows(&scores) {
        by_dtype!(scores, causal_softmax_rows)(&scores, scale)?
    } else {
        let (rows, t) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
        let mask: Vec<f32> = (0..rows).flat_map(|r| (0..t).map(move |c| if c <= r % t { 0.0 } else { f32::NEG_INFINITY })).collect();
        let mask = Tensor::from_vec(mask, (rows, t), scores.device())?.to_dtype(scores.dtype())?;
        candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(&mask)?)?
    };
    let value = p.matmul(&vd)?;
    // With P the probabilities and dO the output gradient: dV = Pᵀ dO, dP = dO Vᵀ,
    // dS = scale · P ⊙ (dP − Σ dP ⊙ P), dQ = dS K, dK = dSᵀ Q.
    let backward: Backward3 = Box::new(move |dout| {
        let dout = dout.contiguous()?;
        let dv = p.t()?.matmul(&dout)?;
        let dp = dout.matmul(&vd.t()?)?;
        let ds = if on_rows(&p) {
            by_dtype!(p, causal_softmax_backward_rows)(&p, &dp, scale)?
        } else {
            let along = (&dp * &p)?.sum_keepdim(D::Minus1)?;
            ((&p * dp.broadcast_sub(&along)?)? * scale)?
        };
        Ok([ds.matmul(&kd)?, ds.t()?.matmul(&qd)?, dv])
    });
    let name = "fused-causal-attention";
    Ok(q.apply_op3(k, v, Fused3 { name, value: value.contiguous()?, backward })?)
}

fn causal_softmax_rows<T: Real>(scores: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let t = scores.dim(D::Minus1)?;
    let p = rows::with_slice::<T, _>(scores, |s| rows::causal_softmax(s, t, scale))?;
    rows::tensor(p, scores.dims())
}

/// A frozen linear layer with a per-example LoRA adapter, `x · Wᵀ (+ b) + scale ·
/// (x · Aᵢᵀ) · Bᵢᵀ` for `x: [batch, seq, in]`, `a: [batch, r, in]`, `b: [batch, out, r]`
/// (example `i` through copy `i`), as one graph node: the rank-r intermediate, the
/// adapter's output and the sum would otherwise each be a node with a gradient buffer.
pub fn per_example_lora(x: &Tensor, linear: &FrozenLinear, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let (xd, ad, bd) = (x.detach().contiguous()?, a.detach().contiguous()?, b.detach().contiguous()?);
    let h = (xd.matmul(&ad.t()?)? * scale)?;
    let value = (linear.forward(&xd)? + h.matmul(&bd.t()?)?)?;
    let weight = linear.weight().clone();
    // With dY the output gradient and G = scale · dY · Bᵢ: dBᵢ = dYᵀ · H, dAᵢ = Gᵀ · x,
    // dx = dY · W + G · Aᵢ, where H = scale · x · Aᵢᵀ (kept from the forward pass).
    let backward: Backward3 = Box::new(move |dy| {
        let dy = dy.contiguous()?;
        let g = (dy.matmul(&bd)? * scale)?;
        let db = dy.t()?.matmul(&h)?;
        let da = g.t()?.matmul(&xd)?;
        let dx = (input_gradient(&weight, &dy, xd.dims())? + g.matmul(&ad)?)?;
        Ok([dx, da, db])
    });
    let name = "fused-per-example-lora";
    Ok(x.apply_op3(a, b, Fused3 { name, value: value.contiguous()?, backward })?)
}

fn causal_softmax_backward_rows<T: Real>(p: &Tensor, grad: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let t = p.dim(D::Minus1)?;
    let dx = rows::with_slice::<T, _>(p, |ps| rows::with_slice::<T, _>(grad, |g| rows::causal_softmax_backward(ps, g, t, scale)))??;
    rows::tensor(dx, p.dims())
}

/// Rotary embedding, halves layout (Hugging Face's `rotate_half`), of
/// `x: [batch, heads, seq, head_dim]` with `cos`, `sin: [seq, head_dim / 2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let value = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, cos, sin)?;
    let (cos, sin) = (cos.detach().contiguous()?, sin.detach().contiguous()?);
    // y = x ⊙ c + rotate_half(x) ⊙ s, and rotate_half's transpose is −rotate_half:
    // dx = g ⊙ c − rotate_half(g ⊙ s), with c and s the tables repeated over both halves.
    let backward: Backward = Box::new(move |_, grad| {
        if on_rows(grad) {
            return by_dtype!(grad, rope_backward_rows)(&grad.contiguous()?, &cos, &sin);
        }
        let c = Tensor::cat(&[&cos, &cos], D::Minus1)?;
        let s = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let gs = grad.broadcast_mul(&s)?;
        let half = gs.dim(D::Minus1)? / 2;
        let rotated = Tensor::cat(&[&gs.narrow(D::Minus1, half, half)?.neg()?, &gs.narrow(D::Minus1, 0, half)?], D::Minus1)?;
        grad.broadcast_mul(&c)? - rotated
    });
    Fused::attach("fused-rope", x, value, backward)
}

fn rope_backward_rows<T: Real>(grad: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (seq, d) = (grad.dim(D::Minus2)?, grad.dim(D::Minus1)?);
    let dx = rows::with_slice::<T, _>(grad, |g| {
        rows::with_slice::<T, _>(cos, |c| rows::with_slice::<T, _>(sin, |s| rows::rope_backward(g, c, s, seq, d)))
    })???;
    rows::tensor(dx, grad.dims())
}

/// Log-sum-exp of each row of `logits: [n, vocab]`, shape `[n]`.
fn log_sum_exp(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?.squeeze(D::Minus1)
}

/// The negative log-likelihood of `labels: [n]` (u32) under the logits `hidden · Wᵀ`
/// of a frozen LM head `W: [vocab, d]`, for `hidden: [n, d]`; shape `[n]`. Equal to
/// `-log_softmax(hidden · Wᵀ).gather(labels)`, without ever holding more than
/// [`NLL_CHUNK`] rows of logits.
pub fn frozen_head_nll(hidden: &Tensor, weight: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let weight = weight.detach();
    let labels = labels.to_dtype(DType::U32)?.detach();
    let vocab = weight.dim(0)?;
    let label_list = labels.to_vec1::<u32>()?;
    if let Some(bad) = label_list.iter().find(|&&l| l as usize >= vocab) {
        return Err(super::ModelError::BadInput { field: "labels", reason: format!("token {bad} is outside the vocabulary of {vocab}") });
    }
    let h = hidden.detach();
    let n = h.dim(0)?;
    let chunks = move || (0..n).step_by(NLL_CHUNK).map(move |start| (start, NLL_CHUNK.min(n - start)));
    let logits_of = {
        let weight = weight.clone();
        move |h: &Tensor, start: usize, len: usize| h.narrow(0, start, len)?.matmul(&weight.t()?)
    };
    let (mut nll, mut lse) = (Vec::new(), Vec::new());
    for (start, len) in chunks() {
        let logits = logits_of(&h, start, len)?;
        let chunk_labels = &label_list[start..start + len];
        let (chunk_nll, chunk_lse) = if on_rows(&logits) {
            by_dtype!(logits, nll_rows)(&logits, chunk_labels)?
        } else {
            let chunk_lse = log_sum_exp(&logits)?;
            let picked = logits.gather(&labels.narrow(0, start, len)?.unsqueeze(1)?, 1)?.squeeze(1)?;
            ((&chunk_lse - picked)?, chunk_lse)
        };
        nll.push(chunk_nll);
        lse.push(chunk_lse);
    }
    let value = Tensor::cat(&nll, 0)?;
    let lse = Tensor::cat(&lse, 0)?;
    let backward: Backward = Box::new(move |h, grad| {
        // d nll / d logits = softmax(logits) − onehot(label); then through the head.
        let mut dh = Vec::new();
        for (start, len) in chunks() {
            let logits = logits_of(h, start, len)?;
            let (chunk_lse, chunk_grad) = (lse.narrow(0, start, len)?, grad.narrow(0, start, len)?.contiguous()?);
            let dlogits = if on_rows(&logits) {
                by_dtype!(logits, nll_backward_rows)(&logits, &chunk_lse, &label_list[start..start + len], &chunk_grad)?
            } else {
                let probs = logits.broadcast_sub(&chunk_lse.unsqueeze(1)?)?.exp()?;
                let minus_one = Tensor::full(-1f64, (len, 1), h.device())?.to_dtype(h.dtype())?;
                let dlogits = probs.scatter_add(&labels.narrow(0, start, len)?.unsqueeze(1)?, &minus_one, 1)?;
                dlogits.broadcast_mul(&chunk_grad.unsqueeze(1)?)?
            };
            dh.push(dlogits.matmul(&weight)?);
        }
        Tensor::cat(&dh, 0)
    });
    Fused::attach("fused-frozen-head-nll", hidden, value, backward)
}

fn nll_rows<T: Real>(logits: &Tensor, labels: &[u32]) -> candle_core::Result<(Tensor, Tensor)> {
    let vocab = logits.dim(1)?;
    let (nll, lse) = rows::with_slice::<T, _>(logits, |l| rows::nll(l, labels, vocab))?;
    Ok((rows::tensor(nll, &[labels.len()])?, rows::tensor(lse, &[labels.len()])?))
}

fn nll_backward_rows<T: Real>(logits: &Tensor, lse: &Tensor, labels: &[u32], grad: &Tensor) -> candle_core::Result<Tensor> {
    let vocab = logits.dim(1)?;
    let d = rows::with_slice::<T, _>(logits, |l| {
        rows::with_slice::<T, _>(lse, |lse| rows::with_slice::<T, _>(grad, |g| rows::nll_backward(l, lse, labels, g, vocab)))
    })???;
    rows::tensor(d, logits.dims())
}

/// SwiGLU's gating, `silu(gate) ⊙ up` elementwise, for `gate` and `up` of one shape.
/// On the CPU one pass forward and one backward (one `exp` per element each); on
/// other devices candle's composition.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if on_rows(gate) {
        Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?)
    } else {
        Ok((candle_nn::ops::silu(gate)? * up)?)
    }
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, u: &CpuStorage, ul: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            candle_core::bail!("fused-swiglu: gate {:?} and up {:?} differ in shape", gl.shape(), ul.shape());
        }
        let out = match (g, u) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(rows::swiglu::<f32>(rows::slice(g, gl)?, rows::slice(u, ul)?)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(rows::swiglu::<f64>(rows::slice(g, gl)?, rows::slice(u, ul)?)),
            _ => candle_core::bail!("fused-swiglu: gate and up must both be f32 or both f64"),
        };
        Ok((out, gl.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = by_dtype!(g, swiglu_backward_rows)(g, u, &dy.contiguous()?)?;
        Ok((Some(dg), Some(du)))
    }
}

fn swiglu_backward_rows<T: Real>(g: &Tensor, u: &Tensor, dy: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (dg, du) = rows::with_slice::<T, _>(g, |g| {
        rows::with_slice::<T, _>(u, |u| rows::with_slice::<T, _>(dy, |dy| rows::swiglu_backward(g, u, dy)))
    })???;
    Ok((rows::tensor(dg, g.dims())?, rows::tensor(du, g.dims())?))
}
