//! Matrix products called on gemm directly: the batched product [`bmm`] and the linear layer
//! [`linear`], each one node of the autograd graph with its backward written out.
//!
//! Batched: candle's CPU matmul runs the matrices of a batch one after the other and asks gemm to
//! split each one across threads; attention's products (`[b, heads, 50, 32] x [.., 32, 50]`)
//! and the per-row negative scores are thousands of matrices too small to split, so one
//! core did all of them. Here each thread takes whole matrices (gemm single-threaded inside),
//! and the backward products read the transposed operands through their strides instead of
//! copying them.
//!
//! Linear: `x W^T + b` as candle ops is a reshape, a transpose, a matmul, a broadcast and an
//! add, and candle's backward fills and adds a full-size gradient buffer at every one of those
//! nodes. [`linear`] is one node: the forward writes the bias and accumulates the product into
//! it, the backward computes `dx`, `dW` and `db` in one parallel pass over fixed blocks of rows
//! (partial sums added in block order, so results do not depend on the thread count).
//! f32 and f64.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::fused::contiguous;
use super::unfused;

/// The batch shape, matrix shape and strides of one operand.
struct Operand {
    batch: Vec<usize>,
    rows: usize,
    cols: usize,
    /// Distance between consecutive matrices of the flattened batch (0 for one matrix).
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
    offset: usize,
}

impl Operand {
    /// `None` when the batch axes cannot be walked with a single stride.
    fn of(l: &Layout) -> Option<Self> {
        let (dims, strides) = (l.dims(), l.stride());
        let r = dims.len();
        if r < 2 {
            return None;
        }
        let batch = dims[..r - 2].to_vec();
        let count: usize = batch.iter().product();
        let mut batch_stride = 0;
        if count > 1 {
            // The flattened batch index must step by one stride: every batch axis of size > 1
            // spans exactly the axes after it.
            let axes: Vec<usize> = (0..r - 2).filter(|&i| dims[i] > 1).collect();
            batch_stride = strides[*axes.last().expect("count > 1")];
            let mut span = batch_stride;
            for &i in axes.iter().rev() {
                if strides[i] != span {
                    return None;
                }
                span *= dims[i];
            }
        }
        Some(Self {
            batch,
            rows: dims[r - 2],
            cols: dims[r - 1],
            batch_stride,
            row_stride: strides[r - 2],
            col_stride: strides[r - 1],
            offset: l.start_offset(),
        })
    }
}

struct BatchedMatmul;

/// A raw pointer that may cross threads: each task writes its own disjoint output matrix and
/// only reads the inputs.
#[derive(Clone, Copy)]
struct SendPtr<T>(*const T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *const T {
        self.0
    }
}

fn product<T: WithDType + Send + Sync + 'static>(
    a: &[T],
    la: &Operand,
    b: &[T],
    lb: &Operand,
) -> Vec<T> {
    let (m, k, n) = (la.rows, la.cols, lb.cols);
    let count: usize = la.batch.iter().product();
    let len = count * m * n;
    if len == 0 || k == 0 {
        return vec![T::zero(); len];
    }
    // gemm overwrites the output without reading it (read_dst false), so it starts
    // uninitialised instead of zeroed.
    let mut out = Vec::with_capacity(len);
    let (pa, pb) = (SendPtr(a.as_ptr()), SendPtr(b.as_ptr()));
    let one = |dst: &mut [MaybeUninit<T>], i: usize, par: gemm::Parallelism| {
        // SAFETY: the operands' layouts (checked by `Operand::of` and the shape checks in
        // `cpu_fwd`) keep every read of matrix i inside `a` and `b`; `dst` is m x n, written
        // and not read.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr().cast::<T>(),
                1,
                n as isize,
                false,
                pa.get().add(la.offset + i * la.batch_stride),
                la.col_stride as isize,
                la.row_stride as isize,
                pb.get().add(lb.offset + i * lb.batch_stride),
                lb.col_stride as isize,
                lb.row_stride as isize,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                par,
            )
        }
    };
    let threads = rayon::current_num_threads();
    let dst = &mut out.spare_capacity_mut()[..len];
    if count == 1 {
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        one(dst, 0, par);
    } else {
        dst.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| one(dst, i, gemm::Parallelism::None));
    }
    // SAFETY: gemm wrote all `count` m x n matrices.
    unsafe { out.set_len(len) };
    out
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(a), Some(b)) = (Operand::of(l1), Operand::of(l2)) else {
            bail!("bmm: operand strides cannot be batched ({l1:?}, {l2:?})");
        };
        if a.batch != b.batch || a.cols != b.rows {
            bail!(
                "bmm: shapes {:?} and {:?} do not multiply",
                l1.dims(),
                l2.dims()
            );
        }
        let mut dims = a.batch.clone();
        dims.extend([a.rows, b.cols]);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(product(x, &a, y, &b)),
            (CpuStorage::F64(x), CpuStorage::F64(y)) => CpuStorage::F64(product(x, &a, y, &b)),
            _ => bail!(
                "bmm: f32 or f64 operands of one dtype, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let da = bmm(grad, &b.t()?)?;
        let db = bmm(&a.t()?, grad)?;
        Ok((Some(da), Some(db)))
    }
}

