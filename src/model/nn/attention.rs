//! Multi-head scaled dot-product attention as one autograd node: [`attention`].
//!
//! As candle ops, attention is a reshape, transpose and copy per head split of q, k and v, the
//! score product, the masked softmax, the value product, and a transpose and reshape back; the
//! probabilities `[b, heads, q, k]` are kept for the backward pass, and candle's backward fills
//! and adds a full-size gradient buffer at each of those nodes. Here each batch item is one
//! parallel task that reads its heads in place through strides (gemm on `[l, d]` rows with
//! stride `d`), keeps scores and probabilities in a small scratch buffer, and writes its block
//! of the `[b, q, d]` output; the backward recomputes the probabilities instead of storing
//! them. Same masking rules as [`super::masked_softmax`]: a query row with no usable key gets
//! zero probabilities, hence a zero output row and zero gradients. f32 and f64.
//!
//! The probabilities never leave the node; a loss on them (AutoCDSR's cross-domain share)
//! takes them from [`attention_probs`], a second node over q and k with its own backward.

use super::fused::{
    kernel_op, run_f32_f64_holding, softmax_grad_row, softmax_row, Elem, Kernel, MASKED,
};
use super::matmul::gemm_into;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    lq: usize,
    lk: usize,
    d: usize,
    heads: usize,
}

impl Dims {
    fn dh(&self) -> usize {
        self.d / self.heads
    }
}

/// One matrix operand inside a slice: element `(r, c)` at `offset + r * row + c * col`.
#[derive(Clone, Copy)]
struct View {
    offset: usize,
    row: usize,
    col: usize,
}

impl View {
    /// Rows of width `stride` starting at `offset` (a head's `[l, dh]` block of `[l, d]`).
    fn rows(offset: usize, stride: usize) -> Self {
        Self {
            offset,
            row: stride,
            col: 1,
        }
    }

    /// The transpose of [`View::rows`].
    fn rows_t(offset: usize, stride: usize) -> Self {
        Self {
            offset,
            row: 1,
            col: stride,
        }
    }

    /// One past the largest index of an `r x c` matrix (0 when it is empty).
    fn end(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            0
        } else {
            self.offset + (r - 1) * self.row + (c - 1) * self.col + 1
        }
    }
}

