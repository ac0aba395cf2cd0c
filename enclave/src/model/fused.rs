//! Fused operations with hand-written backward passes, where composing primitive ops
//! costs the most: RMSNorm and RoPE (several full-size intermediates per call, all
//! kept by the autograd graph), the attention softmax, and the frozen LM head with
//! cross-entropy (full `[tokens, vocab]` logits and log-probabilities, 2 × 200 MB per
//! micro-batch at the SmolLM2 shape).
//!
//! Each op computes its forward value on detached tensors, with candle's fused
//! kernels where they exist (those have no backward pass of their own), so no
//! intermediate enters the graph; it joins the graph through one [`CustomOp1`] node
//! whose backward recomputes what it needs. The LM-head op works through the tokens in chunks, so
//! the logits of at most [`NLL_CHUNK`] tokens exist at once, forward or backward.
//! Both are checked against their primitive-op compositions and finite differences
//! (`model::tests`).

use super::Result;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};

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

    fn copy<S: BackendStorage>(&self, storage: &S, layout: &Layout) -> candle_core::Result<(S, Shape)> {
        // A backend clones the whole buffer: the value must be all of it.
        if layout.start_offset() != 0 || !layout.is_contiguous() {
            candle_core::bail!("{}: the value is a view, not a buffer of its own", self.name);
        }
        Ok((storage.try_clone(layout)?, layout.shape().clone()))
    }
}

impl CustomOp1 for Fused {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => self.copy(s, layout),
            _ => candle_core::bail!("{}: the value is not on the CPU", self.name),
        }
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (storage, layout) = self.value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => self.copy(s, layout),
            _ => candle_core::bail!("{}: the value is not on the GPU", self.name),
        }
    }

    fn bwd(&self, input: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some((self.backward)(&input.detach(), &grad.detach())?))
    }
}

/// `1 / sqrt(mean(x²) + eps)` over the last dimension, keeping it.
fn inv_rms(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()
}

/// RMSNorm `x / sqrt(mean(x²) + eps) · w` over the last dimension, with `w` frozen:
/// the gradient flows to `x` only.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let weight = weight.detach();
    let xd = x.detach().contiguous()?;
    let (value, r) = match (xd.device(), xd.dtype()) {
        (candle_core::Device::Cpu, DType::F32) => rms_norm_rows::<f32>(&xd, &weight, eps)?,
        (candle_core::Device::Cpu, DType::F64) => rms_norm_rows::<f64>(&xd, &weight, eps)?,
        _ => (candle_nn::ops::rms_norm(&xd, &weight, eps as f32)?, inv_rms(&xd, eps)?),
    };
    let backward: Backward = Box::new(move |x, grad| {
        // With g' = g ⊙ w: dx = r · g' − x · r³ · mean(g' ⊙ x), r = 1/rms kept from forward.
        match (x.device(), x.dtype()) {
            (candle_core::Device::Cpu, DType::F32) => rms_norm_backward_rows::<f32>(x, grad, &weight, &r),
            (candle_core::Device::Cpu, DType::F64) => rms_norm_backward_rows::<f64>(x, grad, &weight, &r),
            // Elsewhere, the same formula in tensor ops.
            _ => {
                let gw = grad.broadcast_mul(&weight)?;
                let along = ((&gw * x)?.mean_keepdim(D::Minus1)? * r.sqr()?)?;
                (gw - x.broadcast_mul(&along)?)?.broadcast_mul(&r)
            }
        }
    });
    Fused::attach("fused-rms-norm", x, value, backward)
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let probs = candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)?;
    let p = probs.clone();
    // dx = p ⊙ (g − Σ g ⊙ p), the softmax Jacobian applied to g.
    let backward: Backward = Box::new(move |_, grad| {
        let along = (grad * &p)?.sum_keepdim(D::Minus1)?;
        &p * grad.broadcast_sub(&along)?
    });
    Fused::attach("fused-softmax", x, probs, backward)
}

/// Rotary embedding, halves layout (Hugging Face's `rotate_half`), of
/// `x: [batch, heads, seq, head_dim]` with `cos`, `sin: [seq, head_dim / 2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let value = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, cos, sin)?;
    let (cos, sin) = (cos.detach(), sin.detach());
    // y = x ⊙ c + rotate_half(x) ⊙ s, and rotate_half's transpose is −rotate_half:
    // dx = g ⊙ c − rotate_half(g ⊙ s), with c and s the tables repeated over both halves.
    let backward: Backward = Box::new(move |_, grad| {
        let c = Tensor::cat(&[&cos, &cos], D::Minus1)?;
        let s = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let gs = grad.broadcast_mul(&s)?;
        let half = gs.dim(D::Minus1)? / 2;
        let rotated = Tensor::cat(&[&gs.narrow(D::Minus1, half, half)?.neg()?, &gs.narrow(D::Minus1, 0, half)?], D::Minus1)?;
        grad.broadcast_mul(&c)? - rotated
    });
    Fused::attach("fused-rope", x, value, backward)
}

