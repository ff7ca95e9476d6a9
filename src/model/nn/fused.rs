//! Fused CPU kernels for the elementwise chains that dominate a training step at the
//! study's widths, each with an analytic backward: the masked attention softmax (scale, mask
//! bias, max, exp, sum, divide, zero the rows without a key: eight candle ops and their
//! buffers, and about twice as many in the backward pass), the SwiGLU gate `silu(a) * b`, layer
//! normalisation (nine ops forward, about thirty backward) and the product with a constant
//! mask (candle's backward also differentiates a binary op's constant side: three wasted
//! full-size passes per padding mask). Dropout draws its mask from a counter-based hash of
//! (seed, element index), so it is generated in parallel and recomputed in the backward pass
//! instead of stored. One pass over the data instead of one per op. f32 and f64 (the gradient checks run in f64); inputs are made contiguous first.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use num_traits::Float;
use rayon::prelude::*;

/// Rows per parallel task: small rows make per-task overhead dominate.
const ROWS_PER_TASK: usize = 64;
/// Elements per parallel task of the elementwise kernels.
const ELEMS_PER_TASK: usize = 4096;

/// A bias at or below this marks a key a query may not use (`AttnMask` writes -1e9).
const MASKED: f64 = -1e8;

fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

/// The element type of the kernels.
trait Elem: Float + WithDType + Send + Sync {}
impl<T: Float + WithDType + Send + Sync> Elem for T {}

/// A fused kernel over inputs of one float dtype; [`run_f32_f64`] runs it for f32 and f64.
trait Kernel {
    /// `inputs` are the contiguous data of the op's arguments, `layouts` their layouts; the
    /// output has the first argument's shape.
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>>;

    /// The output's shape (the first argument's unless the kernel says otherwise).
    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        layouts[0].shape().clone()
    }
}

/// The CPU forward pass of a [`Kernel`] over `args` (storage, layout) pairs of one dtype.
fn run_f32_f64<K: Kernel>(
    name: &str,
    kernel: &K,
    args: &[(&CpuStorage, &Layout)],
) -> Result<(CpuStorage, Shape)> {
    fn data<'a, T: WithDType>(args: &[(&'a CpuStorage, &Layout)]) -> Result<Vec<&'a [T]>> {
        args.iter().map(|(s, l)| contiguous::<T>(s, l)).collect()
    }
    let layouts: Vec<&Layout> = args.iter().map(|(_, l)| *l).collect();
    let dtypes: Vec<_> = args.iter().map(|(s, _)| s.dtype()).collect();
    if dtypes.windows(2).any(|w| w[0] != w[1]) {
        bail!("{name}: inputs of different dtypes {dtypes:?}");
    }
    let out = match args[0].0 {
        CpuStorage::F32(_) => CpuStorage::F32(kernel.run(&data::<f32>(args)?, &layouts)?),
        CpuStorage::F64(_) => CpuStorage::F64(kernel.run(&data::<f64>(args)?, &layouts)?),
        _ => bail!("{name}: f32 or f64 inputs, got {:?}", dtypes[0]),
    };
    Ok((out, kernel.out_shape(&layouts)))
}

/// `f(a[i], b[i])` elementwise, in parallel.
fn zip_map<T: Elem>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(ELEMS_PER_TASK)
        .zip(
            a.par_chunks(ELEMS_PER_TASK)
                .zip(b.par_chunks(ELEMS_PER_TASK)),
        )
        .for_each(|(o, (a, b))| {
            for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
                *o = f(a, b);
            }
        });
    out
}

/// `f(row index, output row)` for every row of length `k` of a `len`-element output, in
/// parallel.
fn map_rows<T: Elem>(len: usize, k: usize, f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); len];
    out.par_chunks_mut(k * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (r, o) in chunk.chunks_mut(k).enumerate() {
                f(task * ROWS_PER_TASK + r, o);
            }
        });
    out
}

/// `softmax(scale * scores + bias)` over the last axis, with all-masked rows set to 0:
/// `scores [b, h, q, k]`, `bias [b, 1, q, k]`.
struct MaskedSoftmax {
    scale: f64,
}

