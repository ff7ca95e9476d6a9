//! Fused CPU kernels for the elementwise chains that dominate a training step at the
//! study's widths, each with an analytic backward: the masked attention softmax (scale, mask
//! bias, max, exp, sum, divide, zero the rows without a key: eight candle ops and their
//! buffers, and about twice as many in the backward pass), the SwiGLU gate `silu(a) * b`, layer
//! normalisation (nine ops forward, about thirty backward) and the product with a constant
//! mask (candle's backward also differentiates a binary op's constant side: three wasted
//! full-size passes per padding mask), and the sampled-softmax InfoNCE's per-position NLL
//! (gather, concatenate, scale, log-softmax, pick). Dropout draws its mask from a counter-based hash of
//! (seed, element index), so it is generated in parallel and recomputed in the backward pass
//! instead of stored. One pass over the data instead of one per op. f32 and f64 (the gradient checks run in f64); inputs are made contiguous first.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor,
    WithDType,
};
use multiversion::multiversion;
use serde::{Deserialize, Serialize};

use super::unfused;
use num_traits::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Rows per parallel task: small rows make per-task overhead dominate.
const ROWS_PER_TASK: usize = 64;
/// Elements per parallel task of the elementwise kernels.
const ELEMS_PER_TASK: usize = 4096;

/// A bias at or below this marks a key a query may not use (`AttnMask` writes -1e9).
pub(super) const MASKED: f64 = -1e8;

/// The elements of a contiguous input of op `name` (a strided one is an error naming it).
pub(super) fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    name: &str,
) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("{name}: input is not contiguous"),
    }
}

/// The element type of the kernels.
pub(super) trait Elem: Float + WithDType + Send + Sync {
    /// `e^x` in a form the kernels' loops can vectorise (the standard `exp` is a libm call,
    /// which keeps a loop scalar).
    fn vexp(self) -> Self;
    /// The value as f64, always inlined (candle's `WithDType::to_f64` is a call into
    /// candle-core, which a loop pays per element when the crate is built incrementally).
    fn widen(self) -> f64;
}

impl Elem for f32 {
    #[inline(always)]
    fn vexp(self) -> f32 {
        exp_f32(self)
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }
}

impl Elem for f64 {
    /// f64 runs the gradient checks: the exact libm `exp`.
    #[inline(always)]
    fn vexp(self) -> f64 {
        self.exp()
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
}

/// `e^x` for f32 without a libm call: `x = n ln 2 + r`, `|r| <= ln 2 / 2`, `e^r` by Cephes'
/// `expf` polynomial and `2^n` built in the exponent bits; within 2 ulp of `f32::exp` (tested).
/// Plain multiplies and adds, so the scalar and AVX2 builds of a kernel give the same bits.
/// Below -87.3 it returns 0 (masked attention scores must get exactly zero weight: e^-87.3 is
/// near the smallest normal f32), above 88.72 infinity.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(-87.3, 88.72);
    let n = (c * std::f32::consts::LOG2_E + 0.5).floor();
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n as two exact powers of two, so n = 128 (x near 88.72) does not overflow the
    // exponent field.
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    // n is an integer in [-126, 128]: adding 1.5 * 2^23 puts it in the low bits of the
    // mantissa, exactly. `n as i32` (a saturating conversion, NaN to 0) kept each loop's
    // conversions scalar, eight per vector of exponentials; a NaN gives NaN either way.
    let n = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    let half = n >> 1;
    if x < -87.3 {
        0.0
    } else if x > 88.72 {
        f32::INFINITY
    } else {
        e * pow2(half) * pow2(n - half)
    }
}

/// A fused kernel over inputs of one float dtype; [`run_f32_f64`] runs it for f32 and f64.
pub(super) trait Kernel {
    /// `inputs` are the contiguous data of the op's arguments, `layouts` their layouts; the
    /// output has the first argument's shape.
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>>;

    /// The output's shape (the first argument's unless the kernel says otherwise).
    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        layouts[0].shape().clone()
    }
}

/// The CPU forward pass of a [`Kernel`] over `args` (storage, layout) pairs of one dtype.
pub(super) fn run_f32_f64<K: Kernel>(
    name: &str,
    kernel: &K,
    args: &[(&CpuStorage, &Layout)],
) -> Result<(CpuStorage, Shape)> {
    fn data<'a, T: WithDType>(
        args: &[(&'a CpuStorage, &Layout)],
        name: &str,
    ) -> Result<Vec<&'a [T]>> {
        args.iter()
            .map(|(s, l)| contiguous::<T>(s, l, name))
            .collect()
    }
    let layouts: Vec<&Layout> = args.iter().map(|(_, l)| *l).collect();
    let dtypes: Vec<_> = args.iter().map(|(s, _)| s.dtype()).collect();
    if dtypes.windows(2).any(|w| w[0] != w[1]) {
        bail!("{name}: inputs of different dtypes {dtypes:?}");
    }
    let out = match args[0].0 {
        CpuStorage::F32(_) => CpuStorage::F32(kernel.run(&data::<f32>(args, name)?, &layouts)?),
        CpuStorage::F64(_) => CpuStorage::F64(kernel.run(&data::<f64>(args, name)?, &layouts)?),
        _ => bail!("{name}: f32 or f64 inputs, got {:?}", dtypes[0]),
    };
    Ok((out, kernel.out_shape(&layouts)))
}