/// `dst (m x n) = lhs (m x k) @ rhs (k x n)` on [`gemm_into`], single-threaded (the caller
/// runs one task per batch item); `dst`'s rows start at `offset`, `row` apart. Bounds are
/// checked against the slices before gemm reads or writes through the strides. `k > 0`: the
/// callers' early returns rule out empty sums (gemm would leave `dst` unwritten).
fn matmul<T: WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    (offset, row): (usize, usize),
    lhs: &[T],
    lv: View,
    rhs: &[T],
    rv: View,
) {
    let dv = View::rows(offset, row);
    assert!(
        k > 0
            && dv.end(m, n) <= dst.len()
            && lv.end(m, k) <= lhs.len()
            && rv.end(k, n) <= rhs.len(),
        "attention: empty product or matrix view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert above keeps every element gemm touches inside the three slices; dst
    // is borrowed mutably, so it does not overlap lhs or rhs.
    unsafe {
        gemm_into(
            (m, n, k),
            dst.as_mut_ptr().add(offset),
            row,
            false,
            lhs.as_ptr().add(lv.offset),
            (lv.col, lv.row),
            rhs.as_ptr().add(rv.offset),
            (rv.col, rv.row),
        )
    }
}

/// The probabilities `p [lq, lk]` of head `h` of one batch item: `s` is scratch for the raw
/// scores. `q`, `k`: the item's `[l, d]` rows; `bias`: its `[lq, lk]` mask bias.
#[allow(clippy::too_many_arguments)]
fn probabilities<T: Elem>(
    dims: Dims,
    h: usize,
    q: &[T],
    k: &[T],
    bias: &[T],
    scale: T,
    s: &mut [T],
    p: &mut [T],
) {
    let Dims { lq, lk, d, .. } = dims;
    let dh = dims.dh();
    // s = q_h k_h^T
    matmul(
        (lq, lk, dh),
        s,
        (0, lk),
        q,
        View::rows(h * dh, d),
        k,
        View::rows_t(h * dh, d),
    );
    let masked = T::from(MASKED).unwrap();
    for i in 0..lq {
        let r = i * lk..(i + 1) * lk;
        let m = &bias[r.clone()];
        if m.iter().all(|&v| v <= masked) {
            p[r].fill(T::zero()); // no usable key
        } else {
            softmax_row(&mut p[r.clone()], &s[r.clone()], m, scale);
        }
    }
}

/// Head `h`'s share of the query and key gradients from its probabilities `p [lq, lk]` and
/// their gradient `dp`: the score gradient `ds = scale * p * (dp - rowsum(dp * p))` into the
/// scratch `ds` (a row without a usable key has p = 0, so ds = 0), then `dq_h = ds k_h` and
/// `dk_h = ds^T q_h` into the item's `[l, d]` gradient rows.
#[allow(clippy::too_many_arguments)]
fn score_grad_to_qk<T: Elem>(
    dims: Dims,
    h: usize,
    (p, dp): (&[T], &[T]),
    ds: &mut [T],
    scale: T,
    (qb, kb): (&[T], &[T]),
    (dqb, dkb): (&mut [T], &mut [T]),
) {
    let Dims { lq, lk, d, .. } = dims;
    let dh = dims.dh();
    for i in 0..lq {
        let r = i * lk..(i + 1) * lk;
        softmax_grad_row(&mut ds[r.clone()], &p[r.clone()], &dp[r], scale);
    }
    matmul(
        (lq, dh, lk),
        dqb,
        (h * dh, d),
        ds,
        View::rows(0, lk),
        kb,
        View::rows(h * dh, d),
    );
    matmul(
        (lk, dh, lq),
        dkb,
        (h * dh, d),
        ds,
        View::rows_t(0, lk),
        qb,
        View::rows(h * dh, d),
    );
}

/// The output `[b, lq, d]` and, when `keep_probs`, the probabilities `[b, heads, lq, lk]` it
/// weighed the values with (else an empty vector).
fn forward<T: Elem>(
    dims: Dims,
    (q, k, v): (&[T], &[T], &[T]),
    bias: &[T],
    scale: T,
    keep_probs: bool,
) -> (Vec<T>, Vec<T>) {
    let Dims { lq, lk, d, .. } = dims;
    let dh = dims.dh();
    let n = lq * lk;
    let mut out = vec![T::zero(); dims.batch * lq * d];
    let mut probs = vec![
        T::zero();
        if keep_probs {
            dims.batch * dims.heads * n
        } else {
            0
        }
    ];
    if lq * d == 0 || lk == 0 {
        return (out, probs); // no keys: every row is zero
    }
    // `ps`: the item's probabilities, one `[lq, lk]` block per head, or one block reused.
    let item = |b: usize, o: &mut [T], ps: &mut [T]| {
        let (qb, kb, vb) = (
            &q[b * lq * d..(b + 1) * lq * d],
            &k[b * lk * d..(b + 1) * lk * d],
            &v[b * lk * d..(b + 1) * lk * d],
        );
        let mb = &bias[b * n..(b + 1) * n];
        let mut s = vec![T::zero(); n];
        for h in 0..dims.heads {
            let at = (h * n) % ps.len();
            let p = &mut ps[at..at + n];
            probabilities(dims, h, qb, kb, mb, scale, &mut s, p);
            // o_h = p v_h
            matmul(
                (lq, dh, lk),
                o,
                (h * dh, d),
                p,
                View::rows(0, lk),
                vb,
                View::rows(h * dh, d),
            );
        }
    };
    if keep_probs {
        out.par_chunks_mut(lq * d)
            .zip(probs.par_chunks_mut(dims.heads * n))
            .enumerate()
            .for_each(|(b, (o, ps))| item(b, o, ps));
    } else {
        out.par_chunks_mut(lq * d)
            .enumerate()
            .for_each(|(b, o)| item(b, o, &mut vec![T::zero(); n]));
    }
    (out, probs)
}

/// `[dq, dk, dv]` flattened into one vector, from the output gradient `g [b, lq, d]`; the
/// probabilities are read from `kept` (`[b, heads, lq, lk]`, what the forward pass kept) when
/// given, else recomputed.
fn backward<T: Elem>(
    dims: Dims,
    (q, k, v): (&[T], &[T], &[T]),
    bias: &[T],
    g: &[T],
    scale: T,
    kept: Option<&[T]>,
) -> Vec<T> {
    let Dims {
        batch, lq, lk, d, ..
    } = dims;
    let dh = dims.dh();
    let (nq, nk) = (batch * lq * d, batch * lk * d);
    let mut flat = vec![T::zero(); nq + 2 * nk];
    if lq * d == 0 || lk * d == 0 {
        return flat;
    }
    let (dq, dkv) = flat.split_at_mut(nq);
    let (dk, dv) = dkv.split_at_mut(nk);
    dq.par_chunks_mut(lq * d)
        .zip(dk.par_chunks_mut(lk * d))
        .zip(dv.par_chunks_mut(lk * d))
        .enumerate()
        .for_each(|(b, ((dqb, dkb), dvb))| {
            let (qb, kb, vb, gb) = (
                &q[b * lq * d..(b + 1) * lq * d],
                &k[b * lk * d..(b + 1) * lk * d],
                &v[b * lk * d..(b + 1) * lk * d],
                &g[b * lq * d..(b + 1) * lq * d],
            );
            let mb = &bias[b * lq * lk..(b + 1) * lq * lk];
            let n = lq * lk;
            let (mut s, mut computed, mut dp) =
                (vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); n]);
            for h in 0..dims.heads {
                let p = match kept {
                    Some(all) => &all[(b * dims.heads + h) * n..][..n],
                    None => {
                        probabilities(dims, h, qb, kb, mb, scale, &mut s, &mut computed);
                        &computed
                    }
                };
                // dv_h = p^T g_h
                matmul(
                    (lk, dh, lq),
                    dvb,
                    (h * dh, d),
                    p,
                    View::rows_t(0, lk),
                    gb,
                    View::rows(h * dh, d),
                );
                // dp = g_h v_h^T
                matmul(
                    (lq, lk, dh),
                    &mut dp,
                    (0, lk),
                    gb,
                    View::rows(h * dh, d),
                    vb,
                    View::rows_t(h * dh, d),
                );
                // ds into the score scratch
                score_grad_to_qk(dims, h, (p, &dp), &mut s, scale, (qb, kb), (dqb, dkb));
            }
        });
    flat
}

