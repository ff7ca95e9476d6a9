//! Orthogonality of cross-attention outputs: |cos(X, X')|, |cos(X, Y)|, the split of X' into
//! its parts parallel and orthogonal to X, and principal angles between subspaces.
//!
//! Definitions (methods.md, "Orthogonality"):
//! - `X` is the GCA query input and `X'` the cross-attention output before gating, both
//!   `[batch, len, d]`, with a `[batch, len]` mask (1 = valid query position).
//!   `|cos(X, X')|` is the mean over batch `b` and valid positions `i` of `|cos(X_bi, X'_bi)|`.
//! - A row pair where either row has zero norm has cosine 0 (as PyTorch's
//!   `F.cosine_similarity` with its `eps` gives); such pairs are counted in `n_zero_norm`.
//!   [`ZeroRows::Exclude`] leaves them out of the mean instead. No result is ever NaN.
//! - `|cos(X, Y)|` against the key/value input `Y` (`[batch, len_kv, d]`):
//!   when `len_kv == len` the streams share the merged timeline (ABXI training layout), and
//!   row `X_bi` is compared with `Y_bi` ([`CosXY::Aligned`]); otherwise `X_bi` is compared
//!   with the mean of the non-zero rows of `Y_b` ([`CosXY::MeanOfY`]).
//! - Parallel / orthogonal split: `X'_par = (X'·X / |X|²) X`, `X'_orth = X' - X'_par`.
//!   The energy shares are `Σ|X'_par|² / Σ|X'|²` and `Σ|X'_orth|² / Σ|X'|²` over valid rows
//!   (they add up to 1). A zero row of `X` puts all of `X'` in the orthogonal part.
//! - Principal angles between the subspaces spanned by the top-`k` right singular vectors of
//!   the (valid) rows of `X` and of `X'`: the eigenvectors of the `d x d` Gram matrices
//!   `XᵀX` and `X'ᵀX'` (accumulated in f64 in one streaming pass), then the singular values
//!   of `V_Xᵀ V_X'` are the cosines of the angles.
//!
//! Decompositions use `faer` rather than `ndarray-linalg`: faer is pure Rust, so the crate
//! builds anywhere without a system LAPACK/BLAS or a Fortran toolchain.
//!
//! Speed and size: row loops run on f32 data in 8-lane chunks that compilers vectorise,
//! per-row results are combined in f64, and rows are split across threads with rayon.
//! Inputs are ndarray views, so a memory-mapped tensor file ([`crate::runs::MappedTensors`],
//! [`map_npy_f32`]) is processed without being read into memory: files larger than memory
//! stream through the page cache.

use faer::{Mat, Side};
use ndarray::{ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

pub use crate::runs::tensors::{map_npy_f32, MappedNpy};

/// How a row pair with a zero-norm row enters the mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroRows {
    /// Cosine 0, counted (PyTorch `F.cosine_similarity` behaviour; default).
    #[default]
    CountAsZero,
    /// Left out of the mean and the distribution (still counted in `n_zero_norm`).
    Exclude,
}

/// How `|cos(X, Y)|` pairs query rows with key/value rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CosXY {
    /// `Aligned` when `len_kv == len`, else `MeanOfY` (default).
    #[default]
    Auto,
    /// `X_bi` against `Y_bi`.
    Aligned,
    /// `X_bi` against the mean of the non-zero rows of `Y_b`.
    MeanOfY,
}

/// Options of the cosine statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosOptions {
    pub zero_rows: ZeroRows,
    /// Bins of the |cos| histogram over `[0, 1]` (quantiles are interpolated within a bin).
    pub histogram_bins: usize,
}

impl Default for CosOptions {
    fn default() -> Self {
        CosOptions {
            zero_rows: ZeroRows::CountAsZero,
            histogram_bins: 1000,
        }
    }
}

/// Errors of the orthogonality statistics: shapes that disagree.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error("shapes disagree: {0}")]
    Mismatch(String),
}

/// Mean |cos| at one sequence position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionCos {
    pub position: usize,
    pub mean_abs_cos: f64,
    pub n: u64,
}