/// [`run_f32_f64`] over `args` followed by tensors the op holds itself (a mask bias, an
/// incoming gradient): candle hands a custom op only its arguments' storage.
pub(super) fn run_f32_f64_holding<K: Kernel>(
    name: &str,
    kernel: &K,
    args: &[(&CpuStorage, &Layout)],
    held: &[&Tensor],
) -> Result<(CpuStorage, Shape)> {
    if held.is_empty() {
        return run_f32_f64(name, kernel, args);
    }
    let guards: Vec<_> = held.iter().map(|t| t.storage_and_layout()).collect();
    let mut all = args.to_vec();
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(cpu) => all.push((cpu, *layout)),
            _ => bail!("{name}: CPU tensors only"),
        }
    }
    run_f32_f64(name, kernel, &all)
}

/// The `name` and `cpu_fwd` of a `CustomOpN` whose forward pass is the type's [`Kernel`]
/// (run on f32 or f64 by [`run_f32_f64`]); `N` is the number of arguments. With
/// `, "label", holding: [field, ...]` the tensors in those fields of the op follow the
/// arguments ([`run_f32_f64_holding`]) and errors name the op by the label.
macro_rules! kernel_op {
    (1, $name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
            run_f32_f64($name, self, &[(s1, l1)])
        }
    };
    (2, $name:literal) => {
        kernel_op!(2, $name, $name, holding: []);
    };
    (3, $name:literal) => {
        kernel_op!(3, $name, $name, holding: []);
    };
    (2, $name:literal, $label:literal, holding: [$($($field:tt).+),*]) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            run_f32_f64_holding($label, self, &[(s1, l1), (s2, l2)], &[$(&self.$($field).+),*])
        }
    };
    (3, $name:literal, $label:literal, holding: [$($($field:tt).+),*]) => {
        fn name(&self) -> &'static str {
            $name
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
            run_f32_f64_holding(
                $label,
                self,
                &[(s1, l1), (s2, l2), (s3, l3)],
                &[$(&self.$($field).+),*],
            )
        }
    };
}
pub(super) use kernel_op;

/// A vector of `len` values filled in parallel tasks of [`ELEMS_PER_TASK`] elements:
/// `fill(task, chunk)` gets its chunk uninitialised, so no memset precedes the kernel.
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
unsafe fn filled<T: Send>(
    len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(ELEMS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| fill(task, chunk));
    // SAFETY: the caller's `fill` wrote all `len` elements.
    unsafe { out.set_len(len) };
    out
}

// The per-task loops below are compiled twice, as built (baseline x86-64: SSE2) and for
// AVX2 + FMA, and the second is chosen at run time where the CPU has it: 8 f32 lanes instead
// of 4, and the 32-bit multiplies of the dropout hash vectorise at all (SSE2 has none). The
// element functions they take are small closures, inlined into each clone.

#[multiversion(targets("x86_64+avx2+fma"))]
fn zip_task<T: Elem, F: Fn(T, T) -> T>(o: &mut [MaybeUninit<T>], a: &[T], b: &[T], f: &F) {
    for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
        o.write(f(a, b));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn zip3_task<T: Elem, F: Fn(T, T, T) -> T>(
    o: &mut [MaybeUninit<T>],
    a: &[T],
    b: &[T],
    c: &[T],
    f: &F,
) {
    for (o, ((&a, &b), &c)) in o.iter_mut().zip(a.iter().zip(b).zip(c)) {
        o.write(f(a, b, c));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn rows_task<T: Elem, F: Fn(usize, &mut [T])>(chunk: &mut [T], k: usize, first_row: usize, f: &F) {
    for (r, o) in chunk.chunks_mut(k).enumerate() {
        f(first_row + r, o);
    }
}

/// `f(a[i], b[i])` elementwise, in parallel.
fn zip_map<T: Elem>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "zip_map: inputs of different lengths");
    let s = ELEMS_PER_TASK;
    // SAFETY: `zip_task` writes every element: the three slices have the chunk's length.
    unsafe {
        filled(a.len(), |t, o| {
            zip_task(
                o,
                &a[t * s..t * s + o.len()],
                &b[t * s..t * s + o.len()],
                &f,
            )
        })
    }
}

/// `f(a[i], b[i], c[i])` elementwise, in parallel.
fn zip3_map<T: Elem>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    assert!(
        a.len() == b.len() && a.len() == c.len(),
        "zip3_map: inputs of different lengths"
    );
    let s = ELEMS_PER_TASK;
    // SAFETY: as in `zip_map`.
    unsafe {
        filled(a.len(), |t, o| {
            let r = t * s..t * s + o.len();
            zip3_task(o, &a[r.clone()], &b[r.clone()], &c[r], &f)
        })
    }
}

/// `f(row index, output row)` for every row of length `k` of a `len`-element output, in
/// parallel. The rows start zeroed, each task zeroing its own (a `vec!` of zeros is one serial
/// pass on the calling thread while the workers wait).
fn map_rows<T: Elem>(len: usize, k: usize, f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(k * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for v in chunk.iter_mut() {
                v.write(T::zero());
            }
            // SAFETY: every element of the chunk was just written; MaybeUninit<T> has T's
            // layout.
            let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) };
            rows_task(chunk, k, task * ROWS_PER_TASK, &f)
        });
    // SAFETY: the tasks' chunks cover all `len` elements.
    unsafe { out.set_len(len) };
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
            softmax_row(o, x, m, scale);
        }))
    }
}

// The row functions below are multiversioned like the per-task loops above: called from a
// closure, which the compiler does not always inline into a clone.

