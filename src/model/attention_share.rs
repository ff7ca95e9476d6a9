//! Cross-domain attention share `a_cd` (AutoCDSR): how much attention mass the tokens of a
//! merged cross-domain sequence put on tokens of the *other* domain(s).
//!
//! Owns: the definition of `a_cd` on a self-attention map, the matching 0/1 mask that a
//! differentiable training objective multiplies with the attention probabilities (so the logged
//! value and the trained value are the same number by construction), and the AutoCDSR+ share of
//! attention onto information-bottleneck (IB) tokens.
//!
//! For one sample `b`, head `h` of a layer with attention probabilities `P[b, h, i, j]`
//! (query row `i`, key `j`), valid (non-padding) positions `V` and domain labels `d`:
//!
//! ```text
//! raw[b, h]  = sum_{i in V} sum_{j in V, d(j) != d(i)} P[b, h, i, j]
//! norm[b, h] = raw[b, h] / |V|          (mean over valid query rows; 0 when |V| = 0)
//! ```
//!
//! Padding rows and padding keys are excluded (mass a model puts on a padding key is not
//! counted anywhere). A sample without valid tokens has share 0 (not NaN); a sample whose
//! tokens all come from one domain has share 0.
//!
//! ```
//! use cdsr_lab::model::attention_share::{attention_share, ShareConfig};
//! use ndarray::{array, Array4};
//! // one sample, one head, three tokens: A, B, A (labels 0 and 1); causal attention map
//! let p = Array4::from_shape_vec((1, 1, 3, 3), vec![
//!     1.0, 0.0, 0.0,
//!     0.25, 0.75, 0.0,
//!     0.5, 0.2, 0.3,
//! ]).unwrap();
//! let labels = array![[0i64, 1, 0]];
//! let valid = array![[true, true, true]];
//! let share = attention_share(p.view(), labels.view(), valid.view(), &ShareConfig::two_domains()).unwrap();
//! // row 0: 0; row 1 (B) puts 0.25 on A; row 2 (A) puts 0.2 on B
//! assert!((share.raw[[0, 0]] - 0.45).abs() < 1e-6); // f32 inputs
//! assert!((share.norm[[0, 0]] - 0.15).abs() < 1e-6);
//! ```

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView4, Axis, Zip};
use rayon::prelude::*;

use crate::data::{Dataset, ItemId};

/// What to do with a valid token whose domain label is not one of the configured domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDomain {
    /// Refuse the batch with [`AttentionShareError::UnknownDomain`] (default: a label outside
    /// the configured domains is almost always a data bug).
    #[default]
    Error,
    /// Treat the token like padding: it is neither a query row nor a key.
    Exclude,
    /// Keep the token as a domain of its own: attention between it and any other label counts
    /// as cross-domain (e.g. KuaiRand tabs other than the two modelled ones).
    Keep,
}

/// Which domain labels are legitimate, and the policy for the others.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShareConfig {
    /// The configured domain labels, e.g. `[0, 1]` for domains A and B, `[9, 4]` for KuaiRand-1K.
    pub domains: Vec<i64>,
    #[serde(default)]
    pub unknown: UnknownDomain,
}

impl ShareConfig {
    /// Labels `0` (domain A) and `1` (domain B), as produced by [`domain_labels`].
    pub fn two_domains() -> Self {
        ShareConfig {
            domains: vec![0, 1],
            unknown: UnknownDomain::Error,
        }
    }
}

/// Errors from the attention-share computations. Positions are 0-based.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AttentionShareError {
    #[error("attention map must be [batch, heads, len, len]; got {got:?}")]
    NotSquare { got: Vec<usize> },
    #[error("{what} has shape {got:?}, but the attention map needs [batch, len] = {expected:?}")]
    Shape {
        what: &'static str,
        got: Vec<usize>,
        expected: [usize; 2],
    },
    #[error(
        "sample {sample}, position {position}: domain label {label} is not one of the configured \
         domains {configured:?} (set `unknown = \"exclude\"` or `\"keep\"` to accept it)"
    )]
    UnknownDomain {
        sample: usize,
        position: usize,
        label: i64,
        configured: Vec<i64>,
    },
    #[error("attention probability at [sample {sample}, head {head}, query {query}, key {key}] is {value} (not finite)")]
    NonFinite {
        sample: usize,
        head: usize,
        query: usize,
        key: usize,
        value: f32,
    },
    #[error("{n_ib} IB tokens requested but the attention map has only {len} positions")]
    TooManyIbTokens { n_ib: usize, len: usize },
}

/// The share of one layer: per sample and head, raw and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShare {
    /// `[batch, heads]`: attention mass on other-domain keys summed over valid query rows.
    pub raw: Array2<f64>,
    /// `[batch, heads]`: `raw` divided by the sample's number of valid query rows (0 if none).
    pub norm: Array2<f64>,
    /// `[batch]`: number of valid query rows per sample.
    pub valid_rows: Array1<usize>,
}