/// |cos| statistics of a set of row pairs (see the module doc for the definitions).
#[derive(Debug, Clone, PartialEq)]
pub struct CosStats {
    /// Mean |cos| over the counted pairs; 0 when there are none.
    pub mean_abs_cos: f64,
    /// Pairs counted in the mean.
    pub n: u64,
    /// Valid pairs with a zero-norm row (counted as 0 or excluded, per [`ZeroRows`]).
    pub n_zero_norm: u64,
    /// Mean |cos| per position of the `len` axis (positions with no valid row have `n = 0`).
    pub per_position: Vec<PositionCos>,
    /// Counts of |cos| in `histogram_bins` equal bins over `[0, 1]`.
    pub histogram: Vec<u64>,
    /// Σ|X'|², Σ|X'_par|² over the valid rows (the second argument's energy split).
    pub energy_total: f64,
    pub energy_parallel: f64,
}

impl CosStats {
    /// Share of the second argument's energy parallel to the first (0 when it has none).
    pub fn parallel_share(&self) -> f64 {
        if self.energy_total > 0.0 {
            (self.energy_parallel / self.energy_total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Share orthogonal to the first argument: `1 - parallel_share` (0 when no energy).
    pub fn orthogonal_share(&self) -> f64 {
        if self.energy_total > 0.0 {
            1.0 - self.parallel_share()
        } else {
            0.0
        }
    }

    /// The `q`-quantile (0..=1) of |cos| from the histogram, linear within a bin; NaN-free:
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let bins = self.histogram.len() as f64;
        let target = q.clamp(0.0, 1.0) * total as f64;
        let mut cum = 0.0;
        for (i, &c) in self.histogram.iter().enumerate() {
            let next = cum + c as f64;
            if c > 0 && next >= target {
                let frac = ((target - cum) / c as f64).clamp(0.0, 1.0);
                return (i as f64 + frac) / bins;
            }
            cum = next;
        }
        1.0
    }
}

/// Dot product and squared norms of two rows: f32 in 8 independent lanes (vectorisable),
/// summed in f64.
#[inline]
pub fn dot_norms(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let mut d = [0f32; 8];
    let mut na = [0f32; 8];
    let mut nb = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            d[k] += x[k] * y[k];
            na[k] += x[k] * x[k];
            nb[k] += y[k] * y[k];
        }
    }
    let mut dot: f64 = d.iter().map(|&v| v as f64).sum();
    let mut n_a: f64 = na.iter().map(|&v| v as f64).sum();
    let mut n_b: f64 = nb.iter().map(|&v| v as f64).sum();
    for (x, y) in ra.iter().zip(rb) {
        dot += (*x as f64) * (*y as f64);
        n_a += (*x as f64) * (*x as f64);
        n_b += (*y as f64) * (*y as f64);
    }
    (dot, n_a, n_b)
}

/// One valid row pair `(a, b)` as [`CosStats`] counts it: all that the statistics need of the
/// pair, so a run can keep these per row in place of its tensors
/// ([`crate::analysis::gca_tensors::capture_stats_frame`]) and its statistics be recomputed
/// exactly ([`cos_stats_of_rows`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowCos {
    /// The row's position on the `len` axis.
    pub position: usize,
    /// `|cos(a, b)|`; `None` when either row has zero norm (see [`ZeroRows`]).
    pub abs_cos: Option<f64>,
    /// `|b|²`, and the part of it parallel to `a`, `(a·b)² / |a|²` (0 when `a` is zero).
    pub energy_total: f64,
    pub energy_parallel: f64,
}

/// [`RowCos`] of one row pair at `position`.
#[inline]
pub fn row_cos(a: &[f32], b: &[f32], position: usize) -> RowCos {
    let (dot, na, nb) = dot_norms(a, b);
    RowCos {
        position,
        abs_cos: (na > 0.0 && nb > 0.0).then(|| (dot.abs() / (na.sqrt() * nb.sqrt())).min(1.0)),
        energy_total: nb,
        energy_parallel: if na > 0.0 { dot * dot / na } else { 0.0 },
    }
}

/// The [`CosStats`] of a set of row pairs given as [`RowCos`] (sequences of length `len`):
/// the same statistics as [`abs_cos`] on the tensors the rows came from (up to the order of
/// floating-point sums). A row whose position is not below `len` is an error.
pub fn cos_stats_of_rows(
    rows: &[RowCos],
    len: usize,
    options: CosOptions,
) -> Result<CosStats, ShapeError> {
    let mut acc = Acc::new(len, options.histogram_bins);
    for row in rows {
        if row.position >= len {
            return Err(ShapeError::Mismatch(format!(
                "row position {} is outside a sequence of length {len}",
                row.position
            )));
        }
        acc.add_row(row, options.zero_rows);
    }
    Ok(acc.finish())
}