/// `softmax(scale * x + m)` of one row.
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn softmax_row<T: Elem>(o: &mut [T], x: &[T], m: &[T], scale: T) {
    let mut max = T::neg_infinity();
    for (o, (&x, &m)) in o.iter_mut().zip(x.iter().zip(m)) {
        *o = x * scale + m;
        max = Float::max(max, *o);
    }
    let mut sum = T::zero();
    for o in o.iter_mut() {
        *o = (*o - max).vexp();
        sum += *o;
    }
    let inv = T::one() / sum;
    for o in o.iter_mut() {
        *o *= inv;
    }
}

impl CustomOp2 for MaskedSoftmax {
    kernel_op!(2, "masked-softmax");

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
            softmax_grad_row(
                o,
                &p[row * k..(row + 1) * k],
                &g[row * k..(row + 1) * k],
                scale,
            )
        }))
    }
}

/// `scale * p * (g - sum(g * p))` of one row.
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn softmax_grad_row<T: Elem>(o: &mut [T], p: &[T], g: &[T], scale: T) {
    let dot = p.iter().zip(g).fold(T::zero(), |acc, (&p, &g)| acc + p * g);
    for (o, (&p, &g)) in o.iter_mut().zip(p.iter().zip(g)) {
        *o = scale * p * (g - dot);
    }
}

impl CustomOp2 for SoftmaxGrad {
    kernel_op!(2, "masked-softmax-grad");
}

/// Attention probabilities `softmax(scale * scores + bias)` over the last axis, rows whose
/// keys are all masked (bias at -1e9) exactly 0. `scores: [b, h, q, k]`, `bias: [b, 1, q, k]`.
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    if !scores.device().is_cpu() {
        return unfused::masked_softmax(scores, bias, scale);
    }
    scores
        .contiguous()?
        .apply_op2(&bias.contiguous()?, MaskedSoftmax { scale })
}

#[inline(always)]
fn sigmoid<T: Elem>(x: T) -> T {
    T::one() / (T::one() + (-x).vexp())
}

/// `silu(a) * b` elementwise.
struct SiluMul;

impl Kernel for SiluMul {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("silu_mul", layouts)?;
        Ok(zip_map(inputs[0], inputs[1], |a, b| a * sigmoid(a) * b))
    }
}

impl CustomOp2 for SiluMul {
    kernel_op!(2, "silu-mul");

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dab = a.apply_op3_no_bwd(b, &g, &SiluMulGrad)?;
        let shape = a.shape();
        Ok((
            Some(dab.get(0)?.reshape(shape)?),
            Some(dab.get(1)?.reshape(shape)?),
        ))
    }
}

/// Both gradients of `silu(a) * b` in one pass over `a`, `b` and `g`, stacked `[2, n]`:
/// `g * b * d silu(a) / da` with `d silu / da = s (1 + a (1 - s))`, `s = sigmoid(a)`, and
/// `g * silu(a)` (the forward op with `g` in `b`'s place).
struct SiluMulGrad;

impl Kernel for SiluMulGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("silu_mul gradient", layouts)?;
        let (a, b, g) = (inputs[0], inputs[1], inputs[2]);
        let n = a.len();
        // Uninitialised: the tasks write every element of both halves.
        let mut out = Vec::with_capacity(2 * n);
        let (da, db) = out.spare_capacity_mut()[..2 * n].split_at_mut(n);
        da.par_chunks_mut(ELEMS_PER_TASK)
            .zip(db.par_chunks_mut(ELEMS_PER_TASK))
            .enumerate()
            .for_each(|(task, (da, db))| {
                let r = task * ELEMS_PER_TASK..task * ELEMS_PER_TASK + da.len();
                silu_mul_grad_task(da, db, &a[r.clone()], &b[r.clone()], &g[r]);
            });
        // SAFETY: `silu_mul_grad_task` wrote both halves, chunk by chunk.
        unsafe { out.set_len(2 * n) };
        Ok(out)
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        Shape::from((2, layouts[0].shape().elem_count()))
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn silu_mul_grad_task<T: Elem>(
    da: &mut [MaybeUninit<T>],
    db: &mut [MaybeUninit<T>],
    a: &[T],
    b: &[T],
    g: &[T],
) {
    for ((da, db), ((&a, &b), &g)) in da.iter_mut().zip(db).zip(a.iter().zip(b).zip(g)) {
        let s = sigmoid(a);
        da.write(b * g * s * (T::one() + a * (T::one() - s)));
        db.write(a * s * g);
    }
}

impl CustomOp3 for SiluMulGrad {
    kernel_op!(3, "silu-mul-grad");
}

/// `silu(a) * b` (SwiGLU's gate) in one pass, with its analytic backward.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return unfused::silu_mul(a, b);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, SiluMul)
}

/// Layer normalisation over the last axis with affine weight and bias:
/// `(x - mean) / sqrt(var + eps) * w + b`, `var` the biased variance (PyTorch's `LayerNorm`).
struct LayerNormOp {
    eps: f64,
}

/// Mean and `1 / sqrt(var + eps)` of one row.
#[inline(always)]
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
            layer_norm_row(o, &x[row * d..(row + 1) * d], w, b, eps)
        }))
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn layer_norm_row<T: Elem>(o: &mut [T], x: &[T], w: &[T], b: &[T], eps: T) {
    let (mean, rstd) = row_stats(x, eps);
    for (o, ((&x, &w), &b)) in o.iter_mut().zip(x.iter().zip(w).zip(b)) {
        *o = (x - mean) * rstd * w + b;
    }
}