/// `a @ b` over the last two axes for `a: [B.., m, k]`, `b: [B.., k, n]` (same batch axes, no
/// broadcasting), parallel over the batch, differentiable. Transposed views are read in place.
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return unfused::bmm(a, b);
    }
    let batchable = |t: &Tensor| -> Result<Tensor> {
        if Operand::of(t.layout()).is_some() {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    batchable(a)?.apply_op2(&batchable(b)?, BatchedMatmul)
}

/// Rows per parallel block of [`linear`]'s forward and backward.
const ROWS_PER_BLOCK: usize = 512;

/// Shape of a linear layer's input: `rows` rows of width `k`, weight `[n, k]`.
fn linear_dims(name: &str, x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let (n, k) = match w.dims() {
        &[n, k] => (n, k),
        d => bail!("{name}: weight of shape {d:?}, expected [out, in]"),
    };
    if k == 0 {
        bail!("{name}: weight {:?} has no input features", w.dims());
    }
    let kx = x.dims().last().copied().unwrap_or(0);
    if kx != k || x.dims().len() < 2 {
        bail!(
            "{name}: input {:?} does not fit weight {:?}",
            x.dims(),
            w.dims()
        );
    }
    Ok((x.shape().elem_count() / k, n, k))
}

/// `dst (+)= lhs @ rhs` single-threaded, `dst` rows `dst_rs` apart, the operands' strides as
/// (column, row) pairs.
///
/// # Safety
/// The strides must keep every access inside the buffers the pointers come from.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_into<T: WithDType + 'static>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: *const T,
    (rhs_cs, rhs_rs): (usize, usize),
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `x W^T (+ b)`: `x` `[rows, k]`, `w` `[n, k]`, output `[rows, n]`.
fn linear_forward<T: WithDType + Send + Sync + 'static>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    (rows, n, k): (usize, usize, usize),
) -> Vec<T> {
    let len = rows * n;
    if len == 0 {
        return Vec::new();
    }
    // Uninitialised: each block is either set to the bias and accumulated into, or
    // overwritten by gemm without being read.
    let mut out = Vec::with_capacity(len);
    let w = SendPtr(w.as_ptr());
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(ROWS_PER_BLOCK * n)
        .zip(x.par_chunks(ROWS_PER_BLOCK * k))
        .for_each(|(o, x)| {
            if let Some(b) = b {
                for r in o.chunks_mut(n) {
                    for (o, &v) in r.iter_mut().zip(b) {
                        o.write(v);
                    }
                }
            }
            // SAFETY: x block [r, k] row-major, W^T read as [k, n] with (column, row) strides
            // (k, 1) inside w's n * k values, o is [r, n] (read only when set to the bias).
            unsafe {
                gemm_into(
                    (o.len() / n, n, k),
                    o.as_mut_ptr().cast::<T>(),
                    n,
                    b.is_some(),
                    x.as_ptr(),
                    (1, k),
                    w.get(),
                    (k, 1),
                )
            }
        });
    // SAFETY: every block was written (bias + product, or the product alone).
    unsafe { out.set_len(len) };
    out
}

