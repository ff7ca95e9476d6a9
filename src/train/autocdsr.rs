//! AutoCDSR (KDD 2025) in training: the cross-domain attention share `a_cd` of a forward pass's
//! attention maps as a differentiable objective ([`acd_objective`], or for AutoCDSR+ the share
//! onto the IB tokens, [`ib_objective`]), and one training step with the recommendation loss
//! `L_rec` and `a_cd` as two objectives: one AdamW update of `L_rec + c * a_cd`.
//!
//! With Pareto-MTL weighting `c = lambda0 / lambda1` is recomputed every step from the two
//! gradients over the shared parameters (their Gram matrix, l2-normalised, the active
//! preference constraints, the Frank-Wolfe min-norm solution: [`crate::train::pareto`]); with a
//! fixed weight `c` is a constant and one backward pass suffices.

use ndarray::ArrayView2;

use super::config::{AcdObjective, AutoCdsrConfig};
use super::loss::BatchLoss;
use super::optim::AdamW;
use super::pareto::{AcdWeighting, GradGram};
use crate::data::{Dataset, ItemId};
use crate::eval::names;
use crate::model::attention_share::{
    cross_domain_mask, domain_labels, valid_query_rows, ShareConfig,
};
use crate::model::autocdsr::ib_streams;
use crate::model::nn::{with_f32_elements, AttentionMap, AttentionStream, Device, Tensor};
use crate::model::Model;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcdStep {
    /// The batch's `a_cd` (before the update).
    pub a_cd: f64,
    /// The multiplier `c` on `a_cd` in the update.
    pub coefficient: f64,
    /// Whether Pareto-MTL fell back to equal weights (a zero gradient or a vanishing lambda1).
    pub fallback: bool,
}

/// The AutoCDSR update of one training batch: the objective on the forward pass's attention
/// maps (`a_cd`, or for AutoCDSR+ the share onto the IB tokens) for the batch the model read,
/// then [`autocdsr_step`] with the recommendation loss (its phases timed into `phases` when
/// given).
pub(crate) fn batch_step(
    opt: &mut AdamW,
    model: &Model,
    ds: &Dataset,
    batch: &BatchLoss,
    cfg: &AutoCdsrConfig,
    lr: f64,
    phases: Option<&mut AcdPhases>,
) -> anyhow::Result<AcdStep> {
    let BatchLoss {
        loss: rec,
        attention,
        input,
    } = batch;
    let started = std::time::Instant::now();
    let items = ndarray::ArrayView2::from_shape((input.batch_size(), input.max_len), &input.x)?;
    let acd = if cfg.ib.is_some() {
        ib_objective(attention, ds, items, cfg)?
    } else {
        acd_objective(attention, ds, items, cfg)?
    };
    let phases = phases.map(|p| {
        p.objective_s += started.elapsed().as_secs_f64();
        p
    });
    autocdsr_step_timed(
        opt,
        &model.item_embedding().weight,
        rec,
        &acd,
        cfg,
        lr,
        phases,
    )
}

/// Updates `opt`'s parameters from `rec` (`L_rec`) and `acd` (`a_cd`), both scalars of one
/// forward pass. `item_embedding` is the item table, left out of the Gram matrix when
/// `cfg.ignore_item_embedding` (it still gets both gradients in the update).
pub fn autocdsr_step(
    opt: &mut AdamW,
    item_embedding: &Tensor,
    rec: &Tensor,
    acd: &Tensor,
    cfg: &AutoCdsrConfig,
    lr: f64,
) -> anyhow::Result<AcdStep> {
    autocdsr_step_timed(opt, item_embedding, rec, acd, cfg, lr, None)
}

/// Seconds of the phases of one AutoCDSR step after the model's forward pass (the step
/// benchmark's split): the objective on the recorded maps ([`batch_step`] only), the backward
/// pass from `L_rec` (with a fixed weight: the one backward pass from `L_rec + c * a_cd`), the
/// backward pass from `a_cd`, the Gram matrix with the Pareto-MTL solve, and the combined
/// gradient with the AdamW update.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct AcdPhases {
    pub objective_s: f64,
    pub rec_backward_s: f64,
    pub acd_backward_s: f64,
    pub gram_s: f64,
    pub update_s: f64,
}