impl CustomOp3 for LayerNormOp {
    kernel_op!(3, "layer-norm");

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
            layer_norm_grad_row(o, x, w, g, eps, n)
        }))
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn layer_norm_grad_row<T: Elem>(o: &mut [T], x: &[T], w: &[T], g: &[T], eps: T, n: T) {
    let (mean, rstd) = row_stats(x, eps);
    let (mut sum_gw, mut sum_gw_xhat) = (T::zero(), T::zero());
    for ((&x, &w), &g) in x.iter().zip(w).zip(g) {
        let gw = g * w;
        sum_gw += gw;
        sum_gw_xhat += gw * (x - mean) * rstd;
    }
    let (mean_gw, mean_gw_xhat) = (sum_gw / n, sum_gw_xhat / n);
    for (o, ((&x, &w), &g)) in o.iter_mut().zip(x.iter().zip(w).zip(g)) {
        let xhat = (x - mean) * rstd;
        *o = rstd * (g * w - mean_gw - xhat * mean_gw_xhat);
    }
}

impl CustomOp3 for LayerNormGradX {
    kernel_op!(3, "layer-norm-grad-x");
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
    kernel_op!(2, "layer-norm-grad-params");
}

/// Layer normalisation of `x` over its last axis with weight and bias `[d]` (eps as given), in
/// one pass, with its analytic backward.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return unfused::layer_norm(x, weight, bias, eps);
    }
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
    kernel_op!(2, "mask-mul");

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
    if !x.device().is_cpu() {
        return unfused::mask_mul(x, mask);
    }
    x.contiguous()?.apply_op2(&mask.contiguous()?, MaskMul)
}

/// Inverted dropout with a mask that is a pure function of `(seed, element index)`.
pub(super) struct Dropout {
    pub(super) p: f64,
    pub(super) seed: u64,
    /// For packed rows ([`super::Packing`]): each row's row index in the padded layout, whose
    /// elements' indices the mask is drawn for.
    pub(super) rows: Option<Arc<[u32]>>,
}

/// MurmurHash3's 32-bit finaliser: a well-mixed hash of a 32-bit counter. 32-bit, so the
/// mask loop vectorises (AVX2 has no 64-bit multiply).
#[inline(always)]
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
        // Element i is dropped when its 32-bit draw falls below p * 2^32.
        let threshold = (self.p * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let scale = T::from(1.0 / (1.0 - self.p)).unwrap();
        let key = (self.seed as u32, (self.seed >> 32) as u32);
        let Some(rows) = &self.rows else {
            if x.len() > u32::MAX as usize {
                bail!(
                    "dropout: {} elements exceed the mask's 32-bit counter",
                    x.len()
                );
            }
            // SAFETY: `dropout_task` writes every element of its chunk.
            return Ok(unsafe {
                filled(x.len(), |t, o| {
                    let start = t * ELEMS_PER_TASK;
                    let x = &x[start..start + o.len()];
                    dropout_task(o, x, start as u32, key, threshold, scale)
                })
            });
        };
        let w = if rows.is_empty() {
            0
        } else {
            x.len() / rows.len()
        };
        if w * rows.len() != x.len() {
            bail!("dropout: {} elements are not {} rows", x.len(), rows.len());
        }
        if rows
            .last()
            .is_some_and(|&r| (r as usize + 1) * w > u32::MAX as usize)
        {
            bail!("dropout: padded row indices exceed the mask's 32-bit counter");
        }
        let per_task = ELEMS_PER_TASK.div_ceil(w.max(1));
        let mut out = Vec::with_capacity(x.len());
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(per_task * w.max(1))
            .enumerate()
            .for_each(|(task, chunk)| {
                let first = task * per_task;
                for (i, o) in chunk.chunks_mut(w.max(1)).enumerate() {
                    let r = first + i;
                    let x = &x[r * w..(r + 1) * w];
                    dropout_task(o, x, rows[r] * w as u32, key, threshold, scale);
                }
            });
        // SAFETY: `dropout_task` wrote every row of every chunk.
        unsafe { out.set_len(x.len()) };
        Ok(out)
    }
}

/// Dropout of one task's elements, `first` the index of its first element.
#[multiversion(targets("x86_64+avx2+fma"))]
fn dropout_task<T: Elem>(
    o: &mut [MaybeUninit<T>],
    x: &[T],
    first: u32,
    key: (u32, u32),
    threshold: u32,
    scale: T,
) {
    let (lo, hi) = key;
    for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
        // Wrapping add: no overflow check in the loop, so it vectorises.
        let i = first.wrapping_add(j as u32);
        let draw = fmix32(fmix32(i ^ lo).wrapping_add(hi));
        // A select, not a branch: a third of the draws drop.
        o.write(x * if draw >= threshold { scale } else { T::zero() });
    }
}

impl CustomOp1 for Dropout {
    kernel_op!(1, "dropout");

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The same mask and scale: recomputed from the seed, never stored.
        let again = Dropout {
            p: self.p,
            seed: self.seed,
            rows: self.rows.clone(),
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&again)?))
    }
}

/// Inverted dropout of rate `p` (`0 <= p < 1`): each element kept with probability `1 - p`
/// and scaled by `1 / (1 - p)`; the mask depends only on `seed` and the element's index, so the
/// same seed drops the same elements whatever the thread count.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    apply_dropout(
        x,
        Dropout {
            p,
            seed,
            rows: None,
        },
    )
}

/// [`dropout`] of packed rows (`x: [rows.len(), w]`): row `i` gets the mask of row `rows[i]`
/// of the padded tensor.
pub(super) fn dropout_of_rows(x: &Tensor, p: f64, seed: u64, rows: &Arc<[u32]>) -> Result<Tensor> {
    apply_dropout(
        x,
        Dropout {
            p,
            seed,
            rows: Some(rows.clone()),
        },
    )
}