#[derive(Clone)]
struct Attention {
    /// `[b, 1, lq, lk]` (or `[b, lq, lk]`), contiguous: a constant of the node.
    bias: Tensor,
    heads: usize,
    scale: f64,
    /// Where the forward pass keeps its probabilities ([`attention_with_probs`]).
    kept: Option<KeptProbs>,
}

/// The probabilities `[b, heads, lq, lk]` one attention node's forward pass computed: handed
/// to the probabilities node over the same q and k, which returns them as its output instead
/// of computing them again, then read back from that output by the attention node's backward
/// pass instead of recomputing them. The same values either way (one function computes them).
#[derive(Clone, Default)]
struct KeptProbs(Arc<Mutex<Kept>>);

#[derive(Default)]
enum Kept {
    #[default]
    Empty,
    /// Computed by the attention node, not yet returned.
    Computed(CpuStorage),
    /// The probabilities node's output (detached: the same storage).
    Returned(Tensor),
}

impl KeptProbs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put<T: Elem>(&self, probs: Vec<T>) {
        *self.lock() = Kept::Computed(T::to_cpu_storage_owned(probs));
    }

    /// The computed probabilities, once.
    fn take<T: Elem>(&self) -> Option<Vec<T>> {
        let mut kept = self.lock();
        match std::mem::take(&mut *kept) {
            Kept::Computed(storage) => T::cpu_storage_data(storage).ok(),
            other => {
                *kept = other;
                None
            }
        }
    }

    fn returned(&self, probs: &Tensor) {
        *self.lock() = Kept::Returned(probs.detach());
    }

    fn tensor(&self) -> Option<Tensor> {
        match &*self.lock() {
            Kept::Returned(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl Attention {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (batch, lq, d) = q.shape().dims3()?;
        let (bk, lk, dk) = k.shape().dims3()?;
        if (bk, dk) != (batch, d) || v.shape() != k.shape() {
            bail!(
                "attention: query {:?}, key {:?} and value {:?} do not match",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        if self.heads == 0 || d % self.heads != 0 {
            bail!(
                "attention: width {d} is not divisible by {} heads",
                self.heads
            );
        }
        if self.bias.elem_count() != batch * lq * lk {
            bail!(
                "attention: mask bias {:?} does not match {batch} x {lq} queries x {lk} keys",
                self.bias.dims()
            );
        }
        Ok(Dims {
            batch,
            lq,
            lk,
            d,
            heads: self.heads,
        })
    }
}

/// Arguments q, k, v and the mask bias.
impl Kernel for Attention {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let dims = self.dims(layouts[0], layouts[1], layouts[2])?;
        let scale = T::from(self.scale).unwrap();
        let (out, probs) = forward(
            dims,
            (inputs[0], inputs[1], inputs[2]),
            inputs[3],
            scale,
            self.kept.is_some(),
        );
        if let Some(kept) = &self.kept {
            kept.put(probs);
        }
        Ok(out)
    }
}

impl CustomOp3 for Attention {
    kernel_op!(3, "attention", "attention", holding: [bias]);

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = AttentionGrad {
            attention: self.clone(),
            grad: grad.contiguous()?,
        };
        let flat = q.apply_op3_no_bwd(k, v, &op)?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        Ok((
            Some(flat.narrow(0, 0, nq)?.reshape(q.shape())?),
            Some(flat.narrow(0, nq, nk)?.reshape(k.shape())?),
            Some(flat.narrow(0, nq + nk, nk)?.reshape(v.shape())?),
        ))
    }
}

/// The backward pass of [`Attention`] over its arguments q, k, v: `[dq, dk, dv]` flattened into
/// one vector, from the output gradient it holds.
struct AttentionGrad {
    attention: Attention,
    grad: Tensor,
}

/// Arguments q, k, v, the mask bias, the output gradient and, when the forward pass kept them,
/// the probabilities.
impl Kernel for AttentionGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let a = &self.attention;
        let dims = a.dims(layouts[0], layouts[1], layouts[2])?;
        if layouts[4].shape() != layouts[0].shape() {
            bail!(
                "attention gradient: output gradient {:?} does not match the query {:?}",
                layouts[4].dims(),
                layouts[0].dims()
            );
        }
        let kept = inputs.get(5).copied();
        if let Some(p) = kept {
            if p.len() != dims.batch * dims.heads * dims.lq * dims.lk {
                bail!(
                    "attention gradient: kept probabilities {:?}",
                    layouts[5].dims()
                );
            }
        }
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        let scale = T::from(a.scale).unwrap();
        Ok(backward(dims, (q, k, v), inputs[3], inputs[4], scale, kept))
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        let n: usize = layouts[..3].iter().map(|l| l.shape().elem_count()).sum();
        Shape::from(n)
    }
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
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
        let kept = self.attention.kept.as_ref().and_then(KeptProbs::tensor);
        let mut held = vec![&self.attention.bias, &self.grad];
        held.extend(kept.as_ref());
        run_f32_f64_holding(
            "attention gradient",
            self,
            &[(s1, l1), (s2, l2), (s3, l3)],
            &held,
        )
    }
}

