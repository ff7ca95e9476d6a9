//! Fused CPU kernels for the two elementwise chains that dominate a training step at the
//! study's widths, each with an analytic backward: the masked attention softmax (scale, mask
//! bias, max, exp, sum, divide, zero the rows without a key: eight candle ops and their
//! buffers, and about twice as many in the backward pass) and the SwiGLU gate
//! `silu(a) * b`. One pass over the data instead of one per op. f32 and f64 (the gradient
//! checks run in f64); inputs are made contiguous first.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
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
    Ok((out, layouts[0].shape().clone()))
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
}
