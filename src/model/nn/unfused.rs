//! The fused CPU kernels' operations written as candle's standard ops, differentiated by
//! candle's autograd: the path a tensor on another device (CUDA) takes, and the reference the
//! kernel tests compare the fused kernels against (attention's is composed of these in
//! `attention::composed_attention`). Same masking rules: a query row with no
//! usable key gets zero probabilities; dropout uses the fused kernel's mask (a function of the
//! seed and the element index, drawn on the host), so a seed drops the same elements on every
//! device.

use super::fused::{AdamWStep, Dropout, GateActivation, MASKED};
use candle_core::{DType, Device, Result, Tensor, D};

/// `softmax(scale * scores + bias)` over the last axis, rows whose keys are all masked 0.
pub(super) fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let s = (scores * scale)?.broadcast_add(bias)?;
    let max = s.max_keepdim(D::Minus1)?.detach();
    let e = s.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let usable = bias
        .ge(MASKED)?
        .to_dtype(p.dtype())?
        .max_keepdim(D::Minus1)?;
    p.broadcast_mul(&usable)
}

/// `silu(a) * b`.
pub(super) fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.silu()? * b
}

/// Layer normalisation over the last axis (biased variance), affine.
pub(super) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// `x * mask`, the mask of `x`'s shape or one value per row; no gradient to the mask.
pub(super) fn mask_mul(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&mask.detach())
}

/// Inverted dropout with the fused kernel's mask: drawn on the host (the kernel applied to
/// ones gives each element's `1 / (1 - p)` or 0), moved to `x`'s device.
pub(super) fn dropout(x: &Tensor, op: Dropout) -> Result<Tensor> {
    let mask = Tensor::ones(x.shape(), x.dtype(), &Device::Cpu)?
        .apply_op1_no_bwd(&op)?
        .to_device(x.device())?;
    x * mask
}

/// Sampled-softmax NLL per position: gather each position's row of `neg`, put the positive
/// first, scale by `1 / t`, `logsumexp - z[0]`.
pub(super) fn sampled_softmax_nll(
    pos: &Tensor,
    neg: &Tensor,
    rows: Option<&Tensor>,
    temperature: f64,
) -> Result<Tensor> {
    let picked = match rows {
        Some(r) => neg.index_select(&r.to_dtype(DType::U32)?, 0)?,
        None => neg.clone(),
    };
    let logits = (Tensor::cat(&[&pos.unsqueeze(1)?, &picked], 1)? / temperature)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .broadcast_add(&max)?;
    (lse - logits.narrow(1, 0, 1)?)?.squeeze(1)
}

/// `a @ b` over the last two axes.
pub(super) fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.matmul(b)
}

/// `x W^T (+ b)` over the last axis of `x`, any leading shape.
pub(super) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let (rows, d_in) = match dims.split_last() {
        Some((&d, lead)) => (lead.iter().product::<usize>(), d),
        None => candle_core::bail!("linear: input is a scalar"),
    };
    let mut y = x.reshape((rows, d_in))?.matmul(&weight.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out = dims.to_vec();
    *out.last_mut().expect("checked above") = weight.dim(0)?;
    y.reshape(out)
}

/// `x + act(pre) * v`, the sigmoid as `1 / (e^-pre + 1)`.
pub(super) fn gated_residual(
    x: &Tensor,
    pre: &Tensor,
    v: &Tensor,
    act: GateActivation,
) -> Result<Tensor> {
    let gate = match act {
        GateActivation::Sigmoid => (pre.neg()?.exp()? + 1.0)?.recip()?,
        GateActivation::Tanh => pre.tanh()?,
    };
    x + gate.mul(v)?
}

/// One AdamW step as candle ops: the new parameter, first and second moments.
pub(super) fn adamw_update(
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    s: AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = ((m * s.beta1)? + (grad * (1.0 - s.beta1))?)?;
    let v = ((v * s.beta2)? + (grad.sqr()? * (1.0 - s.beta2))?)?;
    let denom = ((&v / s.bias_correction2)?.sqrt()? + s.eps)?;
    let update = ((&m / s.bias_correction1)? / denom)?;
    let decayed = (param * (1.0 - s.lr * s.weight_decay))?;
    Ok(((decayed - (update * s.lr)?)?, m, v))
}