/// Every valid row pair of `[batch, len, d]` tensors `x`, `x_prime` (mask optional, as in
/// [`abs_cos`]) as `(b, RowCos)`, in order of `b` then position.
pub fn row_cos_pairs(
    x: ArrayView3<'_, f32>,
    x_prime: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
) -> Result<Vec<(usize, RowCos)>, ShapeError> {
    same_shape(x.shape(), x_prime.shape())?;
    let (batch, len, _) = x.dim();
    check_mask(mask, batch, len)?;
    let x = x.as_standard_layout();
    let xp = x_prime.as_standard_layout();
    let mut rows = Vec::new();
    for b in 0..batch {
        for i in 0..len {
            if mask.is_some_and(|m| m[[b, i]] == 0) {
                continue;
            }
            let a = x.slice(ndarray::s![b, i, ..]);
            let c = xp.slice(ndarray::s![b, i, ..]);
            rows.push((
                b,
                row_cos(
                    a.as_slice().expect("standard layout"),
                    c.as_slice().expect("standard layout"),
                    i,
                ),
            ));
        }
    }
    Ok(rows)
}

/// Partial sums over a chunk of rows; merged across threads.
#[derive(Clone)]
struct Acc {
    sum: f64,
    n: u64,
    n_zero: u64,
    pos_sum: Vec<f64>,
    pos_n: Vec<u64>,
    hist: Vec<u64>,
    e_total: f64,
    e_par: f64,
}

impl Acc {
    fn new(len: usize, bins: usize) -> Self {
        Acc {
            sum: 0.0,
            n: 0,
            n_zero: 0,
            pos_sum: vec![0.0; len],
            pos_n: vec![0; len],
            hist: vec![0; bins.max(1)],
            e_total: 0.0,
            e_par: 0.0,
        }
    }

    #[inline]
    fn add(&mut self, a: &[f32], b: &[f32], position: usize, zero_rows: ZeroRows) {
        self.add_row(&row_cos(a, b, position), zero_rows);
    }

    #[inline]
    fn add_row(&mut self, row: &RowCos, zero_rows: ZeroRows) {
        let position = row.position;
        self.e_total += row.energy_total;
        self.e_par += row.energy_parallel;
        if row.abs_cos.is_none() {
            self.n_zero += 1;
            if zero_rows == ZeroRows::Exclude {
                return;
            }
        }
        let c = row.abs_cos.unwrap_or(0.0);
        self.sum += c;
        self.n += 1;
        self.pos_sum[position] += c;
        self.pos_n[position] += 1;
        let bins = self.hist.len();
        let bin = ((c * bins as f64) as usize).min(bins - 1);
        self.hist[bin] += 1;
    }

    fn merge(mut self, o: Acc) -> Acc {
        self.sum += o.sum;
        self.n += o.n;
        self.n_zero += o.n_zero;
        for (a, b) in self.pos_sum.iter_mut().zip(&o.pos_sum) {
            *a += b;
        }
        for (a, b) in self.pos_n.iter_mut().zip(&o.pos_n) {
            *a += b;
        }
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
        self.e_total += o.e_total;
        self.e_par += o.e_par;
        self
    }

    fn finish(self) -> CosStats {
        CosStats {
            mean_abs_cos: if self.n > 0 {
                self.sum / self.n as f64
            } else {
                0.0
            },
            n: self.n,
            n_zero_norm: self.n_zero,
            per_position: self
                .pos_sum
                .iter()
                .zip(&self.pos_n)
                .enumerate()
                .map(|(i, (&s, &n))| PositionCos {
                    position: i,
                    mean_abs_cos: if n > 0 { s / n as f64 } else { 0.0 },
                    n,
                })
                .collect(),
            histogram: self.hist,
            energy_total: self.e_total,
            energy_parallel: self.e_par,
        }
    }
}