/// Checks the rate, then the fused kernel on CPU, the host-drawn mask elsewhere.
fn apply_dropout(x: &Tensor, op: Dropout) -> Result<Tensor> {
    if !(0.0..1.0).contains(&op.p) {
        bail!("dropout rate {} is outside [0, 1)", op.p);
    }
    if !x.device().is_cpu() {
        return unfused::dropout(x, op);
    }
    x.contiguous()?.apply_op1(op)
}

/// The squashing function of a gate (GCA's `act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateActivation {
    #[default]
    Sigmoid,
    Tanh,
}

/// `1 / (e^-p + 1)` as candle's ops compute a sigmoid (neg, exp, + 1, recip; libm's `exp`), so
/// the fused gate gives the same bits as those ops.
#[inline(always)]
fn sigmoid_as_ops<T: Elem>(p: T) -> T {
    T::one() / ((-p).exp() + T::one())
}

impl GateActivation {
    #[inline(always)]
    fn apply<T: Elem>(self, p: T) -> T {
        match self {
            GateActivation::Sigmoid => sigmoid_as_ops(p),
            GateActivation::Tanh => p.tanh(),
        }
    }
}

/// `x + act(pre) * v` elementwise: GCA's gated residual `X_A + g * X'`.
struct GatedResidual {
    act: GateActivation,
}

fn check_same_shapes(name: &str, layouts: &[&Layout]) -> Result<()> {
    if layouts.windows(2).any(|w| w[0].shape() != w[1].shape()) {
        let shapes: Vec<_> = layouts.iter().map(|l| l.shape().clone()).collect();
        bail!("{name}: inputs of different shapes {shapes:?}");
    }
    Ok(())
}

impl Kernel for GatedResidual {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("gated residual", layouts)?;
        let act = self.act;
        Ok(zip3_map(inputs[0], inputs[1], inputs[2], |x, p, v| {
            x + act.apply(p) * v
        }))
    }
}

impl CustomOp3 for GatedResidual {
    kernel_op!(3, "gated-residual");

    fn bwd(
        &self,
        _x: &Tensor,
        pre: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let d_pre = pre.apply_op3_no_bwd(v, &g, &GatedResidualGradPre { act: self.act })?;
        let d_v = pre.apply_op2_no_bwd(&g, &GateTimes { act: self.act })?;
        Ok((Some(g), Some(d_pre), Some(d_v)))
    }
}

/// `g * act(pre)`: the gradient of the gated value.
struct GateTimes {
    act: GateActivation,
}

impl Kernel for GateTimes {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("gated residual gradient", layouts)?;
        let act = self.act;
        Ok(zip_map(inputs[0], inputs[1], |p, g| g * act.apply(p)))
    }
}

impl CustomOp2 for GateTimes {
    kernel_op!(2, "gate-times");
}

/// The gradient of the gate's input `pre`, in the order of candle's backward through the
/// unfused ops (so the same bits): with `gv = g * v`, sigmoid `gv / (u * u) * e` (`e = e^-pre`,
/// `u = e + 1`), tanh `-(gv * (t * t - 1))`.
struct GatedResidualGradPre {
    act: GateActivation,
}

impl Kernel for GatedResidualGradPre {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("gated residual gradient", layouts)?;
        let (pre, v, g) = (inputs[0], inputs[1], inputs[2]);
        Ok(match self.act {
            GateActivation::Sigmoid => zip3_map(pre, v, g, |p, v, g| {
                let e = (-p).exp();
                let u = e + T::one();
                g * v / (u * u) * e
            }),
            GateActivation::Tanh => zip3_map(pre, v, g, |p, v, g| {
                let t = p.tanh();
                -(g * v * (t * t - T::one()))
            }),
        })
    }
}

impl CustomOp3 for GatedResidualGradPre {
    kernel_op!(3, "gated-residual-grad-pre");
}

/// GCA's gated residual `x + act(pre) * v` (`x`, `pre`, `v` of one shape) as one graph node
/// with its analytic backward, instead of the activation's ops, a product and a sum.
pub fn gated_residual(x: &Tensor, pre: &Tensor, v: &Tensor, act: GateActivation) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return unfused::gated_residual(x, pre, v, act);
    }
    x.contiguous()?
        .apply_op3(&pre.contiguous()?, &v.contiguous()?, GatedResidual { act })
}

/// The coefficients of one AdamW step (PyTorch's `torch.optim.AdamW`): moments' decay rates,
/// bias corrections `1 - beta^t`, `eps`, learning rate and weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub beta1: f64,
    pub beta2: f64,
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    pub eps: f64,
    pub lr: f64,
    pub weight_decay: f64,
}

/// One AdamW update of a parameter: `[param, m, v]` (and the gradient, held) to the new
/// `[param; m; v]` stacked as `[3, n]`, in one parallel pass. Each element goes through the
/// operations of the update written as candle ops (`unfused::adamw_update`), in their order
/// and with their f64 constants rounded as candle's affine op rounds them, so the bits are
/// the same.
struct AdamWUpdate {
    grad: Tensor,
    step: AdamWStep,
}