/// RMSNorm and each row's `1 / rms` (shape `[..., 1]`), in one pass over each row.
fn rms_norm_rows<T: candle_core::WithDType>(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let d = x.dim(D::Minus1)?;
    let (xs, w) = (x.flatten_all()?.to_vec1::<T>()?, weight.to_vec1::<T>()?);
    let mut y = Vec::with_capacity(xs.len());
    let mut rs = Vec::with_capacity(xs.len() / d.max(1));
    for xr in xs.chunks_exact(d) {
        let r = 1.0 / (xr.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>() / d as f64 + eps).sqrt();
        y.extend(xr.iter().zip(&w).map(|(x, w)| T::from_f64(x.to_f64() * r * w.to_f64())));
        rs.push(T::from_f64(r));
    }
    let mut r_shape = x.dims().to_vec();
    *r_shape.last_mut().expect("a row dimension") = 1;
    Ok((Tensor::from_vec(y, x.shape(), x.device())?, Tensor::from_vec(rs, r_shape, x.device())?))
}

/// The RMSNorm input gradient row by row, in one pass over each row (the tensor-op
/// form makes seven passes over full-size tensors).
fn rms_norm_backward_rows<T: candle_core::WithDType>(x: &Tensor, grad: &Tensor, weight: &Tensor, r: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let (xs, gs) = (x.flatten_all()?.to_vec1::<T>()?, grad.contiguous()?.flatten_all()?.to_vec1::<T>()?);
    let (w, r) = (weight.to_vec1::<T>()?, r.flatten_all()?.to_vec1::<T>()?);
    let mut dx = Vec::with_capacity(xs.len());
    for ((xr, gr), r) in xs.chunks_exact(d).zip(gs.chunks_exact(d)).zip(r) {
        let r = r.to_f64();
        let dot: f64 = xr.iter().zip(gr).zip(&w).map(|((x, g), w)| x.to_f64() * g.to_f64() * w.to_f64()).sum();
        let c = r * r * r * dot / d as f64;
        dx.extend(xr.iter().zip(gr).zip(&w).map(|((x, g), w)| T::from_f64(r * g.to_f64() * w.to_f64() - c * x.to_f64())));
    }
    Tensor::from_vec(dx, x.shape(), x.device())
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
    let h = hidden.detach();
    let n = h.dim(0)?;
    let (mut nll, mut lse) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(NLL_CHUNK) {
        let len = NLL_CHUNK.min(n - start);
        let logits = h.narrow(0, start, len)?.matmul(&weight.t()?)?;
        let chunk_lse = log_sum_exp(&logits)?;
        let picked = logits.gather(&labels.narrow(0, start, len)?.unsqueeze(1)?, 1)?.squeeze(1)?;
        nll.push((&chunk_lse - picked)?);
        lse.push(chunk_lse);
    }
    let value = Tensor::cat(&nll, 0)?;
    let lse = Tensor::cat(&lse, 0)?;
    let backward: Backward = Box::new(move |h, grad| {
        // d nll / d logits = softmax(logits) − onehot(label); then through the head.
        let mut dh = Vec::new();
        for start in (0..h.dim(0)?).step_by(NLL_CHUNK) {
            let len = NLL_CHUNK.min(h.dim(0)? - start);
            let logits = h.narrow(0, start, len)?.matmul(&weight.t()?)?;
            let probs = logits.broadcast_sub(&lse.narrow(0, start, len)?.unsqueeze(1)?)?.exp()?;
            let minus_one = Tensor::full(-1f64, (len, 1), h.device())?.to_dtype(h.dtype())?;
            let dlogits = probs.scatter_add(&labels.narrow(0, start, len)?.unsqueeze(1)?, &minus_one, 1)?;
            let dlogits = dlogits.broadcast_mul(&grad.narrow(0, start, len)?.unsqueeze(1)?)?;
            dh.push(dlogits.matmul(&weight)?);
        }
        Tensor::cat(&dh, 0)
    });
    Fused::attach("fused-frozen-head-nll", hidden, value, backward)
}