impl Kernel for MaskedSoftmax {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (s, bias) = (inputs[0], inputs[1]);
        let (b, h, q, k) = layouts[0].shape().dims4()?;
        if layouts[1].shape().dims() != [b, 1, q, k] {
            bail!(
                "masked softmax: bias {:?} does not match scores {:?}",
                layouts[1].shape(),
                layouts[0].shape()
            );
        }
        let scale = T::from(self.scale).unwrap();
        let masked = T::from(MASKED).unwrap();
        Ok(map_rows(s.len(), k, |row, o| {
            let (bh, i) = (row / q, row % q);
            let b = bh / h;
            let x = &s[row * k..(row + 1) * k];
            let m = &bias[(b * q + i) * k..(b * q + i + 1) * k];
            if m.iter().all(|&v| v <= masked) {
                return; // no usable key: the row stays 0
            }
            let mut max = T::neg_infinity();
            for (o, (&x, &m)) in o.iter_mut().zip(x.iter().zip(m)) {
                *o = x * scale + m;
                max = Float::max(max, *o);
            }
            let mut sum = T::zero();
            for o in o.iter_mut() {
                *o = (*o - max).exp();
                sum += *o;
            }
            let inv = T::one() / sum;
            for o in o.iter_mut() {
                *o *= inv;
            }
        }))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp2::name(self), self, &[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad { scale: self.scale })?;
        Ok((Some(g), None))
    }
}

/// `scale * p * (g - sum(g * p))` row by row: the gradient of the scores.
struct SoftmaxGrad {
    scale: f64,
}

impl Kernel for SoftmaxGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (p, g) = (inputs[0], inputs[1]);
        let k = *layouts[0].shape().dims().last().unwrap_or(&1);
        let scale = T::from(self.scale).unwrap();
        Ok(map_rows(p.len(), k, |row, o| {
            let (p, g) = (&p[row * k..(row + 1) * k], &g[row * k..(row + 1) * k]);
            let dot = p.iter().zip(g).fold(T::zero(), |acc, (&p, &g)| acc + p * g);
            for (o, (&p, &g)) in o.iter_mut().zip(p.iter().zip(g)) {
                *o = scale * p * (g - dot);
            }
        }))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp2::name(self), self, &[(s1, l1), (s2, l2)])
    }
}

/// Attention probabilities `softmax(scale * scores + bias)` over the last axis, rows whose
/// keys are all masked (bias at -1e9) exactly 0. `scores: [b, h, q, k]`, `bias: [b, 1, q, k]`.
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    scores
        .contiguous()?
        .apply_op2(&bias.contiguous()?, MaskedSoftmax { scale })
}

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `silu(a) * b` elementwise.
struct SiluMul;

impl Kernel for SiluMul {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        if layouts[0].shape() != layouts[1].shape() {
            bail!(
                "silu_mul: shapes {:?} and {:?} differ",
                layouts[0].shape(),
                layouts[1].shape()
            );
        }
        Ok(zip_map(inputs[0], inputs[1], |a, b| a * sigmoid(a) * b))
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp2::name(self), self, &[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let da = a.apply_op3_no_bwd(b, &g, &SiluMulGradA)?;
        // d/db silu(a) * b = silu(a): the forward op again, with g in b's place.
        let db = a.apply_op2_no_bwd(&g, &SiluMul)?;
        Ok((Some(da), Some(db)))
    }
}

/// `g * b * d silu(a) / da` with `d silu / da = s (1 + a (1 - s))`, `s = sigmoid(a)`.
struct SiluMulGradA;

impl Kernel for SiluMulGradA {
    fn run<T: Elem>(&self, inputs: &[&[T]], _layouts: &[&Layout]) -> Result<Vec<T>> {
        let (a, b, g) = (inputs[0], inputs[1], inputs[2]);
        let mut out = vec![T::zero(); a.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .enumerate()
            .for_each(|(c, o)| {
                let start = c * ELEMS_PER_TASK;
                for (j, o) in o.iter_mut().enumerate() {
                    let (a, bg) = (a[start + j], b[start + j] * g[start + j]);
                    let s = sigmoid(a);
                    *o = bg * s * (T::one() + a * (T::one() - s));
                }
            });
        Ok(out)
    }
}

impl CustomOp3 for SiluMulGradA {
    fn name(&self) -> &'static str {
        "silu-mul-grad-a"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp3::name(self), self, &[(s1, l1), (s2, l2), (s3, l3)])
    }
}

/// `silu(a) * b` (SwiGLU's gate) in one pass, with its analytic backward.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, SiluMul)
}

/// Layer normalisation over the last axis with affine weight and bias:
/// `(x - mean) / sqrt(var + eps) * w + b`, `var` the biased variance (PyTorch's `LayerNorm`).
struct LayerNormOp {
    eps: f64,
}

/// Mean and `1 / sqrt(var + eps)` of one row.
fn row_stats<T: Elem>(x: &[T], eps: T) -> (T, T) {
    let n = T::from(x.len()).unwrap();
    let mean = x.iter().fold(T::zero(), |a, &v| a + v) / n;
    let var = x
        .iter()
        .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
        / n;
    (mean, T::one() / (var + eps).sqrt())
}