/// X and X' must have one shape.
fn same_shape(x: &[usize], x_prime: &[usize]) -> Result<(), ShapeError> {
    if x == x_prime {
        Ok(())
    } else {
        Err(ShapeError::Mismatch(format!(
            "X is {x:?} but X' is {x_prime:?}"
        )))
    }
}

fn check_mask(
    mask: Option<ArrayView2<'_, u8>>,
    batch: usize,
    len: usize,
) -> Result<(), ShapeError> {
    if let Some(m) = mask {
        if m.dim() != (batch, len) {
            return Err(ShapeError::Mismatch(format!(
                "mask is {:?}, expected [{batch}, {len}]",
                m.shape()
            )));
        }
    }
    Ok(())
}

/// Batches per rayon task: enough rows per task to amortise scheduling.
fn batches_per_task(len: usize, d: usize) -> usize {
    (65_536 / (len * d).max(1)).max(1)
}

/// |cos(X, X')| and the energy split of `X'` relative to `X`, for `[batch, len, d]` tensors
/// and an optional `[batch, len]` mask (absent: every position is valid).
///
/// ```
/// use ndarray::array;
/// use cdsr_lab::analysis::orthogonality::{abs_cos, CosOptions};
/// let x = array![[[1.0f32, 0.0], [1.0, 1.0]]];
/// let xp = array![[[0.0f32, 3.0], [-2.0, -2.0]]]; // orthogonal, then anti-parallel
/// let s = abs_cos(x.view(), xp.view(), None, CosOptions::default()).unwrap();
/// assert!((s.mean_abs_cos - 0.5).abs() < 1e-12);
/// assert!((s.parallel_share() - 8.0 / 17.0).abs() < 1e-12);
/// ```
pub fn abs_cos(
    x: ArrayView3<'_, f32>,
    x_prime: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
    options: CosOptions,
) -> Result<CosStats, ShapeError> {
    same_shape(x.shape(), x_prime.shape())?;
    let (batch, len, d) = x.dim();
    check_mask(mask, batch, len)?;
    let x = x.as_standard_layout();
    let xp = x_prime.as_standard_layout();
    let step = batches_per_task(len, d);
    let acc = (0..batch.div_ceil(step))
        .into_par_iter()
        .map(|t| {
            let mut acc = Acc::new(len, options.histogram_bins);
            for b in t * step..((t + 1) * step).min(batch) {
                for i in 0..len {
                    if mask.is_some_and(|m| m[[b, i]] == 0) {
                        continue;
                    }
                    let a = x.slice(ndarray::s![b, i, ..]);
                    let c = xp.slice(ndarray::s![b, i, ..]);
                    acc.add(
                        a.as_slice().expect("standard layout"),
                        c.as_slice().expect("standard layout"),
                        i,
                        options.zero_rows,
                    );
                }
            }
            acc
        })
        .reduce(|| Acc::new(len, options.histogram_bins), Acc::merge);
    Ok(acc.finish())
}

/// Per sequence `b`: `|cos(X_b,position, X'_b,position)|` at one position of `[batch, len, d]`
/// tensors, e.g. the scored (last) position of each test case. `None` where the mask (optional
/// `[batch, len]`) marks the position as padding or either row has zero norm: the cosine is
/// undefined there, and a per-case analysis must not read it as "orthogonal".
///
/// ```
/// use ndarray::array;
/// use cdsr_lab::analysis::orthogonality::abs_cos_at;
/// let x = array![[[1.0f32, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]];
/// let xp = array![[[0.0f32, 3.0], [-2.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]];
/// let c = abs_cos_at(x.view(), xp.view(), None, 1).unwrap();
/// assert!((c[0].unwrap() - 0.5f64.sqrt()).abs() < 1e-7);
/// assert_eq!(c[1], None); // a zero row of X
/// ```
pub fn abs_cos_at(
    x: ArrayView3<'_, f32>,
    x_prime: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
    position: usize,
) -> Result<Vec<Option<f64>>, ShapeError> {
    same_shape(x.shape(), x_prime.shape())?;
    let (batch, len, _) = x.dim();
    check_mask(mask, batch, len)?;
    if position >= len {
        return Err(ShapeError::Mismatch(format!(
            "position {position} is outside a sequence of length {len}"
        )));
    }
    Ok((0..batch)
        .map(|b| {
            if mask.is_some_and(|m| m[[b, position]] == 0) {
                return None;
            }
            let a: Vec<f32> = x.slice(ndarray::s![b, position, ..]).to_vec();
            let c: Vec<f32> = x_prime.slice(ndarray::s![b, position, ..]).to_vec();
            let (dot, na, nb) = dot_norms(&a, &c);
            (na > 0.0 && nb > 0.0).then(|| (dot.abs() / (na.sqrt() * nb.sqrt())).min(1.0))
        })
        .collect())
}