/// [`autocdsr_step`], recording its phases' times in `phases` when given.
pub(crate) fn autocdsr_step_timed(
    opt: &mut AdamW,
    item_embedding: &Tensor,
    rec: &Tensor,
    acd: &Tensor,
    cfg: &AutoCdsrConfig,
    lr: f64,
    phases: Option<&mut AcdPhases>,
) -> anyhow::Result<AcdStep> {
    let mut clock = PhaseClock::start(phases);
    let a_cd = acd.to_scalar::<f32>()? as f64;
    let l_rec = rec.to_scalar::<f32>()? as f64;
    if let AcdWeighting::Fixed { weight } = cfg.weighting {
        let grads = (rec + (acd * weight)?)?.backward()?;
        clock.lap(|p| &mut p.rec_backward_s);
        opt.apply(&grads, lr)?;
        clock.lap(|p| &mut p.update_s);
        return Ok(AcdStep {
            a_cd,
            coefficient: weight,
            fallback: false,
        });
    }
    let mut grads = rec.backward()?;
    clock.lap(|p| &mut p.rec_backward_s);
    let g_acd = acd.backward()?;
    clock.lap(|p| &mut p.acd_backward_s);
    let mut gram = GradGram::default();
    // Read in place (no host copy of each gradient). A missing gradient is zero: an empty
    // slice adds nothing to the products with it.
    for var in opt.vars() {
        let t = var.as_tensor();
        if cfg.ignore_item_embedding && t.id() == item_embedding.id() {
            continue;
        }
        match (g_acd.get(t), grads.get(t)) {
            (Some(ga), Some(gr)) => {
                with_f32_elements(ga, |a| with_f32_elements(gr, |r| gram.accumulate(a, r)))??
            }
            (Some(ga), None) => with_f32_elements(ga, |a| gram.accumulate(a, &[]))?,
            (None, Some(gr)) => with_f32_elements(gr, |r| gram.accumulate(&[], r))?,
            (None, None) => {}
        }
    }
    let w = cfg.weighting.coefficient(Some(gram), [a_cd, l_rec])?;
    let c = w.coefficient;
    clock.lap(|p| &mut p.gram_s);
    for var in opt.vars() {
        let t = var.as_tensor();
        if let Some(ga) = g_acd.get(t) {
            let g = match grads.get(t) {
                Some(gr) => (gr + (ga * c)?)?,
                None => (ga * c)?,
            };
            grads.insert(t, g);
        }
    }
    opt.apply(&grads, lr)?;
    clock.lap(|p| &mut p.update_s);
    Ok(AcdStep {
        a_cd,
        coefficient: c,
        fallback: w.fallback.is_some(),
    })
}

/// Adds the time since its last lap to a field of [`AcdPhases`], when there are phases to
/// record.
struct PhaseClock<'a> {
    phases: Option<&'a mut AcdPhases>,
    last: std::time::Instant,
}

impl<'a> PhaseClock<'a> {
    fn start(phases: Option<&'a mut AcdPhases>) -> Self {
        Self {
            phases,
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, field: impl FnOnce(&mut AcdPhases) -> &mut f64) {
        if let Some(p) = self.phases.as_deref_mut() {
            let now = std::time::Instant::now();
            *field(p) += (now - self.last).as_secs_f64();
            self.last = now;
        }
    }
}

/// Per-epoch means of the steps, logged with the training metrics.
#[derive(Debug, Clone, Default)]
pub struct AcdEpoch {
    steps: usize,
    a_cd: f64,
    coefficient: f64,
    fallbacks: usize,
}

impl AcdEpoch {
    pub fn add(&mut self, s: &AcdStep) {
        self.steps += 1;
        self.a_cd += s.a_cd;
        self.coefficient += s.coefficient;
        self.fallbacks += s.fallback as usize;
    }