fn check_norm_params(name: &str, layouts: &[&Layout]) -> Result<usize> {
    let d = *layouts[0].shape().dims().last().unwrap_or(&0);
    if layouts[1].shape().dims() != [d] {
        bail!(
            "{name}: weight {:?} does not match rows of width {d}",
            layouts[1].shape()
        );
    }
    Ok(d)
}

impl Kernel for LayerNormOp {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let d = check_norm_params("layer norm", layouts)?;
        let (x, w, b) = (inputs[0], inputs[1], inputs[2]);
        let eps = T::from(self.eps).unwrap();
        Ok(map_rows(x.len(), d, |row, o| {
            let x = &x[row * d..(row + 1) * d];
            let (mean, rstd) = row_stats(x, eps);
            for (j, o) in o.iter_mut().enumerate() {
                *o = (x[j] - mean) * rstd * w[j] + b[j];
            }
        }))
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp3::name(self), self, &[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &LayerNormGradX { eps: self.eps })?;
        let dwb = x.apply_op2_no_bwd(&g, &LayerNormGradParams { eps: self.eps })?;
        Ok((Some(dx), Some(dwb.get(0)?), Some(dwb.get(1)?)))
    }
}

/// `dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))`, `gw = g * w`, row by row.
struct LayerNormGradX {
    eps: f64,
}

impl Kernel for LayerNormGradX {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let d = check_norm_params("layer norm gradient", layouts)?;
        let (x, w, g) = (inputs[0], inputs[1], inputs[2]);
        let eps = T::from(self.eps).unwrap();
        let n = T::from(d).unwrap();
        Ok(map_rows(x.len(), d, |row, o| {
            let (x, g) = (&x[row * d..(row + 1) * d], &g[row * d..(row + 1) * d]);
            let (mean, rstd) = row_stats(x, eps);
            let (mut sum_gw, mut sum_gw_xhat) = (T::zero(), T::zero());
            for j in 0..d {
                let gw = g[j] * w[j];
                sum_gw += gw;
                sum_gw_xhat += gw * (x[j] - mean) * rstd;
            }
            let (mean_gw, mean_gw_xhat) = (sum_gw / n, sum_gw_xhat / n);
            for (j, o) in o.iter_mut().enumerate() {
                let xhat = (x[j] - mean) * rstd;
                *o = rstd * (g[j] * w[j] - mean_gw - xhat * mean_gw_xhat);
            }
        }))
    }
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "layer-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp3::name(self), self, &[(s1, l1), (s2, l2), (s3, l3)])
    }
}

/// `[sum over rows of g * xhat; sum over rows of g]`: the weight and bias gradients, `[2, d]`.
/// Partial sums over fixed blocks of rows are added in block order, so the result does not
/// depend on the thread count.
struct LayerNormGradParams {
    eps: f64,
}

/// Rows per partial sum of [`LayerNormGradParams`].
const ROWS_PER_PARTIAL: usize = 256;

impl Kernel for LayerNormGradParams {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let d = *layouts[0].shape().dims().last().unwrap_or(&0);
        let (x, g) = (inputs[0], inputs[1]);
        if x.len() != g.len() || d == 0 {
            bail!("layer norm parameter gradient: input and gradient sizes differ");
        }
        let eps = T::from(self.eps).unwrap();
        let partials: Vec<Vec<T>> = x
            .par_chunks(d * ROWS_PER_PARTIAL)
            .zip(g.par_chunks(d * ROWS_PER_PARTIAL))
            .map(|(x, g)| {
                let mut acc = vec![T::zero(); 2 * d];
                for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                    let (mean, rstd) = row_stats(x, eps);
                    for j in 0..d {
                        acc[j] += g[j] * (x[j] - mean) * rstd;
                        acc[d + j] += g[j];
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![T::zero(); 2 * d];
        for p in partials {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok(out)
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        Shape::from((2, *layouts[0].shape().dims().last().unwrap_or(&0)))
    }
}

impl CustomOp2 for LayerNormGradParams {
    fn name(&self) -> &'static str {
        "layer-norm-grad-params"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp2::name(self), self, &[(s1, l1), (s2, l2)])
    }
}

/// Layer normalisation of `x` over its last axis with weight and bias `[d]` (eps as given), in
/// one pass, with its analytic backward.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps },
    )
}

/// `x * m` for a constant `m` (a padding or dropout mask): the same shape as `x`, or `x`'s shape
/// with a last axis of 1 (one value per row). No gradient flows to `m`.
struct MaskMul;