impl Kernel for AdamWUpdate {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        check_same_shapes("AdamW update", layouts)?;
        let (p, m, v, g) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let s = self.step;
        let c = |x: f64| T::from_f64(x);
        let zero = T::zero();
        let (b1, c1, b2, c2) = (c(s.beta1), c(1.0 - s.beta1), c(s.beta2), c(1.0 - s.beta2));
        let (ibc1, ibc2) = (c(1.0 / s.bias_correction1), c(1.0 / s.bias_correction2));
        let (one, eps, lr) = (c(1.0), c(s.eps), c(s.lr));
        let decay = c(1.0 - s.lr * s.weight_decay);
        let n = p.len();
        let mut out = vec![zero; 3 * n];
        let (p_out, rest) = out.split_at_mut(n);
        let (m_out, v_out) = rest.split_at_mut(n);
        p_out
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(m_out.par_chunks_mut(ELEMS_PER_TASK))
            .zip(v_out.par_chunks_mut(ELEMS_PER_TASK))
            .enumerate()
            .for_each(|(task, ((po, mo), vo))| {
                let r = task * ELEMS_PER_TASK..task * ELEMS_PER_TASK + po.len();
                let (p, m, v, g) = (&p[r.clone()], &m[r.clone()], &v[r.clone()], &g[r]);
                for i in 0..po.len() {
                    // `x * k + 0` is candle's affine op for `tensor * k` (the `+ 0` turns -0
                    // into +0, as there).
                    let m1 = (m[i] * b1 + zero) + (g[i] * c1 + zero);
                    let v1 = (v[i] * b2 + zero) + ((g[i] * g[i]) * c2 + zero);
                    let denom = (v1 * ibc2 + zero).sqrt() * one + eps;
                    let update = (m1 * ibc1 + zero) / denom;
                    po[i] = (p[i] * decay + zero) - (update * lr + zero);
                    mo[i] = m1;
                    vo[i] = v1;
                }
            });
        Ok(out)
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        Shape::from((3, layouts[0].shape().elem_count()))
    }
}

impl CustomOp3 for AdamWUpdate {
    kernel_op!(3, "adamw-update", "AdamW update", holding: [grad]);
}

/// One AdamW step of a parameter `param` with moments `m`, `v` and gradient `grad` (one shape):
/// the new parameter, `m` and `v`. On the CPU one parallel pass instead of fourteen candle ops.
pub fn adamw_update(
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    step: AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !param.device().is_cpu() {
        return unfused::adamw_update(param, m, v, grad, step);
    }
    let op = AdamWUpdate {
        grad: grad.contiguous()?,
        step,
    };
    let out = param
        .contiguous()?
        .apply_op3_no_bwd(&m.contiguous()?, &v.contiguous()?, &op)?;
    let shape = param.shape();
    Ok((
        out.get(0)?.reshape(shape)?,
        out.get(1)?.reshape(shape)?,
        out.get(2)?.reshape(shape)?,
    ))
}

/// `(max, log sum exp(z - max))` of one position's logits `z = [pos, neg] / t`.
#[inline(always)]
fn log_partition<T: Elem>(pos: T, neg: &[T], inv_t: T) -> (T, T) {
    let z0 = pos * inv_t;
    let max = neg.iter().fold(z0, |m, &v| Float::max(m, v * inv_t));
    let sum = neg
        .iter()
        .fold((z0 - max).vexp(), |acc, &v| acc + (v * inv_t - max).vexp());
    (max, sum.ln())
}

/// The sampled-softmax negative log-likelihood of each scored position: with
/// `z = [pos[i], neg[row(i), 0..k]] / t`, `nll[i] = logsumexp(z) - z[0]`. `neg` is `[m, k]`;
/// `rows` picks its row for each i (`None`: row i, `m = n`), so the per-sequence negatives'
/// scores `[b * l, k]` need no gather into a copy. Backward: `d pos[i] = g[i] (p0 - 1) / t`,
/// `d neg[row(i), j] = g[i] p[j + 1] / t`, other rows of `neg` zero; the backward pass takes
/// `log Z` and `p0` from the forward's result.
struct SampledNll {
    rows: Option<std::sync::Arc<Vec<u32>>>,
    temperature: f64,
}

impl SampledNll {
    fn row(&self, i: usize) -> usize {
        self.rows.as_ref().map_or(i, |r| r[i] as usize)
    }

    fn check(&self, layouts: &[&Layout]) -> Result<(usize, usize, usize)> {
        let n = layouts[0].shape().elem_count();
        let (m, k) = layouts[1].shape().dims2()?;
        let in_range = match &self.rows {
            None => m == n,
            Some(r) => r.len() == n && r.iter().all(|&r| (r as usize) < m),
        };
        if !in_range {
            bail!(
                "sampled softmax: {n} positions do not index the rows of scores {:?}",
                layouts[1].shape()
            );
        }
        Ok((n, m, k))
    }
}

impl Kernel for SampledNll {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (pos, neg) = (inputs[0], inputs[1]);
        let (n, _, k) = self.check(layouts)?;
        let inv_t = T::from(1.0 / self.temperature).unwrap();
        Ok((0..n)
            .into_par_iter()
            .map(|i| {
                let r = self.row(i);
                let (max, log_sum) = log_partition(pos[i], &neg[r * k..(r + 1) * k], inv_t);
                max + log_sum - pos[i] * inv_t
            })
            .collect())
    }
}

impl CustomOp2 for SampledNll {
    kernel_op!(2, "sampled-softmax-nll");

    fn bwd(
        &self,
        pos: &Tensor,
        neg: &Tensor,
        nll: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The forward's result gives each position's normaliser, so nothing is recomputed:
        // log Z = nll + pos / t, and the positive's probability p0 = e^-nll.
        let inv_t = 1.0 / self.temperature;
        let log_z = (nll + (pos * inv_t)?)?;
        let grad = grad.contiguous()?;
        let d_neg = log_z.apply_op3_no_bwd(
            neg,
            &grad,
            &SampledNllGrad {
                nll: SampledNll {
                    rows: self.rows.clone(),
                    temperature: self.temperature,
                },
            },
        )?;
        let d_pos = ((((nll.neg()?.exp()? - 1.0)? * &grad)? * inv_t)?).reshape(pos.shape())?;
        Ok((Some(d_pos), Some(d_neg)))
    }
}