    /// `a_cd` (mean over the epoch's steps), `acd_coefficient` (mean), `acd_fallback_steps`.
    pub fn metrics(&self) -> [(&'static str, f64); 3] {
        let n = self.steps.max(1) as f64;
        [
            (names::A_CD, self.a_cd / n),
            (names::ACD_COEFFICIENT, self.coefficient / n),
            (names::ACD_FALLBACK_STEPS, self.fallbacks as f64),
        ]
    }
}

/// The differentiable `a_cd` of one batch: the share of attention the merged stream's tokens
/// put on other-domain tokens, from the attention maps a forward pass recorded
/// ([`crate::model::nn::Ctx::attn_probs`]; only the maps of [`AttentionStream::Merged`]).
///
/// `items` `[batch, len]` is the merged input (0 = padding). [`AcdObjective::RowMean`] gives,
/// per layer, exactly [`crate::model::attention_share::AttentionShare::batch_mean_norm`] of
/// the same maps (a test checks it), summed over the layers of `cfg`; [`AcdObjective::Raw`]
/// the raw share averaged over heads and samples. A batch whose sequences each hold one
/// domain has `a_cd = 0` (and a zero gradient); padding rows and keys count nowhere; an item
/// outside the dataset's domains is an error naming the sample and position.
pub fn acd_objective(
    attn: &[AttentionMap],
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
        &maps_device(attn),
    )?;
    weighted_attention(attn, cfg, "the merged stream", |stream| {
        (stream == AttentionStream::Merged).then_some(&weighted)
    })
}

/// The device of the attention maps (their weights are built there).
fn maps_device(attn: &[AttentionMap]) -> Device {
    attn.first()
        .map_or(Device::Cpu, |map| map.probs.device().clone())
}

/// The objective both shares share: over the recorded maps whose layer `cfg` uses and whose
/// stream gets a weight mask `[batch, 1, q, k]` from `weight_of`, the sum of
/// `sum(p * w) / heads`. A map whose shape does not fit its mask is an error; `what` names the
/// maps when none was recorded.
fn weighted_attention<'w>(
    attn: &[AttentionMap],
    cfg: &AutoCdsrConfig,
    what: &str,
    weight_of: impl Fn(AttentionStream) -> Option<&'w Tensor>,
) -> anyhow::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for map in attn {
        let Some(w) = weight_of(map.stream) else {
            continue;
        };
        if !cfg.uses_layer(map.layer) {
            continue;
        }
        let p = &map.probs;
        let (pb, heads, pq, pk) = p.dims4()?;
        let (wb, _, wq, wk) = w.dims4()?;
        anyhow::ensure!(
            (pb, pq, pk) == (wb, wq, wk),
            "attention map of layer {} stream {} has shape {:?}, expected [{wb}, heads, {wq}, {wk}]",
            map.layer,
            map.stream,
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

/// AutoCDSR+'s differentiable objective: the share of attention the sequence tokens of both
/// domains' streams put on the IB tokens (the only cross-domain path), from the maps a
/// forward pass of an IB model recorded (streams [`AttentionStream::A`] and
/// [`AttentionStream::B`], `[batch, heads, K + l_d, K + l_d]`, IB tokens first, `l_d` from [`ib_streams`]). [`AcdObjective::RowMean`]: per sample, the IB mass summed over
/// the rows of both streams divided by their number (the sample's tokens), averaged over heads
/// and over samples with tokens, summed over the chosen layers; it equals
/// [`crate::model::attention_share::ib_share`] of the two maps combined ([`ib_case_share`], a
/// test checks it). [`AcdObjective::Raw`]: the mass summed over rows, averaged over heads and
/// samples.
pub fn ib_objective(
    attn: &[AttentionMap],
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
            Tensor::from_vec(w, (batch, 1, n, n), &maps_device(attn))
        })
        .collect::<crate::model::nn::Result<_>>()?;
    weighted_attention(attn, cfg, "the IB streams", |stream| match stream {
        AttentionStream::A => Some(&weights[0]),
        AttentionStream::B => Some(&weights[1]),
        AttentionStream::Merged => None,
    })
}
