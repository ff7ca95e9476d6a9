//! Fused CPU kernels for the two elementwise chains that dominate a training step at the
//! study's widths, each with an analytic backward: the masked attention softmax (scale, mask
//! bias, max, exp, sum, divide, zero the rows without a key: eight candle ops and their
//! buffers, and about twice as many in the backward pass) and the SwiGLU gate
//! `silu(a) * b`. One pass over the data instead of one per op. f32 and f64 (the gradient
//! checks run in f64); inputs are made contiguous first.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// Rows per parallel task: small rows make per-task overhead dominate.
const ROWS_PER_TASK: usize = 64;

fn contiguous<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

/// A bias at or below this marks a key a query may not use (`AttnMask` writes -1e9).
const MASKED: f64 = -1e8;

/// `softmax(scale * scores + bias)` over the last axis, with all-masked rows set to 0:
/// `scores [b, h, q, k]`, `bias [b, 1, q, k]`.
struct MaskedSoftmax {
    scale: f64,
}

fn masked_softmax_rows<T: Float + Send + Sync>(
    s: &[T],
    bias: &[T],
    dims: [usize; 4],
    scale: f64,
) -> Vec<T> {
    let [_, h, q, k] = dims;
    let scale = T::from(scale).unwrap();
    let masked = T::from(MASKED).unwrap();
    let mut out = vec![T::zero(); s.len()];
    out.par_chunks_mut(k * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (r, o) in chunk.chunks_mut(k).enumerate() {
                let row = task * ROWS_PER_TASK + r;
                let (bh, i) = (row / q, row % q);
                let b = bh / h;
                let x = &s[row * k..(row + 1) * k];
                let m = &bias[(b * q + i) * k..(b * q + i + 1) * k];
                if m.iter().all(|&v| v <= masked) {
                    continue; // no usable key: the row stays 0
                }
                let mut max = T::neg_infinity();
                for (o, (&x, &m)) in o.iter_mut().zip(x.iter().zip(m)) {
                    *o = x * scale + m;
                    max = max.max(*o);
                }
                let mut sum = T::zero();
                for o in o.iter_mut() {
                    *o = (*o - max).exp();
                    sum = sum + *o;
                }
                let inv = T::one() / sum;
                for o in o.iter_mut() {
                    *o = *o * inv;
                }
            }
        });
    out
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
        let (b, h, q, k) = l1.shape().dims4()?;
        if l2.shape().dims() != [b, 1, q, k] {
            bail!(
                "masked softmax: bias {:?} does not match scores {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let dims = [b, h, q, k];
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(masked_softmax_rows(
                contiguous::<f32>(s1, l1)?,
                contiguous::<f32>(s2, l2)?,
                dims,
                self.scale,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(masked_softmax_rows(
                contiguous::<f64>(s1, l1)?,
                contiguous::<f64>(s2, l2)?,
                dims,
                self.scale,
            )),
            _ => bail!("masked softmax: f32 or f64 inputs of one dtype"),
        };
        Ok((out, l1.shape().clone()))
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

fn softmax_grad_rows<T: Float + Send + Sync>(p: &[T], g: &[T], k: usize, scale: f64) -> Vec<T> {
    let scale = T::from(scale).unwrap();
    let mut out = vec![T::zero(); p.len()];
    out.par_chunks_mut(k * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (r, o) in chunk.chunks_mut(k).enumerate() {
                let row = task * ROWS_PER_TASK + r;
                let (p, g) = (&p[row * k..(row + 1) * k], &g[row * k..(row + 1) * k]);
                let dot = p.iter().zip(g).fold(T::zero(), |acc, (&p, &g)| acc + p * g);
                for (o, (&p, &g)) in o.iter_mut().zip(p.iter().zip(g)) {
                    *o = scale * p * (g - dot);
                }
            }
        });
    out
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
        let k = *l1.shape().dims().last().unwrap_or(&1);
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(softmax_grad_rows(
                contiguous::<f32>(s1, l1)?,
                contiguous::<f32>(s2, l2)?,
                k,
                self.scale,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(softmax_grad_rows(
                contiguous::<f64>(s1, l1)?,
                contiguous::<f64>(s2, l2)?,
                k,
                self.scale,
            )),
            _ => bail!("masked softmax grad: f32 or f64 inputs of one dtype"),
        };
        Ok((out, l1.shape().clone()))
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

fn zip_map<T: Float + Send + Sync>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096).zip(b.par_chunks(4096)))
        .for_each(|(o, (a, b))| {
            for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
                *o = f(a, b);
            }
        });
    out
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
        if l1.shape() != l2.shape() {
            bail!(
                "silu_mul: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        fn f<T: Float>(a: T, b: T) -> T {
            a * sigmoid(a) * b
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(zip_map(
                contiguous::<f32>(s1, l1)?,
                contiguous::<f32>(s2, l2)?,
                f,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(zip_map(
                contiguous::<f64>(s1, l1)?,
                contiguous::<f64>(s2, l2)?,
                f,
            )),
            _ => bail!("silu_mul: f32 or f64 inputs of one dtype"),
        };
        Ok((out, l1.shape().clone()))
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
        fn run<T: Float + Send + Sync + candle_core::WithDType>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<Vec<T>> {
            let (a, b, g) = (
                contiguous::<T>(s1, l1)?,
                contiguous::<T>(s2, l2)?,
                contiguous::<T>(s3, l3)?,
            );
            let mut out = vec![T::zero(); a.len()];
            out.par_chunks_mut(4096).enumerate().for_each(|(c, o)| {
                let start = c * 4096;
                for (j, o) in o.iter_mut().enumerate() {
                    let (a, bg) = (a[start + j], b[start + j] * g[start + j]);
                    let s = sigmoid(a);
                    *o = bg * s * (T::one() + a * (T::one() - s));
                }
            });
            Ok(out)
        }
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(run::<f32>(s1, l1, s2, l2, s3, l3)?),
            CpuStorage::F64(_) => CpuStorage::F64(run::<f64>(s1, l1, s2, l2, s3, l3)?),
            _ => bail!("silu_mul grad: f32 or f64 inputs"),
        };
        Ok((out, l1.shape().clone()))
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