/// `g * e^(neg / t - log Z) / t` (`g` times the negatives' softmax probabilities, over `t`): the
/// gradient of one scored row of the negatives.
#[multiversion(targets("x86_64+avx2+fma"))]
fn sampled_nll_grad_row<T: Elem>(o: &mut [T], neg: &[T], log_z: T, g: T, inv_t: T) {
    for (o, &v) in o.iter_mut().zip(neg) {
        *o = g * (v * inv_t - log_z).vexp() * inv_t;
    }
}

/// The gradient of `neg` (`[m, k]`), from each position's `log Z` (`[n]`), `neg` and the
/// output gradient (`[n]`); rows no position scores are zero.
struct SampledNllGrad {
    nll: SampledNll,
}

impl Kernel for SampledNllGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (log_z, neg, g) = (inputs[0], inputs[1], inputs[2]);
        let nll = &self.nll;
        let (n, m, k) = nll.check(layouts)?;
        let inv_t = T::from(1.0 / nll.temperature).unwrap();
        // Which position scores each row of `neg` (a row scored twice would need its two
        // gradients added: positions are distinct flat indices, so it is an error).
        let mut scored_by = vec![usize::MAX; m];
        for i in 0..n {
            let r = nll.row(i);
            if scored_by[r] != usize::MAX {
                bail!("sampled softmax: row {r} of the scores is scored twice");
            }
            scored_by[r] = i;
        }
        Ok(map_rows(m * k, k, |r, o| {
            let i = scored_by[r];
            if i == usize::MAX {
                return; // not scored: zero gradient
            }
            sampled_nll_grad_row(o, &neg[r * k..(r + 1) * k], log_z[i], g[i], inv_t);
        }))
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        layouts[1].shape().clone()
    }
}

impl CustomOp3 for SampledNllGrad {
    kernel_op!(3, "sampled-softmax-nll-grad");
}

/// Sampled-softmax negative log-likelihood per scored position, in one graph node:
/// `pos: [n]` the positive's score, `neg: [m, k]` negative scores, `rows: [n]` u32 picking the
/// row of `neg` for each position (`None`: `m = n`, row i), `temperature` dividing all scores.
/// Returns `[n]`: `logsumexp([pos[i], neg[row(i)]] / t) - pos[i] / t`.
pub fn sampled_softmax_nll(
    pos: &Tensor,
    neg: &Tensor,
    rows: Option<&Tensor>,
    temperature: f64,
) -> Result<Tensor> {
    if temperature <= 0.0 {
        bail!("sampled softmax: temperature {temperature} is not positive");
    }
    if !pos.device().is_cpu() {
        return unfused::sampled_softmax_nll(pos, neg, rows, temperature);
    }
    let rows = match rows {
        Some(r) => Some(std::sync::Arc::new(
            r.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?,
        )),
        None => None,
    };
    pos.contiguous()?
        .apply_op2(&neg.contiguous()?, SampledNll { rows, temperature })
}