impl Kernel for MaskMul {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (x, m) = (inputs[0], inputs[1]);
        let (xd, md) = (layouts[0].shape().dims(), layouts[1].shape().dims());
        if xd == md {
            return Ok(zip_map(x, m, |x, m| x * m));
        }
        let n = xd.len();
        if n == 0 || md.len() != n || md[..n - 1] != xd[..n - 1] || md[n - 1] != 1 {
            bail!("mask product: mask {md:?} fits neither {xd:?} nor its rows");
        }
        let d = xd[n - 1];
        Ok(map_rows(x.len(), d, |row, o| {
            let m = m[row];
            for (o, &x) in o.iter_mut().zip(&x[row * d..(row + 1) * d]) {
                *o = x * m;
            }
        }))
    }
}

impl CustomOp2 for MaskMul {
    fn name(&self) -> &'static str {
        "mask-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp2::name(self), self, &[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        _x: &Tensor,
        m: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(grad.contiguous()?.apply_op2_no_bwd(m, &MaskMul)?),
            None,
        ))
    }
}

/// `x * mask` for a constant mask of `x`'s shape or of `x`'s shape with a last axis of 1
/// (padding masks `[b, l, 1]`, dropout masks). The mask gets no gradient, which saves the
/// full-size passes candle's backward would spend on it.
pub fn mask_mul(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&mask.contiguous()?, MaskMul)
}

/// Inverted dropout with a mask that is a pure function of `(seed, element index)`.
struct Dropout {
    p: f64,
    seed: u64,
}

/// MurmurHash3's 32-bit finaliser: a well-mixed hash of a 32-bit counter. 32-bit, so the
/// mask loop vectorises (AVX2 has no 64-bit multiply).
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

impl Kernel for Dropout {
    fn run<T: Elem>(&self, inputs: &[&[T]], _layouts: &[&Layout]) -> Result<Vec<T>> {
        let x = inputs[0];
        if x.len() > u32::MAX as usize {
            bail!(
                "dropout: {} elements exceed the mask's 32-bit counter",
                x.len()
            );
        }
        // Element i is dropped when its 32-bit draw falls below p * 2^32.
        let threshold = (self.p * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let scale = T::from(1.0 / (1.0 - self.p)).unwrap();
        let (lo, hi) = (self.seed as u32, (self.seed >> 32) as u32);
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .enumerate()
            .for_each(|(c, (o, x))| {
                let base = (c * ELEMS_PER_TASK) as u32;
                for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                    let draw = fmix32(fmix32((base + j as u32) ^ lo).wrapping_add(hi));
                    // A select, not a branch: a third of the draws drop.
                    *o = x * if draw >= threshold { scale } else { T::zero() };
                }
            });
        Ok(out)
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        run_f32_f64(CustomOp1::name(self), self, &[(s, l)])
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The same mask and scale: recomputed from the seed, never stored.
        let again = Dropout {
            p: self.p,
            seed: self.seed,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&again)?))
    }
}

