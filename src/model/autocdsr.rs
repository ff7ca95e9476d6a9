//! AutoCDSR (KDD 2025): the cross-domain attention share `a_cd` as a second training objective,
//! weighted every step by Pareto-MTL (or a fixed weight), and AutoCDSR+'s information-bottleneck
//! (IB) tokens.
//!
//! The `[autocdsr]` section of a run configuration is [`crate::train::config::AutoCdsrConfig`];
//! the definitions of the share live in [`crate::model::attention_share`], the solver in
//! [`crate::train::pareto`].

use ndarray::{Array2, ArrayView2, ArrayView4};
use serde::{Deserialize, Serialize};

use super::attention_share::{
    cross_domain_mask, domain_labels, ib_share, valid_query_rows, ShareConfig,
};
use super::nn::{Device, Tensor};
use crate::data::{Dataset, ItemId};
pub use crate::train::config::{AcdObjective, AutoCdsrConfig};

/// The differentiable `a_cd` of one batch: the share of attention the merged stream's tokens
/// put on other-domain tokens, from the attention maps a forward pass recorded
/// ([`crate::model::nn::Ctx::attn_probs`]; only the merged stream `x`'s maps, `attn.L.x`).
///
/// `items` `[batch, len]` is the merged input (0 = padding). [`AcdObjective::RowMean`] gives,
/// per layer, exactly [`crate::model::attention_share::AttentionShare::batch_mean_norm`] of
/// the same maps (a test checks it), summed over the layers of `cfg`; [`AcdObjective::Raw`]
/// the raw share averaged over heads and samples. A batch whose sequences each hold one
/// domain has `a_cd = 0` (and a zero gradient); padding rows and keys count nowhere; an item
/// outside the dataset's domains is an error naming the sample and position.
pub fn acd_objective(
    attn: &[(String, Tensor)],
    dataset: &Dataset,
    items: ArrayView2<ItemId>,
    cfg: &AutoCdsrConfig,
) -> anyhow::Result<Tensor> {
    let (batch, len) = items.dim();
    let (labels, valid) = domain_labels(dataset, items);
    let share = ShareConfig::two_domains();
    let mask = cross_domain_mask(labels.view(), valid.view(), &share)?;
    let rows = valid_query_rows(labels.view(), valid.view(), &share)?;
    let with_rows = rows.iter().filter(|&&r| r > 0).count();
    // Fold each sample's averaging weight into the 0/1 mask (one multiply and one sum per
    // layer); the mean over heads is a scalar division, so one weighted mask serves every layer.
    let weight = |b: usize| -> f32 {
        match cfg.objective {
            AcdObjective::RowMean if rows[b] == 0 => 0.0,
            AcdObjective::RowMean => 1.0 / (rows[b] * with_rows) as f32,
            AcdObjective::Raw => 1.0 / batch as f32,
        }
    };
    let mut weighted = mask;
    for (b, mut m) in weighted.outer_iter_mut().enumerate() {
        m *= weight(b);
    }
    let weighted = Tensor::from_vec(
        weighted.into_raw_vec_and_offset().0,
        (batch, 1, len, len),
        &Device::Cpu,
    )?;
    weighted_attention(attn, cfg, "the merged stream", |stream| {
        (stream == "x").then_some(&weighted)
    })
}

/// The objective both shares share: over the recorded maps `attn.L.S` whose layer `cfg` uses
/// and whose stream `S` gets a weight mask `[batch, 1, q, k]` from `weight_of`, the sum of
/// `sum(p * w) / heads`. A map whose shape does not fit its mask is an error; `what` names the
/// maps when none was recorded.
fn weighted_attention<'w>(
    attn: &[(String, Tensor)],
    cfg: &AutoCdsrConfig,
    what: &str,
    weight_of: impl Fn(&str) -> Option<&'w Tensor>,
) -> anyhow::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (name, p) in attn {
        let Some((layer, w)) = name
            .strip_prefix("attn.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, stream)| Some((l.parse::<usize>().ok()?, weight_of(stream)?)))
        else {
            continue;
        };
        if !cfg.uses_layer(layer) {
            continue;
        }
        let (pb, heads, pq, pk) = p.dims4()?;
        let (wb, _, wq, wk) = w.dims4()?;
        anyhow::ensure!(
            (pb, pq, pk) == (wb, wq, wk),
            "attention map {name} has shape {:?}, expected [{wb}, heads, {wq}, {wk}]",
            p.dims()
        );
        let share = (p.broadcast_mul(&w.to_dtype(p.dtype())?)?.sum_all()? / heads as f64)?;
        total = Some(match total {
            None => share,
            Some(t) => (t + share)?,
        });
    }
    total.ok_or_else(|| {
        anyhow::anyhow!(
            "no attention map of {what} was recorded (autocdsr.layers = {:?})",
            cfg.layers
        )
    })
}

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

/// AutoCDSR+'s differentiable objective: the share of attention the sequence tokens of both
/// domains' streams put on the IB tokens (the only cross-domain path), from the maps a
/// forward pass of an IB model recorded (`attn.L.a`, `attn.L.b`, `[batch, heads, K + l_d,
/// K + l_d]`, IB tokens first, `l_d` from [`ib_streams`]). [`AcdObjective::RowMean`]: per sample, the IB mass summed over
/// the rows of both streams divided by their number (the sample's tokens), averaged over heads
/// and over samples with tokens, summed over the chosen layers; it equals
/// [`crate::model::attention_share::ib_share`] of the two maps combined ([`ib_case_share`], a
/// test checks it). [`AcdObjective::Raw`]: the mass summed over rows, averaged over heads and
/// samples.
pub fn ib_objective(
    attn: &[(String, Tensor)],
    dataset: &Dataset,
    items: ArrayView2<ItemId>,
    cfg: &AutoCdsrConfig,
) -> anyhow::Result<Tensor> {
    let k = cfg
        .ib
        .as_ref()
        .map(|ib| ib.tokens)
        .ok_or_else(|| anyhow::anyhow!("ib_objective needs autocdsr.ib"))?;
    let batch = items.nrows();
    let streams = ib_streams(dataset, items)?;
    let rows: Vec<usize> = (0..batch)
        .map(|b| {
            streams
                .iter()
                .map(|v| v.row(b).iter().filter(|&&t| t).count())
                .sum()
        })
        .collect();
    let with_rows = rows.iter().filter(|&&r| r > 0).count();
    let weights: Vec<Tensor> = streams
        .iter()
        .map(|valid| {
            let len = valid.ncols();
            let n = k + len;
            let mut w = vec![0f32; batch * n * n];
            for b in 0..batch {
                let wb = match cfg.objective {
                    AcdObjective::RowMean if rows[b] == 0 => 0.0,
                    AcdObjective::RowMean => 1.0 / (rows[b] * with_rows) as f32,
                    AcdObjective::Raw => 1.0 / batch as f32,
                };
                for i in (0..len).filter(|&i| valid[[b, i]]) {
                    let at = (b * n + k + i) * n;
                    w[at..at + k].fill(wb);
                }
            }
            Tensor::from_vec(w, (batch, 1, n, n), &Device::Cpu)
        })
        .collect::<super::nn::Result<_>>()?;
    weighted_attention(attn, cfg, "the IB streams", |stream| match stream {
        "a" => Some(&weights[0]),
        "b" => Some(&weights[1]),
        _ => None,
    })
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