/// |cos| of row pairs of two `[n, d]` matrices (every row valid); `per_position` has a single
/// entry. This is the flat form used for very large row sets.
pub fn abs_cos_rows(
    x: ArrayView2<'_, f32>,
    x_prime: ArrayView2<'_, f32>,
    options: CosOptions,
) -> Result<CosStats, ShapeError> {
    same_shape(x.shape(), x_prime.shape())?;
    let (n, d) = x.dim();
    let x = x.as_standard_layout();
    let xp = x_prime.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let ps = xp.as_slice().expect("standard layout");
    if n == 0 || d == 0 {
        return Ok(Acc::new(1, options.histogram_bins).finish());
    }
    let rows_per_task = (65_536 / d).max(1);
    let acc = xs
        .par_chunks(rows_per_task * d)
        .zip(ps.par_chunks(rows_per_task * d))
        .map(|(a, b)| {
            let mut acc = Acc::new(1, options.histogram_bins);
            for (ra, rb) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
                acc.add(ra, rb, 0, options.zero_rows);
            }
            acc
        })
        .reduce(|| Acc::new(1, options.histogram_bins), Acc::merge);
    Ok(acc.finish())
}

/// |cos(X, Y)| between the query input `X` (`[batch, len, d]`, mask `[batch, len]`) and the
/// key/value input `Y` (`[batch, len_kv, d]`); see [`CosXY`] for how rows are paired.
/// The energy fields describe `Y` (or the mean of `Y`) relative to `X`.
pub fn abs_cos_xy(
    x: ArrayView3<'_, f32>,
    y: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
    mode: CosXY,
    options: CosOptions,
) -> Result<CosStats, ShapeError> {
    let paired = key_value_rows(x, y, mask, mode)?;
    abs_cos(x, paired.view(), mask, options)
}

/// The key/value rows that [`abs_cos_xy`] pairs with each query row of `x`, as a
/// `[batch, len, d]` tensor: `y` itself ([`CosXY::Aligned`]) or the mean of the non-zero rows
/// of each `Y_b` broadcast to every position ([`CosXY::MeanOfY`]).
pub fn key_value_rows<'a>(
    x: ArrayView3<'_, f32>,
    y: ArrayView3<'a, f32>,
    mask: Option<ArrayView2<'_, u8>>,
    mode: CosXY,
) -> Result<ndarray::CowArray<'a, f32, ndarray::Ix3>, ShapeError> {
    let (batch, len, d) = x.dim();
    let (yb, len_kv, yd) = y.dim();
    if yb != batch || yd != d {
        return Err(ShapeError::Mismatch(format!(
            "X is {:?} but Y is {:?} (batch and d must agree)",
            x.shape(),
            y.shape()
        )));
    }
    let mode = match mode {
        CosXY::Auto if len_kv == len => CosXY::Aligned,
        CosXY::Auto => CosXY::MeanOfY,
        m => m,
    };
    check_mask(mask, batch, len)?;
    match mode {
        CosXY::Aligned => {
            if len_kv != len {
                return Err(ShapeError::Mismatch(format!(
                    "aligned |cos(X,Y)| needs len_kv == len, got {len_kv} and {len}"
                )));
            }
            Ok(y.into())
        }
        _ => {
            // Mean of the non-zero Y rows of each sequence, broadcast to every query position.
            let mut ybar = ndarray::Array3::<f32>::zeros((batch, len, d));
            for b in 0..batch {
                let mut sum = vec![0f64; d];
                let mut n = 0usize;
                for j in 0..len_kv {
                    let row = y.slice(ndarray::s![b, j, ..]);
                    if row.iter().any(|&v| v != 0.0) {
                        n += 1;
                        for (s, &v) in sum.iter_mut().zip(row.iter()) {
                            *s += v as f64;
                        }
                    }
                }
                if n > 0 {
                    for i in 0..len {
                        for (k, s) in sum.iter().enumerate() {
                            ybar[[b, i, k]] = (*s / n as f64) as f32;
                        }
                    }
                }
            }
            Ok(ybar.into())
        }
    }
}