/// `softmax(scale * q_h k_h^T + bias) v_h` for every head `h`, heads side by side in the
/// output: `q: [b, lq, d]`, `k`, `v: [b, lk, d]`, `bias: [b, 1, lq, lk]` (0 where a key may be
/// used, -1e9 where not), `d` divisible by `heads`. Returns `[b, lq, d]`; a query row without
/// a usable key gets zeros. Differentiable in q, k and v (the bias is a constant).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return Ok(composed_attention(q, k, v, bias, heads, scale)?.0);
    }
    let op = Attention {
        bias: bias.contiguous()?,
        heads,
        scale,
        kept: None,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// [`attention`] and the probabilities `[b, heads, lq, lk]` it weighs the values with, the
/// latter as a node differentiable in q and k (a loss on them: AutoCDSR). Computed once: the
/// attention node keeps the probabilities its forward pass computes, the probabilities node
/// returns them, and both nodes' backward passes read them instead of recomputing them.
/// The same values and gradients as [`attention`] and [`attention_probs`] called separately.
pub fn attention_with_probs(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    if !q.device().is_cpu() {
        return composed_attention(q, k, v, bias, heads, scale);
    }
    let kept = KeptProbs::default();
    let op = Attention {
        bias: bias.contiguous()?,
        heads,
        scale,
        kept: Some(kept.clone()),
    };
    let (q, k) = (q.contiguous()?, k.contiguous()?);
    let out = q.apply_op3(&k, &v.contiguous()?, op.clone())?;
    let probs = q.apply_op2(&k, Probabilities(op))?;
    kept.returned(&probs);
    Ok((out, probs))
}

/// The probabilities `p [b, heads, lq, lk]` of `heads` query/key pairs, each head's
/// `[lq, lk]` block from [`probabilities`]: `[b * heads * lq * lk]` values.
fn probs_forward<T: Elem>(dims: Dims, q: &[T], k: &[T], bias: &[T], scale: T) -> Vec<T> {
    let Dims {
        batch, lq, lk, d, ..
    } = dims;
    let n = lq * lk;
    let mut out = vec![T::zero(); batch * dims.heads * n];
    if n * d == 0 {
        return out; // no keys or no features: nothing is attended
    }
    out.par_chunks_mut(dims.heads * n)
        .enumerate()
        .for_each(|(b, ob)| {
            let (qb, kb) = (
                &q[b * lq * d..(b + 1) * lq * d],
                &k[b * lk * d..(b + 1) * lk * d],
            );
            let mb = &bias[b * n..(b + 1) * n];
            let mut s = vec![T::zero(); n];
            for (h, p) in ob.chunks_mut(n).enumerate() {
                probabilities(dims, h, qb, kb, mb, scale, &mut s, p);
            }
        });
    out
}

/// `[dq, dk]` flattened into one vector, from the probabilities `p` the forward pass returned
/// and their gradient `g` (both `[b, heads, lq, lk]`).
fn probs_backward<T: Elem>(dims: Dims, (q, k): (&[T], &[T]), p: &[T], g: &[T], scale: T) -> Vec<T> {
    let Dims {
        batch, lq, lk, d, ..
    } = dims;
    let (nq, nk, n) = (batch * lq * d, batch * lk * d, lq * lk);
    let mut flat = vec![T::zero(); nq + nk];
    if n * d == 0 {
        return flat;
    }
    let (dq, dk) = flat.split_at_mut(nq);
    dq.par_chunks_mut(lq * d)
        .zip(dk.par_chunks_mut(lk * d))
        .enumerate()
        .for_each(|(b, (dqb, dkb))| {
            let (qb, kb) = (
                &q[b * lq * d..(b + 1) * lq * d],
                &k[b * lk * d..(b + 1) * lk * d],
            );
            let mut ds = vec![T::zero(); n];
            for h in 0..dims.heads {
                let at = (b * dims.heads + h) * n;
                let (ph, gh) = (&p[at..at + n], &g[at..at + n]);
                score_grad_to_qk(dims, h, (ph, gh), &mut ds, scale, (qb, kb), (dqb, dkb));
            }
        });
    flat
}

/// The probabilities of [`Attention`] as their own node, for a loss on them.
#[derive(Clone)]
struct Probabilities(Attention);

/// Arguments q, k and the mask bias.
impl Kernel for Probabilities {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let dims = self.0.dims(layouts[0], layouts[1], layouts[1])?;
        let kept = self.0.kept.as_ref().and_then(KeptProbs::take::<T>);
        if let Some(p) = kept.filter(|p| p.len() == dims.batch * dims.heads * dims.lq * dims.lk) {
            return Ok(p);
        }
        let scale = T::from(self.0.scale).unwrap();
        Ok(probs_forward(dims, inputs[0], inputs[1], inputs[2], scale))
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        let (b, lq, _) = layouts[0].shape().dims3().unwrap_or((0, 0, 0));
        let lk = layouts[1].shape().dims().get(1).copied().unwrap_or(0);
        Shape::from((b, self.0.heads, lq, lk))
    }
}

