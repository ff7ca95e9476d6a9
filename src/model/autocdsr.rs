//! AutoCDSR+'s information-bottleneck (IB) tokens on the model side: their shape
//! ([`IbConfig`]), which tokens of each domain's stream are valid ([`ib_streams`]) and the
//! share of attention onto them per case ([`ib_case_share`]).
//!
//! AutoCDSR (KDD 2025) itself, `a_cd` as a second training objective, is trained in
//! [`crate::train::autocdsr`]; the definitions of the share live in
//! [`crate::model::attention_share`].

use ndarray::{Array2, ArrayView2, ArrayView4};
use serde::{Deserialize, Serialize};

use super::attention_share::ib_share;
use crate::data::{Dataset, ItemId};

/// Validity of each domain's subsequence as AutoCDSR+ encodes it (`[A, B]`, each
/// `[batch, l_d]`): a domain's tokens of the merged input `items`, left padded to the batch's
/// most tokens of that domain `l_d` (at least 1), so a sample's last `n_d` positions are valid.
/// Mask tokens count in their domain; an item outside the dataset's domains is an error naming
/// the sample and position.
pub fn ib_streams(
    dataset: &Dataset,
    items: ArrayView2<ItemId>,
) -> anyhow::Result<[Array2<bool>; 2]> {
    let mut counts = Vec::with_capacity(items.nrows());
    for (b, row) in items.outer_iter().enumerate() {
        let mut n = [0usize; 2];
        for (t, &it) in row.iter().enumerate() {
            if it == 0 {
                continue;
            }
            match dataset.domain_of_token(it) {
                Some(d) => n[d.index()] += 1,
                None => anyhow::bail!(
                    "sample {b}, position {t}: item {it} is outside the dataset's domains"
                ),
            }
        }
        counts.push(n);
    }
    Ok([0, 1].map(|d| {
        let len = counts.iter().map(|n| n[d]).max().unwrap_or(0).max(1);
        Array2::from_shape_fn((counts.len(), len), |(b, i)| i >= len - counts[b][d])
    }))
}

/// Per sample, the IB share of one layer on the host: the mass the sequence tokens of both
/// streams put on the `k` IB tokens over their number (mean over heads; `None` for a sample
/// without tokens). `maps` are that layer's `[A, B]` maps, `[batch, heads, k + l_d, k + l_d]`
/// with `streams` from [`ib_streams`].
pub fn ib_case_share(
    maps: [ArrayView4<f32>; 2],
    k: usize,
    streams: &[Array2<bool>; 2],
) -> anyhow::Result<Vec<Option<f64>>> {
    let a = ib_share(maps[0], k, streams[0].view())?;
    let b = ib_share(maps[1], k, streams[1].view())?;
    let heads = maps[0].dim().1 as f64;
    Ok((0..a.valid_rows.len())
        .map(|i| {
            let rows = a.valid_rows[i] + b.valid_rows[i];
            let raw: f64 = (0..a.raw.dim().1)
                .map(|h| a.raw[[i, h]] + b.raw[[i, h]])
                .sum();
            (rows > 0).then(|| raw / heads / rows as f64)
        })
        .collect())
}

/// AutoCDSR+ information-bottleneck tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IbConfig {
    /// IB tokens prepended to each domain's sequence (public code: 4).
    pub tokens: usize,
    /// Layers after which the IB token states are averaged across domains (public: 0, 1, 2).
    pub comm_layers: Vec<usize>,
}

impl Default for IbConfig {
    fn default() -> Self {
        IbConfig {
            tokens: 4,
            comm_layers: vec![0, 1, 2],
        }
    }
}