#[cfg(test)]
mod tests {
    use super::super::test_tensors::{gap, seeded};
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn sampled_softmax_nll_and_its_gradients_equal_the_unfused_ops() {
        let (m, k, t) = (7, 5, 0.75);
        let rows = [4u32, 0, 6];
        let pos = Var::from_tensor(&seeded(&[3], 20)).unwrap();
        let neg = Var::from_tensor(&seeded(&[m, k], 21)).unwrap();
        let w = seeded(&[3], 22);
        let idx = Tensor::new(&rows, &Device::Cpu).unwrap();
        let fused = sampled_softmax_nll(pos.as_tensor(), neg.as_tensor(), Some(&idx), t).unwrap();
        // The unfused ops: gather, concatenate, scale, log-softmax, take the positive's column.
        let reference =
            unfused::sampled_softmax_nll(pos.as_tensor(), neg.as_tensor(), Some(&idx), t).unwrap();
        let picked = neg.as_tensor().index_select(&idx, 0).unwrap();
        assert!(gap(&fused, &reference) < 1e-12);
        let gf = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&pos, &neg] {
            assert!(gap(gf.get(v).unwrap(), gr.get(v).unwrap()) < 1e-12);
        }
        // Rows no position scores get exactly zero gradient.
        let d_neg: Vec<Vec<f64>> = gf.get(&neg).unwrap().to_vec2().unwrap();
        for r in [1, 2, 3, 5] {
            assert!(d_neg[r].iter().all(|&v| v == 0.0));
        }
        // Without rows, row i scores position i.
        let direct = sampled_softmax_nll(pos.as_tensor(), &picked, None, t).unwrap();
        assert!(gap(&direct, &reference) < 1e-12);
        let twice = Tensor::new(&[4u32, 4, 6], &Device::Cpu).unwrap();
        let err = sampled_softmax_nll(pos.as_tensor(), neg.as_tensor(), Some(&twice), t)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 4 of the scores is scored twice"), "{err}");
        let err = sampled_softmax_nll(pos.as_tensor(), neg.as_tensor(), Some(&idx), 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("temperature 0 is not positive"), "{err}");
        let out_of_range = Tensor::new(&[4u32, 0, 7], &Device::Cpu).unwrap();
        assert!(
            sampled_softmax_nll(pos.as_tensor(), neg.as_tensor(), Some(&out_of_range), t).is_err()
        );
    }

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm_and_exact_at_the_edges() {
        let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).abs();
        let mut worst = 0;
        for i in 0..=2_000_000 {
            let x = -87.3 + (88.72 + 87.3) * (i as f32 / 2_000_000.0);
            worst = worst.max(ulps(exp_f32(x), x.exp()));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-87.4), 0.0);
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        // The exponent's conversion by the 1.5 * 2^23 addition is `as i32` on every integer
        // the clamped argument can round to.
        for n in -130..=130 {
            let f = n as f32;
            assert_eq!((f + 12_582_912.0).to_bits() as i32 - 0x4B40_0000, f as i32);
        }
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
        let refr = unfused::masked_softmax(scores.as_tensor(), &bias, 0.7).unwrap();
        assert!(gap(&fused, &refr) < 1e-12);
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
        assert!(gap(gf.get(&scores).unwrap(), gr.get(&scores).unwrap()) < 1e-12);
    }

    #[test]
    fn silu_mul_and_its_gradients_equal_the_unfused_ops() {
        let a = Var::from_tensor(&seeded(&[7, 9], 3)).unwrap();
        let b = Var::from_tensor(&seeded(&[7, 9], 4)).unwrap();
        let w = seeded(&[7, 9], 5);
        let fused = silu_mul(a.as_tensor(), b.as_tensor()).unwrap();
        let refr = unfused::silu_mul(a.as_tensor(), b.as_tensor()).unwrap();
        assert!(gap(&fused, &refr) < 1e-12);
        let gf = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gr = (&refr * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(gap(gf.get(v).unwrap(), gr.get(v).unwrap()) < 1e-12);
        }
    }

    #[test]
    fn gated_residual_and_its_gradients_equal_the_unfused_ops() {
        // pre spans [-2, 2) scaled by 4: the sigmoid's and tanh's flat tails too.
        let x = Var::from_tensor(&seeded(&[6, 11], 40)).unwrap();
        let pre = Var::from_tensor(&(seeded(&[6, 11], 41) * 4.0).unwrap()).unwrap();
        let v = Var::from_tensor(&seeded(&[6, 11], 42)).unwrap();
        let w = seeded(&[6, 11], 43);
        for act in [GateActivation::Sigmoid, GateActivation::Tanh] {
            let args = (x.as_tensor(), pre.as_tensor(), v.as_tensor());
            let fused = gated_residual(args.0, args.1, args.2, act).unwrap();
            let refr = unfused::gated_residual(args.0, args.1, args.2, act).unwrap();
            // The same operations in the same order: the same bits.
            assert_eq!(gap(&fused, &refr), 0.0, "{act:?}");
            let loss = |t: &Tensor| (t * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gr) = (loss(&fused), loss(&refr));
            for p in [&x, &pre, &v] {
                assert!(
                    gap(gf.get(p).unwrap(), gr.get(p).unwrap()) < 1e-12,
                    "{act:?}"
                );
            }
        }
        let short = seeded(&[6, 10], 44);
        assert!(
            gated_residual(x.as_tensor(), pre.as_tensor(), &short, GateActivation::Tanh)
                .unwrap_err()
                .to_string()
                .contains("gated residual: inputs of different shapes")
        );
    }

    #[test]
    fn adamw_update_equals_the_unfused_ops_bit_for_bit() {
        let step = AdamWStep {
            beta1: 0.9,
            beta2: 0.999,
            bias_correction1: 1.0 - 0.9f64.powi(3),
            bias_correction2: 1.0 - 0.999f64.powi(3),
            eps: 1e-8,
            lr: 1e-3,
            weight_decay: 0.5,
        };
        // More than one parallel task; v >= 0 as a second moment is.
        let n = 3 * ELEMS_PER_TASK + 17;
        let (p, m, g) = (seeded(&[n], 50), seeded(&[n], 51), seeded(&[n], 53));
        let v = seeded(&[n], 52).abs().unwrap();
        for dtype in [DType::F64, DType::F32] {
            let [p, m, v, g] = [&p, &m, &v, &g].map(|t| t.to_dtype(dtype).unwrap());
            let fused = adamw_update(&p, &m, &v, &g, step).unwrap();
            let refr = unfused::adamw_update(&p, &m, &v, &g, step).unwrap();
            for (f, r) in [
                (&fused.0, &refr.0),
                (&fused.1, &refr.1),
                (&fused.2, &refr.2),
            ] {
                assert_eq!(f.dims(), [n]);
                let as_f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
                assert_eq!(gap(&as_f64(f), &as_f64(r)), 0.0, "{dtype:?}");
            }
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
        let refr = unfused::layer_norm(xt, wt, bt, 1e-5).unwrap();
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
            let refr = unfused::mask_mul(x.as_tensor(), m).unwrap();
            assert_eq!(gap(&fused, &refr), 0.0);
            let g = fused.sum_all().unwrap().backward().unwrap();
            let want = m.broadcast_as((2, 3, 4)).unwrap();
            assert_eq!(gap(g.get(&x).unwrap(), &want), 0.0);
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
        // The unfused path (other devices) drops the same elements with the same values.
        let op = Dropout {
            p: 0.3,
            seed: 42,
            rows: None,
        };
        let unfused: Vec<f64> = unfused::dropout(x.as_tensor(), op)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(unfused, kept);
        let err = dropout(x.as_tensor(), 1.0, 1).unwrap_err().to_string();
        assert!(err.contains("dropout rate 1 is outside [0, 1)"), "{err}");
    }
}