impl CustomOp2 for Probabilities {
    kernel_op!(2, "attention-probabilities", "attention probabilities", holding: [0.bias]);

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = ProbabilitiesGrad {
            probabilities: self.clone(),
            grad: grad.contiguous()?,
        };
        let flat = q.apply_op3_no_bwd(k, res, &op)?;
        let nq = q.elem_count();
        Ok((
            Some(flat.narrow(0, 0, nq)?.reshape(q.shape())?),
            Some(flat.narrow(0, nq, k.elem_count())?.reshape(k.shape())?),
        ))
    }
}

/// The backward pass of [`Probabilities`] over q, k and its output: `[dq, dk]` flattened, from
/// the probabilities' gradient it holds.
struct ProbabilitiesGrad {
    probabilities: Probabilities,
    grad: Tensor,
}

/// Arguments q, k, the probabilities and their gradient.
impl Kernel for ProbabilitiesGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let a = &self.probabilities.0;
        let dims = a.dims(layouts[0], layouts[1], layouts[1])?;
        if layouts[3].shape() != layouts[2].shape() {
            bail!(
                "attention probabilities' gradient: {:?} does not match the probabilities {:?}",
                layouts[3].dims(),
                layouts[2].dims()
            );
        }
        let scale = T::from(a.scale).unwrap();
        Ok(probs_backward(
            dims,
            (inputs[0], inputs[1]),
            inputs[2],
            inputs[3],
            scale,
        ))
    }

    fn out_shape(&self, layouts: &[&Layout]) -> Shape {
        Shape::from(layouts[0].shape().elem_count() + layouts[1].shape().elem_count())
    }
}

impl CustomOp3 for ProbabilitiesGrad {
    kernel_op!(
        3,
        "attention-probabilities-grad",
        "attention probabilities' gradient",
        holding: [grad]
    );
}

/// The probabilities `[b, heads, lq, lk]` that [`attention`] with the same arguments weighs
/// the values with, as one node differentiable in q and k (its backward reads the returned
/// probabilities instead of storing scores). A query row without a usable key gets zeros.
pub fn attention_probs(
    q: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return composed_probs(q, k, bias, heads, scale);
    }
    let op = Probabilities(Attention {
        bias: bias.contiguous()?,
        heads,
        scale,
        kept: None,
    });
    q.contiguous()?.apply_op2(&k.contiguous()?, op)
}

/// `sum(p * w)` over probabilities `p: [b, heads, q, k]` and a weight `w: [b, 1, q, k]` that
/// every head shares, as one node differentiable in `p` (`w` is a constant: it gets no
/// gradient). AutoCDSR's objective on the attention maps: candle's broadcast product keeps a
/// `p`-sized buffer and its backward pass also differentiates the constant side. The products
/// are formed in `p`'s dtype and summed in f64; the gradient `g * w` is what the broadcast
/// product's backward pass gives.
pub fn weighted_probs_sum(p: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !p.device().is_cpu() {
        return p.broadcast_mul(w)?.sum_all();
    }
    p.contiguous()?.apply_op2(&w.contiguous()?, WeightedSum)
}

/// Arguments p `[b, heads, q, k]` and w (`b * q * k` values).
struct WeightedSum;

impl WeightedSum {
    /// `(batch, heads, q * k)` of the arguments' layouts.
    fn dims(p: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
        let (b, h, q, k) = p.shape().dims4()?;
        if w.shape().elem_count() != b * q * k {
            bail!(
                "weighted probabilities' sum: weight {:?} does not fit probabilities {:?}",
                w.dims(),
                p.dims()
            );
        }
        Ok((b, h, q * k))
    }
}

