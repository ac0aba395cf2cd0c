//! Frozen base linear layers.
//!
//! candle's matmul backward computes the gradient of both operands, even when one is a
//! constant: for frozen base weights that is a full-size weight gradient per layer (for
//! the 49152x576 LM head alone, 113 MB per step) and about a quarter of the step time.
//! [`FrozenLinear`] runs the same matmul as a custom op whose backward returns only
//! the input gradient `grad · W`.

use super::{ModelError, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// `x ↦ x · Wᵀ (+ b)` with `W` frozen: gradients flow to `x` only.
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl FrozenLinear {
    /// A layer from a weight of shape `[out, in]` (PyTorch's `nn.Linear` layout) and an
    /// optional bias of shape `[out]`. Both are detached from any graph.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        if let Some(b) = &bias {
            if b.dims() != [out_dim] {
                return Err(ModelError::BadInput {
                    field: "bias",
                    reason: format!("shape {:?} does not match {out_dim} outputs", b.dims()),
                });
            }
        }
        Ok(FrozenLinear {
            weight: weight.detach().contiguous()?,
            bias: bias.map(|b| b.detach()),
        })
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Applies the layer to `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let (out_dim, in_dim) = self.weight.dims2()?;
        let Some((&last, lead)) = dims.split_last() else {
            return Err(ModelError::BadInput { field: "x", reason: "a scalar cannot go through a linear layer".into() });
        };
        if last != in_dim {
            return Err(ModelError::BadInput {
                field: "x",
                reason: format!("last dimension {last} does not match the layer's input width {in_dim}"),
            });
        }
        let rows: usize = lead.iter().product();
        let x2 = x.contiguous()?.reshape((rows, in_dim))?;
        let y = x2.apply_op1(FrozenMatmul { weight: self.weight.clone() })?;
        let mut out_shape = lead.to_vec();
        out_shape.push(out_dim);
        let y = y.reshape(out_shape)?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }
}

/// The custom op behind [`FrozenLinear`]: `[m, k] → [m, n]` with a captured `[n, k]` weight.
struct FrozenMatmul {
    weight: Tensor,
}

impl FrozenMatmul {
    fn fwd<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k_w) = wl.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen-matmul: input width {k} but weight is [{n}, {k_w}]");
        }
        // The same call, with the same layouts, as `x.matmul(&w.t())`: bit-identical output.
        let out = x.matmul(w, (1, m, n, k), xl, &wl.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (w, wl) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cpu(w) => self.fwd(x, xl, w, wl),
            _ => candle_core::bail!("frozen-matmul: the weight is not on the CPU"),
        }
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (w, wl) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cuda(w) => self.fwd(x, xl, w, wl),
            _ => candle_core::bail!("frozen-matmul: the weight is not on the GPU"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight)?))
    }
}