/// Inverted dropout of rate `p` (`0 <= p < 1`): each element kept with probability `1 - p`
/// and scaled by `1 / (1 - p)`; the mask depends only on `seed` and the element's index, so the
/// same seed drops the same elements whatever the thread count.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        bail!("dropout rate {p} is outside [0, 1)");
    }
    x.contiguous()?.apply_op1(Dropout { p, seed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        // A small deterministic generator: the test needs varied values, not randomness.
        let n: usize = shape.iter().product();
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f64> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The unfused reference: the chain of candle ops the fused kernel replaces.
    fn reference(scores: &Tensor, bias: &Tensor, scale: f64) -> Tensor {
        let s = (scores * scale).unwrap().broadcast_add(bias).unwrap();
        let max = s.max_keepdim(D::Minus1).unwrap().detach();
        let e = s.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let usable = bias
            .ge(MASKED)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .max_keepdim(D::Minus1)
            .unwrap();
        p.broadcast_mul(&usable).unwrap()
    }

    #[test]
    fn masked_softmax_and_its_gradient_equal_the_unfused_ops() {
        let (b, h, q, k) = (3, 2, 5, 5);
        let scores = Var::from_tensor(&seeded(&[b, h, q, k], 1)).unwrap();
        // Causal mask, plus sample 1 with no usable key in its first row.
        let mut bias = vec![0f64; b * q * k];
        for s in 0..b {
            for i in 0..q {
                for j in 0..k {
                    if j > i || (s == 1 && i == 0) {
                        bias[(s * q + i) * k + j] = -1e9;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, q, k), &Device::Cpu).unwrap();
        let w = seeded(&[b, h, q, k], 2);
        let fused = masked_softmax(scores.as_tensor(), &bias, 0.7).unwrap();
        let refr = reference(scores.as_tensor(), &bias, 0.7);
        let diff = (&fused - &refr).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        let row = fused.narrow(0, 1, 1).unwrap().narrow(2, 0, 1).unwrap();
        assert_eq!(
            row.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
        let gf = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&refr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let d = (gf.get(&scores).unwrap() - gr.get(&scores).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    }

    #[test]
    fn silu_mul_and_its_gradients_equal_the_unfused_ops() {
        let a = Var::from_tensor(&seeded(&[7, 9], 3)).unwrap();
        let b = Var::from_tensor(&seeded(&[7, 9], 4)).unwrap();
        let w = seeded(&[7, 9], 5);
        let fused = silu_mul(a.as_tensor(), b.as_tensor()).unwrap();
        let refr = (a.as_tensor().silu().unwrap() * b.as_tensor()).unwrap();
        let close = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                < 1e-12
        };
        assert!(close(&fused, &refr));
        let gf = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&refr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(close(gf.get(v).unwrap(), gr.get(v).unwrap()));
        }
    }

    #[test]
    fn layer_norm_and_its_gradients_equal_the_unfused_ops() {
        let x = Var::from_tensor(&seeded(&[300, 7], 6)).unwrap();
        let w = Var::from_tensor(&seeded(&[7], 7)).unwrap();
        let b = Var::from_tensor(&seeded(&[7], 8)).unwrap();
        let gw = seeded(&[300, 7], 9);
        let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let fused = layer_norm(xt, wt, bt, 1e-5).unwrap();
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let refr = xc
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(wt)
            .unwrap()
            .broadcast_add(bt)
            .unwrap();
        let gap = |p: &Tensor, q: &Tensor| {
            (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(gap(&fused, &refr) < 1e-12);
        let gf = (&fused * &gw)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&refr * &gw)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            assert!(gap(gf.get(v).unwrap(), gr.get(v).unwrap()) < 1e-10);
        }
    }

    #[test]
    fn mask_mul_scales_rows_or_elements_and_passes_no_gradient_to_the_mask() {
        let x = Var::from_tensor(&seeded(&[2, 3, 4], 10)).unwrap();
        let rows =
            Tensor::from_vec(vec![1f64, 0., 1., 0., 1., 1.], (2, 3, 1), &Device::Cpu).unwrap();
        let full = seeded(&[2, 3, 4], 11);
        for m in [&rows, &full] {
            let fused = mask_mul(x.as_tensor(), m).unwrap();
            let refr = x.as_tensor().broadcast_mul(m).unwrap();
            let d = (&fused - &refr).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0);
            let g = fused.sum_all().unwrap().backward().unwrap();
            let want = m.broadcast_as((2, 3, 4)).unwrap();
            let d = (g.get(&x).unwrap() - want).unwrap().abs().unwrap();
            assert_eq!(d.max_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
        }
        let bad = Tensor::zeros((2, 1, 4), DType::F64, &Device::Cpu).unwrap();
        let err = mask_mul(x.as_tensor(), &bad).unwrap_err().to_string();
        assert!(
            err.contains("mask [2, 1, 4] fits neither [2, 3, 4]"),
            "{err}"
        );
    }

    #[test]
    fn dropout_keeps_the_right_share_and_its_gradient_uses_the_same_mask() {
        let x = Var::from_tensor(&(seeded(&[64, 250], 12) + 3.0).unwrap()).unwrap();
        let y = dropout(x.as_tensor(), 0.3, 42).unwrap();
        let kept: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
        let xs: Vec<f64> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let share = kept.iter().filter(|&&v| v != 0.0).count() as f64 / kept.len() as f64;
        assert!((share - 0.7).abs() < 0.01, "kept share {share}");
        for (&k, &v) in kept.iter().zip(&xs) {
            assert!(k == 0.0 || (k - v / 0.7).abs() < 1e-12);
        }
        let g: Vec<f64> = y
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (&k, &g) in kept.iter().zip(&g) {
            assert_eq!(g, if k == 0.0 { 0.0 } else { 1.0 / 0.7 });
        }
        let again: Vec<f64> = dropout(x.as_tensor(), 0.3, 42)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(again, kept);
        let other: Vec<f64> = dropout(x.as_tensor(), 0.3, 43)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(other, kept);
        let err = dropout(x.as_tensor(), 1.0, 1).unwrap_err().to_string();
        assert!(err.contains("dropout rate 1 is outside [0, 1)"), "{err}");
    }
}