impl AttentionShare {
    /// Raw share averaged over heads: `[batch]`.
    pub fn raw_head_mean(&self) -> Array1<f64> {
        self.raw
            .mean_axis(Axis(1))
            .unwrap_or_else(|| Array1::zeros(self.raw.nrows()))
    }

    /// Normalised share averaged over heads: `[batch]`.
    pub fn norm_head_mean(&self) -> Array1<f64> {
        self.norm
            .mean_axis(Axis(1))
            .unwrap_or_else(|| Array1::zeros(self.norm.nrows()))
    }

    /// Normalised share averaged over heads and over the samples that have at least one valid
    /// row (samples without valid rows carry no information); 0 when no sample has one.
    pub fn batch_mean_norm(&self) -> f64 {
        let per_sample = self.norm_head_mean();
        let (sum, n) = per_sample
            .iter()
            .zip(self.valid_rows.iter())
            .filter(|(_, &v)| v > 0)
            .fold((0.0, 0usize), |(s, n), (x, _)| (s + x, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    /// Element-wise sum of several layers' shares (the "summed over layers" report).
    /// `None` for an empty slice; panics never: shapes are checked and mismatches give `None`.
    pub fn sum_layers(layers: &[AttentionShare]) -> Option<AttentionShare> {
        let first = layers.first()?;
        let mut out = first.clone();
        for l in &layers[1..] {
            if l.raw.dim() != out.raw.dim() || l.valid_rows != out.valid_rows {
                return None;
            }
            out.raw += &l.raw;
            out.norm += &l.norm;
        }
        Some(out)
    }
}

/// Domain labels and validity of a batch of merged item sequences (`0` = padding): label 0 for
/// domain A, 1 for domain B (a BERT4Rec mask token has its domain's label,
/// [`Dataset::domain_of_token`]). An id outside the dataset's item and mask space is valid with
/// label `-1`, which [`attention_share`] then rejects (or handles per [`UnknownDomain`]).
pub fn domain_labels(dataset: &Dataset, items: ArrayView2<ItemId>) -> (Array2<i64>, Array2<bool>) {
    let labels = items.mapv(|it| match dataset.domain_of_token(it) {
        Some(d) => d.index() as i64,
        None => -1,
    });
    let valid = items.mapv(|it| it != 0);
    (labels, valid)
}

/// Per token, the effective class used for comparisons: `None` = not a token (padding or
/// excluded), `Some(label)` otherwise. Validates labels against the configuration.
fn token_classes(
    labels: ArrayView2<i64>,
    valid: ArrayView2<bool>,
    expected: [usize; 2],
    cfg: &ShareConfig,
) -> Result<Array2<Option<i64>>, AttentionShareError> {
    if labels.dim() != (expected[0], expected[1]) {
        return Err(AttentionShareError::Shape {
            what: "domain labels",
            got: labels.shape().to_vec(),
            expected,
        });
    }
    if valid.dim() != (expected[0], expected[1]) {
        return Err(AttentionShareError::Shape {
            what: "validity mask",
            got: valid.shape().to_vec(),
            expected,
        });
    }
    let mut out = Array2::from_elem(labels.dim(), None);
    for ((b, i), &l) in labels.indexed_iter() {
        if !valid[[b, i]] {
            continue;
        }
        if cfg.domains.contains(&l) {
            out[[b, i]] = Some(l);
        } else {
            match cfg.unknown {
                UnknownDomain::Error => {
                    return Err(AttentionShareError::UnknownDomain {
                        sample: b,
                        position: i,
                        label: l,
                        configured: cfg.domains.clone(),
                    })
                }
                UnknownDomain::Exclude => {}
                UnknownDomain::Keep => out[[b, i]] = Some(l),
            }
        }
    }
    Ok(out)
}

fn check_map(attn: &ArrayView4<f32>) -> Result<[usize; 3], AttentionShareError> {
    let s = attn.shape();
    if s[2] != s[3] {
        return Err(AttentionShareError::NotSquare { got: s.to_vec() });
    }
    Ok([s[0], s[1], s[2]])
}

/// The 0/1 mask `[batch, len, len]` with 1 exactly where query `i` and key `j` are both valid
/// tokens of different domains. `sum(P * mask)` over keys and rows is `raw`; a training
/// objective built from this mask equals what [`attention_share`] reports.
pub fn cross_domain_mask(
    labels: ArrayView2<i64>,
    valid: ArrayView2<bool>,
    cfg: &ShareConfig,
) -> Result<Array3<f32>, AttentionShareError> {
    let (batch, len) = labels.dim();
    let classes = token_classes(labels, valid, [batch, len], cfg)?;
    let mut mask = Array3::<f32>::zeros((batch, len, len));
    for b in 0..batch {
        for i in 0..len {
            let Some(di) = classes[[b, i]] else { continue };
            for j in 0..len {
                if let Some(dj) = classes[[b, j]] {
                    if dj != di {
                        mask[[b, i, j]] = 1.0;
                    }
                }
            }
        }
    }
    Ok(mask)
}

/// The number of valid (non-excluded) query rows per sample, matching [`cross_domain_mask`].
pub fn valid_query_rows(
    labels: ArrayView2<i64>,
    valid: ArrayView2<bool>,
    cfg: &ShareConfig,
) -> Result<Array1<usize>, AttentionShareError> {
    let (batch, len) = labels.dim();
    let classes = token_classes(labels, valid, [batch, len], cfg)?;
    Ok(classes.map_axis(Axis(1), |row| row.iter().filter(|c| c.is_some()).count()))
}

/// `a_cd` of one layer's attention probabilities `attn` `[batch, heads, len, len]`, given
/// per-token domain `labels` and `valid` (true = real token) of shape `[batch, len]`.
/// Sums are accumulated in f64.
pub fn attention_share(
    attn: ArrayView4<f32>,
    labels: ArrayView2<i64>,
    valid: ArrayView2<bool>,
    cfg: &ShareConfig,
) -> Result<AttentionShare, AttentionShareError> {
    let [batch, heads, len] = check_map(&attn)?;
    let classes = token_classes(labels, valid, [batch, len], cfg)?;
    share_with(attn, batch, heads, |b, i, j| {
        match (classes[[b, i]], classes[[b, j]]) {
            (Some(di), Some(dj)) => Some(di != dj),
            (Some(_), None) => Some(false), // valid row, padding key: row counts, key does not
            _ => None,                      // padding row
        }
    })
}

/// AutoCDSR+: the share of attention from sequence tokens onto the `n_ib` information-bottleneck
/// tokens that sit at positions `0..n_ib` of every row. `valid_seq` `[batch, len - n_ib]` marks
/// the real sequence tokens (IB tokens are always valid keys and never query rows here).
/// `raw` sums the IB mass over valid sequence rows; `norm` divides by their number.
pub fn ib_share(
    attn: ArrayView4<f32>,
    n_ib: usize,
    valid_seq: ArrayView2<bool>,
) -> Result<AttentionShare, AttentionShareError> {
    let [batch, heads, len] = check_map(&attn)?;
    if n_ib > len {
        return Err(AttentionShareError::TooManyIbTokens { n_ib, len });
    }
    if valid_seq.dim() != (batch, len - n_ib) {
        return Err(AttentionShareError::Shape {
            what: "sequence validity mask",
            got: valid_seq.shape().to_vec(),
            expected: [batch, len - n_ib],
        });
    }
    share_with(attn, batch, heads, |b, i, j| {
        if i < n_ib || !valid_seq[[b, i - n_ib]] {
            None
        } else {
            Some(j < n_ib)
        }
    })
}

/// Shared kernel: `counts(b, i, j)` is `None` when row `i` of sample `b` is not a query row,
/// else whether key `j` counts.
fn share_with<F>(
    attn: ArrayView4<f32>,
    batch: usize,
    heads: usize,
    counts: F,
) -> Result<AttentionShare, AttentionShareError>
where
    F: Fn(usize, usize, usize) -> Option<bool> + Sync,
{
    let len = attn.shape()[2];
    let per_sample: Result<Vec<(Vec<f64>, usize)>, AttentionShareError> = (0..batch)
        .into_par_iter()
        .map(|b| {
            let rows: Vec<usize> = (0..len).filter(|&i| counts(b, i, 0).is_some()).collect();
            let mut raw = vec![0.0f64; heads];
            for (h, r) in raw.iter_mut().enumerate() {
                for &i in &rows {
                    for j in 0..len {
                        let p = attn[[b, h, i, j]];
                        if !p.is_finite() {
                            return Err(AttentionShareError::NonFinite {
                                sample: b,
                                head: h,
                                query: i,
                                key: j,
                                value: p,
                            });
                        }
                        if counts(b, i, j) == Some(true) {
                            *r += p as f64;
                        }
                    }
                }
            }
            Ok((raw, rows.len()))
        })
        .collect();
    let per_sample = per_sample?;
    let mut raw = Array2::<f64>::zeros((batch, heads));
    let mut valid_rows = Array1::<usize>::zeros(batch);
    for (b, (r, n)) in per_sample.into_iter().enumerate() {
        raw.row_mut(b).assign(&Array1::from(r));
        valid_rows[b] = n;
    }
    let mut norm = raw.clone();
    Zip::from(norm.rows_mut())
        .and(&valid_rows)
        .for_each(|mut row, &n| {
            if n == 0 {
                row.fill(0.0);
            } else {
                row /= n as f64;
            }
        });
    Ok(AttentionShare {
        raw,
        norm,
        valid_rows,
    })
}