/// Splits one row `x'` into its part parallel to `x` and its part orthogonal to `x`
/// (`x' = par + orth`); a zero `x` gives `par = 0`.
pub fn split_parallel_orthogonal(x: &[f32], x_prime: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (dot, nx, _) = dot_norms(x, x_prime);
    let coef = if nx > 0.0 { dot / nx } else { 0.0 };
    let par: Vec<f32> = x.iter().map(|&v| (coef * v as f64) as f32).collect();
    let orth = x_prime.iter().zip(&par).map(|(&a, &p)| a - p).collect();
    (par, orth)
}

/// The `d x d` Gram matrix `Σ r rᵀ` over the valid rows of a `[batch, len, d]` tensor, in f64.
pub fn gram(
    x: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
) -> Result<Mat<f64>, ShapeError> {
    let (batch, len, d) = x.dim();
    check_mask(mask, batch, len)?;
    let g = (0..batch)
        .into_par_iter()
        .map(|b| {
            let seq = x.index_axis(Axis(0), b);
            let mut g = vec![0f64; d * d];
            for (i, row) in seq.axis_iter(Axis(0)).enumerate() {
                if mask.is_some_and(|m| m[[b, i]] == 0) {
                    continue;
                }
                let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                for p in 0..d {
                    let rp = r[p];
                    if rp == 0.0 {
                        continue;
                    }
                    let gp = &mut g[p * d..(p + 1) * d];
                    for (gq, rq) in gp.iter_mut().zip(&r) {
                        *gq += rp * rq;
                    }
                }
            }
            g
        })
        .reduce(
            || vec![0f64; d * d],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        );
    Ok(Mat::from_fn(d, d, |i, j| g[i * d + j]))
}

/// Errors of the decompositions.
#[derive(Debug, thiserror::Error)]
pub enum AngleError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("k = {k} must be between 1 and d = {d}")]
    K { k: usize, d: usize },
    #[error("eigendecomposition failed: {0}")]
    Decomposition(String),
}

/// The top-`k` eigenvectors (columns, `d x k`) of a symmetric Gram matrix: an orthonormal
/// basis of the dominant `k`-dimensional row subspace.
pub fn top_subspace(gram: &Mat<f64>, k: usize) -> Result<Mat<f64>, AngleError> {
    let d = gram.nrows();
    if k == 0 || k > d {
        return Err(AngleError::K { k, d });
    }
    let evd = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| AngleError::Decomposition(format!("{e:?}")))?;
    let u = evd.U();
    // Eigenvalues come in nondecreasing order: the last k columns span the top subspace.
    Ok(Mat::from_fn(d, k, |i, j| u[(i, d - 1 - j)]))
}

/// Principal angles (radians, ascending) between two subspaces given by orthonormal bases
/// (`d x k` each): `acos` of the singular values of `AᵀB`.
pub fn principal_angles_between(a: &Mat<f64>, b: &Mat<f64>) -> Result<Vec<f64>, AngleError> {
    if a.nrows() != b.nrows() {
        return Err(ShapeError::Mismatch(format!(
            "bases live in R^{} and R^{}",
            a.nrows(),
            b.nrows()
        ))
        .into());
    }
    let m = a.as_ref().transpose() * b.as_ref();
    let s = m
        .singular_values()
        .map_err(|e| AngleError::Decomposition(format!("{e:?}")))?;
    Ok(s.into_iter().map(|c| c.clamp(-1.0, 1.0).acos()).collect())
}

/// Principal angles between the top-`k` row subspaces of `X` and `X'` (valid rows only).
pub fn principal_angles(
    x: ArrayView3<'_, f32>,
    x_prime: ArrayView3<'_, f32>,
    mask: Option<ArrayView2<'_, u8>>,
    k: usize,
) -> Result<Vec<f64>, AngleError> {
    same_shape(x.shape(), x_prime.shape())?;
    let a = top_subspace(&gram(x, mask)?, k)?;
    let b = top_subspace(&gram(x_prime, mask)?, k)?;
    principal_angles_between(&a, &b)
}