impl Kernel for WeightedSum {
    fn run<T: Elem>(&self, inputs: &[&[T]], layouts: &[&Layout]) -> Result<Vec<T>> {
        let (b, h, n) = Self::dims(layouts[0], layouts[1])?;
        let (p, w) = (inputs[0], inputs[1]);
        // one partial sum per batch item, added in order: the same value on any thread count
        let partial: Vec<f64> = (0..b)
            .into_par_iter()
            .map(|i| {
                let wi = &w[i * n..(i + 1) * n];
                p[i * h * n..(i + 1) * h * n]
                    .chunks(n.max(1))
                    .map(|ph| {
                        ph.iter()
                            .zip(wi)
                            .map(|(&x, &y)| (x * y).widen())
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .collect();
        Ok(vec![T::from(partial.iter().sum::<f64>()).unwrap()])
    }

    fn out_shape(&self, _layouts: &[&Layout]) -> Shape {
        Shape::from(())
    }
}

impl CustomOp2 for WeightedSum {
    kernel_op!(2, "weighted-probabilities-sum");

    fn bwd(
        &self,
        p: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = WeightedSumGrad {
            grad: grad.contiguous()?,
            shape: p.shape().clone(),
        };
        Ok((Some(w.apply_op1_no_bwd(&op)?), None))
    }
}

/// The backward pass of [`WeightedSum`] over w: `g * w` broadcast over the heads, in p's
/// shape, from the scalar gradient `g` it holds.
struct WeightedSumGrad {
    grad: Tensor,
    shape: Shape,
}

/// Arguments w and the output gradient.
impl Kernel for WeightedSumGrad {
    fn run<T: Elem>(&self, inputs: &[&[T]], _layouts: &[&Layout]) -> Result<Vec<T>> {
        let (w, g) = (inputs[0], inputs[1]);
        let (b, h, q, k) = self.shape.dims4()?;
        if w.len() != b * q * k || g.len() != 1 {
            bail!("weighted probabilities' sum gradient: weight or gradient does not fit");
        }
        let n = q * k;
        let mut out = vec![T::zero(); b * h * n];
        out.par_chunks_mut(h * n.max(1))
            .zip(w.par_chunks(n.max(1)))
            .for_each(|(o, wi)| {
                for oh in o.chunks_mut(n.max(1)) {
                    for (o, &x) in oh.iter_mut().zip(wi) {
                        *o = g[0] * x;
                    }
                }
            });
        Ok(out)
    }

    fn out_shape(&self, _layouts: &[&Layout]) -> Shape {
        self.shape.clone()
    }
}

impl CustomOp1 for WeightedSumGrad {
    fn name(&self) -> &'static str {
        "weighted-probabilities-sum-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        run_f32_f64_holding(
            "weighted probabilities' sum gradient",
            self,
            &[(s1, l1)],
            &[&self.grad],
        )
    }
}

/// The heads of `t: [b, l, d]` side by side as `[b, heads, l, d / heads]`.
fn split_heads(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, d) = t.dims3()?;
    if heads == 0 || d % heads != 0 {
        bail!("attention: width {d} is not divisible by {heads} heads");
    }
    t.reshape((b, l, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// The probabilities `[b, heads, lq, lk]` of [`attention`] as graph nodes: the heads split,
/// [`super::bmm`], [`super::masked_softmax`] (candle's ops on another device than the CPU).
pub(super) fn composed_probs(
    q: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (qh, kh) = (split_heads(q, heads)?, split_heads(k, heads)?);
    super::masked_softmax(&super::bmm(&qh, &kh.t()?)?, bias, scale)
}

/// [`attention`] composed of graph nodes ([`composed_probs`], then [`super::bmm`] with the
/// values and the heads merged): the path of a tensor on another device than the CPU, and the
/// tests' reference. Returns the output `[b, lq, d]` and the probabilities.
pub(super) fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    let (b, lq, d) = q.dims3()?;
    let probs = composed_probs(q, k, bias, heads, scale)?;
    let out = super::bmm(&probs, &split_heads(v, heads)?)?
        .transpose(1, 2)?
        .reshape((b, lq, d))?;
    Ok((out, probs))
}

#[cfg(test)]
mod tests {
    use super::super::test_tensors::{gap, seeded};
    use super::super::AttnMask;
    use super::*;
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Var};

    /// Asserts that the gradients of `sum(fused * w)` and `sum(unfused * w)` with respect to
    /// each named variable agree to 1e-12 (case `i`); returns the fused node's gradients.
    fn same_gradients(
        i: usize,
        fused: &Tensor,
        unfused: &Tensor,
        w: &Tensor,
        vars: &[(&str, &Var)],
    ) -> GradStore {
        let grads = |t: &Tensor| (t * w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gu) = (grads(fused), grads(unfused));
        for (name, x) in vars {
            let (a, r) = (gf.get(x).unwrap(), gu.get(x).unwrap());
            assert!(
                gap(a, r) < 1e-12,
                "case {i}: d{name} differs by {}",
                gap(a, r)
            );
        }
        gf
    }

    /// (batch, lq, lk, d, heads, causal, key validity per sequence): causal self-attention
    /// with padding (the second sequence has no usable key) and cross-attention with more keys
    /// than queries.
    type Case = (usize, usize, usize, usize, usize, bool, Vec<Vec<bool>>);

    fn masked_cases() -> [Case; 2] {
        [
            (
                3,
                5,
                5,
                8,
                2,
                true,
                vec![
                    vec![false, false, true, true, true],
                    vec![false; 5],
                    vec![true; 5],
                ],
            ),
            (
                2,
                3,
                6,
                12,
                4,
                false,
                vec![
                    vec![true, false, true, false, true, true],
                    vec![false, false, false, false, false, true],
                ],
            ),
        ]
    }

    /// Causal self-attention with padding (one sequence fully padded: its rows have no key)
    /// and cross-attention with more keys than queries: values and all three gradients match
    /// the unfused ops in f64.
    #[test]
    fn attention_and_its_gradients_equal_the_unfused_ops() {
        let cases = masked_cases();
        for (i, (b, lq, lk, d, heads, causal, valid)) in cases.into_iter().enumerate() {
            let seed = 10 * i as u64;
            let q = Var::from_tensor(&seeded(&[b, lq, d], seed)).unwrap();
            let k = Var::from_tensor(&seeded(&[b, lk, d], seed + 1)).unwrap();
            let v = Var::from_tensor(&seeded(&[b, lk, d], seed + 2)).unwrap();
            let w = seeded(&[b, lq, d], seed + 3);
            let mask = AttnMask::new(&valid, lq, causal, DType::F64, &Device::Cpu).unwrap();
            let scale = 1.0 / ((d / heads) as f64).sqrt();
            let fused = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &mask.bias,
                heads,
                scale,
            )
            .unwrap();
            let unfused = composed_attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &mask.bias,
                heads,
                scale,
            )
            .unwrap()
            .0;
            assert!(gap(&fused, &unfused) < 1e-12, "case {i}: values differ");
            let gf = same_gradients(i, &fused, &unfused, &w, &[("q", &q), ("k", &k), ("v", &v)]);
            // A sequence without a usable key outputs zeros and passes no gradient.
            if i == 0 {
                let row = fused.get(1).unwrap();
                assert_eq!(
                    row.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap(),
                    0.0
                );
                let dq = gf.get(&q).unwrap().get(1).unwrap();
                assert_eq!(
                    dq.abs()
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

    /// The probabilities node against the head split, score product and masked softmax, in
    /// f64: values, and the gradients of a weighted sum of them (AutoCDSR's objective) with
    /// respect to q and k; a sequence without a usable key gets zero probabilities.
    #[test]
    fn attention_probs_and_their_gradients_equal_the_unfused_ops() {
        let cases = masked_cases();
        for (i, (b, lq, lk, d, heads, causal, valid)) in cases.into_iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let q = Var::from_tensor(&seeded(&[b, lq, d], seed)).unwrap();
            let k = Var::from_tensor(&seeded(&[b, lk, d], seed + 1)).unwrap();
            let w = seeded(&[b, heads, lq, lk], seed + 2);
            let mask = AttnMask::new(&valid, lq, causal, DType::F64, &Device::Cpu).unwrap();
            let scale = 1.0 / ((d / heads) as f64).sqrt();
            let fused =
                attention_probs(q.as_tensor(), k.as_tensor(), &mask.bias, heads, scale).unwrap();
            let unfused =
                composed_probs(q.as_tensor(), k.as_tensor(), &mask.bias, heads, scale).unwrap();
            assert_eq!(fused.dims(), &[b, heads, lq, lk]);
            assert!(gap(&fused, &unfused) < 1e-12, "case {i}: values differ");
            same_gradients(i, &fused, &unfused, &w, &[("q", &q), ("k", &k)]);
            if i == 0 {
                let row = fused.get(1).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(row.to_scalar::<f64>().unwrap(), 0.0);
            }
        }
    }

    /// `sum(out * wo) + sum(probs * wp)`: a loss on both outputs of an attention call.
    fn both_outputs_loss(out: &Tensor, probs: &Tensor, wo: &Tensor, wp: &Tensor) -> Tensor {
        ((out * wo).unwrap().sum_all().unwrap() + (probs * wp).unwrap().sum_all().unwrap()).unwrap()
    }

    /// The output and probabilities from one computation against the unfused ops in f64:
    /// values, and the gradients of a loss on both with respect to q, k and v.
    #[test]
    fn attention_with_probs_and_its_gradients_equal_the_unfused_ops() {
        for (i, (b, lq, lk, d, heads, causal, valid)) in masked_cases().into_iter().enumerate() {
            let seed = 200 + 10 * i as u64;
            let [q, k, v] = [(lq, 0), (lk, 1), (lk, 2)]
                .map(|(l, s)| Var::from_tensor(&seeded(&[b, l, d], seed + s)).unwrap());
            let wo = seeded(&[b, lq, d], seed + 3);
            let wp = seeded(&[b, heads, lq, lk], seed + 4);
            let mask = AttnMask::new(&valid, lq, causal, DType::F64, &Device::Cpu).unwrap();
            let scale = 1.0 / ((d / heads) as f64).sqrt();
            let args = (q.as_tensor(), k.as_tensor(), v.as_tensor(), &mask.bias);
            let fused = attention_with_probs(args.0, args.1, args.2, args.3, heads, scale).unwrap();
            let unfused = composed_attention(args.0, args.1, args.2, args.3, heads, scale).unwrap();
            assert!(
                gap(&fused.0, &unfused.0) < 1e-12,
                "case {i}: outputs differ"
            );
            assert!(
                gap(&fused.1, &unfused.1) < 1e-12,
                "case {i}: probabilities differ"
            );
            let gf = both_outputs_loss(&fused.0, &fused.1, &wo, &wp)
                .backward()
                .unwrap();
            let gu = both_outputs_loss(&unfused.0, &unfused.1, &wo, &wp)
                .backward()
                .unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, r) = (gf.get(x).unwrap(), gu.get(x).unwrap());
                assert!(
                    gap(a, r) < 1e-12,
                    "case {i}: d{name} differs by {}",
                    gap(a, r)
                );
            }
        }
    }

    /// In f32 the shared computation gives exactly the bits of [`attention`] and
    /// [`attention_probs`] called separately: outputs, probabilities, and the gradients of the
    /// output alone (the recommendation loss's backward pass) and of the probabilities alone
    /// (AutoCDSR's), on the heads of a causal padded batch.
    #[test]
    fn attention_with_probs_in_f32_has_the_bits_of_the_separate_nodes() {
        let (b, l, d, heads) = (3, 9, 16, 2);
        let valid = vec![
            vec![true; l],
            vec![false, false, false, false, true, true, true, true, true],
            vec![false; l],
        ];
        let mask = AttnMask::new(&valid, l, true, DType::F32, &Device::Cpu).unwrap();
        let f32_var = |seed| {
            Var::from_tensor(&seeded(&[b, l, d], seed).to_dtype(DType::F32).unwrap()).unwrap()
        };
        let (q, k, v) = (f32_var(300), f32_var(301), f32_var(302));
        let wo = seeded(&[b, l, d], 303).to_dtype(DType::F32).unwrap();
        let wp = seeded(&[b, heads, l, l], 304).to_dtype(DType::F32).unwrap();
        let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let (out, probs) = attention_with_probs(qt, kt, vt, &mask.bias, heads, 0.25).unwrap();
        let out_alone = attention(qt, kt, vt, &mask.bias, heads, 0.25).unwrap();
        let probs_alone = attention_probs(qt, kt, &mask.bias, heads, 0.25).unwrap();
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&out), bits(&out_alone));
        assert_eq!(bits(&probs), bits(&probs_alone));
        let loss = |t: &Tensor, w: &Tensor| (t * w).unwrap().sum_all().unwrap();
        let pairs = [
            (loss(&out, &wo), loss(&out_alone, &wo)),
            (loss(&probs, &wp), loss(&probs_alone, &wp)),
        ];
        for (j, (shared, alone)) in pairs.iter().enumerate() {
            let (gs, ga) = (shared.backward().unwrap(), alone.backward().unwrap());
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                match (gs.get(x), ga.get(x)) {
                    (Some(s), Some(a)) => assert_eq!(bits(s), bits(a), "loss {j}: d{name}"),
                    (None, None) => {}
                    _ => panic!("loss {j}: d{name} exists on one side only"),
                }
            }
        }
    }

    /// The weighted sum of probabilities against candle's broadcast product and sum: the value
    /// to rounding, the gradient exactly (in f64 and in f32), and a weight of the wrong size is
    /// an error.
    #[test]
    fn weighted_probs_sum_equals_the_broadcast_product() {
        let (b, h, q, k) = (3, 2, 5, 7);
        for dtype in [DType::F64, DType::F32] {
            let p = Var::from_tensor(&seeded(&[b, h, q, k], 400).to_dtype(dtype).unwrap()).unwrap();
            let w = seeded(&[b, 1, q, k], 401).to_dtype(dtype).unwrap();
            let fused = (weighted_probs_sum(p.as_tensor(), &w).unwrap() / 2.0).unwrap();
            let plain = (p.broadcast_mul(&w).unwrap().sum_all().unwrap() / 2.0).unwrap();
            let value = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(
                (value(&fused) - value(&plain)).abs() < tol,
                "{dtype:?}: values differ"
            );
            let (gf, gp) = (fused.backward().unwrap(), plain.backward().unwrap());
            let bits = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            assert_eq!(
                bits(gf.get(&p).unwrap()),
                bits(gp.get(&p).unwrap()),
                "{dtype:?}"
            );
        }
        let p = seeded(&[b, h, q, k], 402);
        let err = weighted_probs_sum(&p, &seeded(&[b, 1, q, k + 1], 403)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn attention_in_f32_is_close_to_f64_and_rejects_mismatched_inputs() {
        let (b, l, d, heads) = (2, 7, 16, 4);
        let valid = vec![
            vec![true; l],
            vec![false, false, false, true, true, true, true],
        ];
        let mask64 = AttnMask::new(&valid, l, true, DType::F64, &Device::Cpu).unwrap();
        let mask32 = AttnMask::new(&valid, l, true, DType::F32, &Device::Cpu).unwrap();
        let x: Vec<Tensor> = (0..3).map(|s| seeded(&[b, l, d], 40 + s)).collect();
        let f64_out = attention(&x[0], &x[1], &x[2], &mask64.bias, heads, 0.5).unwrap();
        let x32: Vec<Tensor> = x.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
        let f32_out = attention(&x32[0], &x32[1], &x32[2], &mask32.bias, heads, 0.5)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(gap(&f64_out, &f32_out) < 1e-5);
        let err = attention(&x[0], &x[1], &x[2], &mask64.bias, 3, 0.5).unwrap_err();
        assert!(
            err.to_string().contains("not divisible by 3 heads"),
            "{err}"
        );
        let short = seeded(&[b, l - 1, d], 50);
        let err = attention(&x[0], &short, &x[2], &mask64.bias, heads, 0.5).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        let op = AttentionGrad {
            attention: Attention {
                bias: mask64.bias.clone(),
                heads,
                scale: 0.5,
                kept: None,
            },
            grad: seeded(&[b, l, d + 1], 51),
        };
        let err = x[0].apply_op3_no_bwd(&x[1], &x[2], &op).unwrap_err();
        assert!(err.to_string().contains("output gradient"), "{err}");
    }
}