/// `[dx (rows x k), dW (n x k), db (n)]` flattened, from `x`, `w` and the output gradient `g`.
fn linear_backward<T: WithDType + Send + Sync + 'static>(
    x: &[T],
    w: &[T],
    g: &[T],
    (rows, n, k): (usize, usize, usize),
) -> Vec<T> {
    if rows * n == 0 {
        // No rows or no outputs (`linear_dims` rules out k = 0): every gradient is zero, and
        // gemm would not write the uninitialised dx below.
        return vec![T::zero(); rows * k + n * k + n];
    }
    // dx starts uninitialised: gemm overwrites each block without reading it. The capacity
    // holds dW and db too, which follow it: growing the vector later copied all of dx.
    let mut dx = Vec::with_capacity(rows * k + n * k + n);
    let w = SendPtr(w.as_ptr());
    let partials: Vec<Vec<T>> = dx.spare_capacity_mut()[..rows * k]
        .par_chunks_mut(ROWS_PER_BLOCK * k)
        .zip(x.par_chunks(ROWS_PER_BLOCK * k))
        .zip(g.par_chunks(ROWS_PER_BLOCK * n))
        .map(|((dx, x), g)| {
            let r = g.len() / n;
            let mut dwb = vec![T::zero(); n * k + n];
            // SAFETY: g block [r, n], W [n, k], dx block [r, k]; for dW, g^T is read as
            // [n, r] with (column, row) strides (n, 1) and x as [r, k].
            unsafe {
                gemm_into(
                    (r, k, n),
                    dx.as_mut_ptr().cast::<T>(),
                    k,
                    false,
                    g.as_ptr(),
                    (1, n),
                    w.get(),
                    (1, k),
                );
                gemm_into(
                    (n, k, r),
                    dwb.as_mut_ptr(),
                    k,
                    false,
                    g.as_ptr(),
                    (n, 1),
                    x.as_ptr(),
                    (1, k),
                );
            }
            for row in g.chunks(n) {
                for (acc, &v) in dwb[n * k..].iter_mut().zip(row) {
                    *acc += v;
                }
            }
            dwb
        })
        .collect();
    // SAFETY: gemm wrote every block of dx.
    unsafe { dx.set_len(rows * k) };
    let mut out = dx;
    let start = out.len();
    out.resize(start + n * k + n, T::zero());
    for p in partials {
        for (o, v) in out[start..].iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// The linear layer as one autograd node (see the module doc).
struct LinearOp;

impl LinearOp {
    fn forward(&self, args: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let name = "linear";
        let (rows, n, k) = linear_dims(name, args[0].1, args[1].1)?;
        if let Some((_, lb)) = args.get(2) {
            if lb.dims() != [n] {
                bail!("{name}: bias of shape {:?}, expected [{n}]", lb.dims());
            }
        }
        let mut dims = args[0].1.dims().to_vec();
        *dims.last_mut().expect("checked rank") = n;
        macro_rules! run {
            ($t:ty, $wrap:path) => {{
                let x = contiguous::<$t>(args[0].0, args[0].1, name)?;
                let w = contiguous::<$t>(args[1].0, args[1].1, name)?;
                let b = match args.get(2) {
                    Some((s, l)) => Some(contiguous::<$t>(s, l, name)?),
                    None => None,
                };
                $wrap(linear_forward(x, w, b, (rows, n, k)))
            }};
        }
        let out = match args[0].0 {
            CpuStorage::F32(_) => run!(f32, CpuStorage::F32),
            CpuStorage::F64(_) => run!(f64, CpuStorage::F64),
            s => bail!("{name}: f32 or f64 input, got {:?}", s.dtype()),
        };
        Ok((out, Shape::from(dims)))
    }

    /// `(dx, dW, db)` of the output gradient `grad`.
    fn gradients(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let flat = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LinearGrad)?;
        let (n, k) = w.dims2()?;
        let rows = x.elem_count() / k;
        Ok((
            flat.narrow(0, 0, rows * k)?.reshape(x.shape())?,
            flat.narrow(0, rows * k, n * k)?.reshape((n, k))?,
            flat.narrow(0, rows * k + n * k, n)?,
        ))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(&[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.gradients(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        self.forward(&[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.gradients(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward pass of [`LinearOp`]: `[dx, dW, db]` flattened into one vector.
struct LinearGrad;

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "linear-grad"
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
        let name = "linear gradient";
        let dims = linear_dims(name, l1, l2)?;
        let (rows, n, k) = dims;
        if l3.shape().elem_count() != rows * n {
            bail!("{name}: output gradient {:?} does not fit", l3.dims());
        }
        macro_rules! run {
            ($t:ty, $wrap:path) => {{
                let x = contiguous::<$t>(s1, l1, name)?;
                let w = contiguous::<$t>(s2, l2, name)?;
                let g = contiguous::<$t>(s3, l3, name)?;
                $wrap(linear_backward(x, w, g, dims))
            }};
        }
        let out = match s1 {
            CpuStorage::F32(_) => run!(f32, CpuStorage::F32),
            CpuStorage::F64(_) => run!(f64, CpuStorage::F64),
            s => bail!("{name}: f32 or f64 input, got {:?}", s.dtype()),
        };
        Ok((out, Shape::from(rows * k + n * k + n)))
    }
}

/// `x W^T (+ b)` over the last axis of `x` (any leading shape), `weight: [out, in]`,
/// `bias: [out]`: one autograd node, parallel over blocks of rows.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return unfused::linear(x, weight, bias);
    }
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearOp),
        None => x.apply_op2(&w, LinearOp),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_tensors::gap;
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(shape: &[usize], seed: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| (i as f64 * 0.37 + seed).sin() * 2.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn bmm_and_its_gradients_equal_candle_matmul() {
        for (sa, sb) in [
            (vec![3, 2, 5, 4], vec![3, 2, 4, 6]),
            (vec![7, 1, 3], vec![7, 3, 2]),
            (vec![5, 4], vec![4, 3]),
        ] {
            let a = Var::from_tensor(&ramp(&sa, 0.1)).unwrap();
            let b = Var::from_tensor(&ramp(&sb, 0.7)).unwrap();
            let ours = bmm(a.as_tensor(), b.as_tensor()).unwrap();
            let refr = unfused::bmm(a.as_tensor(), b.as_tensor()).unwrap();
            assert_eq!(ours.dims(), refr.dims());
            assert!(gap(&ours, &refr) < 1e-12);
            let w = ramp(ours.dims(), 1.3);
            let go = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = (&refr * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &b] {
                assert!(gap(go.get(v).unwrap(), gr.get(v).unwrap()) < 1e-12);
            }
        }
    }

    #[test]
    fn bmm_reads_transposed_and_narrowed_views() {
        let a = ramp(&[4, 6, 5], 0.2);
        let b = ramp(&[4, 6, 3], 0.9);
        // a^T b with a^T a strided view; a narrowed batch (offset) as well.
        let at = a.t().unwrap();
        assert!(gap(&bmm(&at, &b).unwrap(), &at.matmul(&b).unwrap()) < 1e-12);
        let an = a.narrow(0, 1, 2).unwrap();
        let bn = b
            .narrow(0, 2, 2)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let bn = bn.t().unwrap();
        assert!(
            gap(
                &bmm(&an.t().unwrap(), &bn).unwrap(),
                &an.t().unwrap().matmul(&bn).unwrap()
            ) < 1e-12
        );
        // A transposed batch axis cannot be walked with one stride: copied first, same result.
        let x = ramp(&[3, 2, 4, 5], 0.4).transpose(0, 1).unwrap();
        let y = ramp(&[2, 3, 5, 2], 0.5);
        assert!(
            gap(
                &bmm(&x, &y).unwrap(),
                &x.contiguous().unwrap().matmul(&y).unwrap()
            ) < 1e-12
        );
        let err = bmm(&ramp(&[2, 3, 4], 0.), &ramp(&[2, 5, 4], 0.))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not multiply"), "{err}");
    }

    #[test]
    fn linear_and_its_gradients_equal_candle_ops() {
        // 1100 rows: more than two blocks, the last one partial.
        for bias in [true, false] {
            let x = Var::from_tensor(&ramp(&[4, 275, 6], 0.3)).unwrap();
            let w = Var::from_tensor(&ramp(&[5, 6], 0.8)).unwrap();
            let b = Var::from_tensor(&ramp(&[5], 1.1)).unwrap();
            let bt = bias.then(|| b.as_tensor());
            let ours = linear(x.as_tensor(), w.as_tensor(), bt).unwrap();
            let refr = unfused::linear(x.as_tensor(), w.as_tensor(), bt).unwrap();
            assert!(gap(&ours, &refr) < 1e-12);
            let g = ramp(&[4, 275, 5], 2.0);
            let go = (&ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = (&refr * &g).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w, &b] {
                match (go.get(v), gr.get(v)) {
                    (Some(p), Some(q)) => assert!(gap(p, q) < 1e-10),
                    (None, None) => assert!(!bias),
                    _ => panic!("gradient present on one side only"),
                }
            }
        }
        let err = linear(&ramp(&[3, 4], 0.), &ramp(&[2, 5], 0.), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input [3, 4] does not fit weight [2, 5]"),
            "{err}"
        );
        let err = linear(&ramp(&[3, 0], 0.), &ramp(&[2, 0], 0.), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight [2, 0] has no input features"), "{err}");
    }

    #[test]
    fn linear_of_no_rows_is_empty_and_its_gradients_are_zero() {
        let x = Var::from_tensor(&ramp(&[0, 4], 0.3)).unwrap();
        let w = Var::from_tensor(&ramp(&[3, 4], 0.8)).unwrap();
        let b = Var::from_tensor(&ramp(&[3], 1.1)).unwrap();
        let y = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap();
        assert_eq!(y.dims(), [0, 3]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        for (v, dims) in [(&w, vec![3, 4]), (&b, vec![3])] {
            let g = grads.get(v).expect("gradient");
            assert_eq!(g.dims(), dims.as_slice());
            assert_eq!(
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
                0.0
            );
        }
    }
}
