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
        let (_, in_dim) = self.weight.dims2()?;
        let Some(&last) = dims.last() else {
            return Err(ModelError::BadInput { field: "x", reason: "a scalar cannot go through a linear layer".into() });
        };
        if last != in_dim {
            return Err(ModelError::BadInput {
                field: "x",
                reason: format!("last dimension {last} does not match the layer's input width {in_dim}"),
            });
        }
        // One graph node: the op reads `[..., in]` as rows itself, where reshapes
        // around it would add two nodes (each a gradient buffer) per layer.
        let y = x.contiguous()?.apply_op1(FrozenMatmul { weight: self.weight.clone() })?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }
}

/// `∂L/∂x = ∂L/∂y · W` for `y = x · Wᵀ`, with `x` of shape `x_dims` (`[..., in]`).
pub(crate) fn input_gradient(weight: &Tensor, grad_y: &Tensor, x_dims: &[usize]) -> candle_core::Result<Tensor> {
    let n = weight.dim(0)?;
    let rows = grad_y.elem_count() / n.max(1);
    grad_y.reshape((rows, n))?.matmul(weight)?.reshape(x_dims)
}

/// The custom op behind [`FrozenLinear`]: `[..., k] → [..., n]` (contiguous input)
/// with a captured `[n, k]` weight.
struct FrozenMatmul {
    weight: Tensor,
}

impl FrozenMatmul {
    fn fwd<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
        let Some((&k, lead)) = xl.dims().split_last() else { candle_core::bail!("frozen-matmul: a scalar input") };
        let (n, k_w) = wl.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen-matmul: input width {k} but weight is [{n}, {k_w}]");
        }
        if !xl.is_contiguous() {
            candle_core::bail!("frozen-matmul: the input is not contiguous");
        }
        let m = lead.iter().product();
        // The same call, with the same layouts, as `x.matmul(&w.t())` on the rows:
        // bit-identical output.
        let rows = Layout::contiguous_with_offset((m, k), xl.start_offset());
        let out = x.matmul(w, (1, m, n, k), &rows, &wl.transpose(0, 1)?)?;
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok((out, Shape::from(shape)))
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

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(input_gradient(&self.weight, grad_y, x.dims())?))
    }
}
