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
use super::{ComputeDevice, RunConfig};
use crate::data::{Dataset, ItemId};
use crate::eval::names;
use crate::model::attention_share::{
    cross_domain_mask, domain_labels, valid_query_rows, ShareConfig,
};
use crate::model::autocdsr::ib_streams;
use crate::model::nn::{
    add_scaled_in_place, index_add_scaled_in_place, weighted_probs_sum, with_f32_elements,
    AttentionMap, AttentionStream, DType, Device, GradStore, LookupLeaf, Tensor, Var,
};
use crate::model::{Model, ModelKind};

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

/// Which steps of an epoch recompute Pareto-MTL's weights (`weighting.every`): the first and
/// every `every`-th after it; the others reuse the last coefficient. A new one per epoch, so
/// a run resumed at an epoch boundary trains as an uninterrupted one.
#[derive(Debug, Clone)]
pub struct ParetoSchedule {
    every: usize,
    step: usize,
    last: Option<f64>,
}

impl ParetoSchedule {
    pub fn new(cfg: &AutoCdsrConfig) -> Self {
        Self {
            every: cfg.weighting.recompute_every().max(1),
            step: 0,
            last: None,
        }
    }

    /// The coefficient this step reuses, or `None` when it recomputes the weights.
    fn reused(&self) -> Option<f64> {
        (self.step % self.every != 0).then_some(self.last).flatten()
    }

    fn record(&mut self, step: &AcdStep) {
        self.last = Some(step.coefficient);
        self.step += 1;
    }
}

/// The AutoCDSR update of one training batch: the objective on the forward pass's attention
/// maps (`a_cd`, or for AutoCDSR+ the share onto the IB tokens) for the batch the model read,
/// then [`autocdsr_step`] with the recommendation loss (its phases timed into `phases` when
/// given), the weights recomputed or reused as `schedule` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_step(
    opt: &mut AdamW,
    model: &Model,
    ds: &Dataset,
    batch: &BatchLoss,
    cfg: &AutoCdsrConfig,
    lr: f64,
    schedule: &mut ParetoSchedule,
    phases: Option<&mut AcdPhases>,
) -> anyhow::Result<AcdStep> {
    let BatchLoss {
        loss: rec,
        attention,
        input,
        item_lookup_leaf,
    } = batch;
    let started = std::time::Instant::now();
    let items = ndarray::ArrayView2::from_shape((input.batch_size(), input.max_len), &input.x)?;
    let acd = if cfg.ib.is_some() {
        ib_objective(attention, ds, items, cfg)?
    } else {
        acd_objective(attention, ds, items, cfg)?
    };
    let mut phases = phases;
    if let Some(p) = phases.as_deref_mut() {
        p.objective_s += started.elapsed().as_secs_f64();
    }
    let step = autocdsr_step_timed(
        opt,
        &model.item_embedding().weight,
        (rec, &acd),
        item_lookup_leaf.as_ref(),
        (cfg, schedule.reused()),
        lr,
        phases,
    )?;
    schedule.record(&step);
    Ok(step)
}

/// Whether an AutoCDSR step makes the merged stream's looked-up item rows a leaf of the graph
/// ([`LookupLeaf`]) and adds their gradients to the item table's itself: with Pareto-MTL
/// weights (two backward passes) on the CPU, when the table stays out of the Gram matrix and
/// the model looks it up once on `a_cd`'s path (SASRec or BERT4Rec without GCA or IB tokens).
/// The update is the same either way; the `a_cd` backward pass then fills no gradient of the
/// whole table (KuaiRand-1K: a million rows).
pub(crate) fn leaf_item_lookup(cfg: &RunConfig) -> bool {
    #[cfg(test)]
    if tests::COMPOSED.with(|c| c.get()) {
        return false;
    }
    let Some(auto) = &cfg.autocdsr else {
        return false;
    };
    matches!(cfg.model.kind, ModelKind::Sasrec | ModelKind::Bert4rec)
        && cfg.gca.positions.is_empty()
        && auto.ib.is_none()
        && auto.ignore_item_embedding
        && auto.weighting.needs_gradients()
        && cfg.train.device == ComputeDevice::Cpu
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
    autocdsr_step_timed(opt, item_embedding, (rec, acd), None, (cfg, None), lr, None)
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

/// [`autocdsr_step`] for a forward pass whose item lookup was `leaf`, when given
/// ([`leaf_item_lookup`]), with the coefficient `reused` instead of recomputed when given
/// ([`ParetoSchedule`]), its phases' times recorded in `phases` when given.
pub(crate) fn autocdsr_step_timed(
    opt: &mut AdamW,
    item_embedding: &Tensor,
    (rec, acd): (&Tensor, &Tensor),
    leaf: Option<&LookupLeaf>,
    (cfg, reused): (&AutoCdsrConfig, Option<f64>),
    lr: f64,
    phases: Option<&mut AcdPhases>,
) -> anyhow::Result<AcdStep> {
    let mut clock = PhaseClock::start(phases);
    let a_cd = acd.to_scalar::<f32>()? as f64;
    let l_rec = rec.to_scalar::<f32>()? as f64;
    // The looked-up rows, when the lookup was a leaf of the graph.
    let lookup = match leaf.map(LookupLeaf::lookups).as_deref() {
        None | Some([]) => None,
        Some([(ids, rows)]) => Some((ids.clone(), rows.clone())),
        Some(_) => anyhow::bail!("the item table was looked up more than once through the leaf"),
    };
    let fixed = match cfg.weighting {
        AcdWeighting::Fixed { weight } => Some(weight),
        AcdWeighting::Pareto(_) => reused,
    };
    if let Some(weight) = fixed {
        let mut grads = (rec + (acd * weight)?)?.backward()?;
        add_lookup_rows(&mut grads, lookup.as_ref(), item_embedding)?;
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
    add_lookup_rows(&mut grads, lookup.as_ref(), item_embedding)?;
    clock.lap(|p| &mut p.rec_backward_s);
    let mut g_acd = acd.backward()?;
    let acd_rows = lookup.as_ref().and_then(|(_, rows)| g_acd.remove(rows));
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
                // The table's rec gradient is the index_add buffer of its lookups' backward
                // passes, held by `grads` alone; its a_cd gradient is zero outside the rows
                // of the batch's items: add those in place instead of writing a new table.
                Some(gr)
                    if t.id() == item_embedding.id()
                        && gr.dtype() == DType::F32
                        && gr.device().is_cpu() =>
                {
                    add_scaled_in_place(gr, ga, c)?;
                    continue;
                }
                Some(gr) => combined(gr, ga, c)?,
                None => (ga * c)?,
            };
            grads.insert(t, g);
        }
    }
    // The table's a_cd gradient is the index_add of its looked-up rows' gradient.
    if let (Some((ids, _)), Some(ga_rows)) = (&lookup, acd_rows) {
        anyhow::ensure!(
            g_acd.get(item_embedding).is_none(),
            "the a_cd gradient reached the item table other than through its looked-up rows"
        );
        let gr = grads.get(item_embedding).ok_or_else(|| {
            anyhow::anyhow!("the recommendation loss gave the item table no gradient")
        })?;
        index_add_scaled_in_place(gr, ids, &ga_rows, c)?;
    }
    opt.apply(&grads, lr)?;
    clock.lap(|p| &mut p.update_s);
    Ok(AcdStep {
        a_cd,
        coefficient: c,
        fallback: w.fallback.is_some(),
    })
}

/// Moves the looked-up rows' gradient in `grads` into the item table's, added as the lookup's
/// own backward pass adds it (it is the last of the table's uses to be reached).
fn add_lookup_rows(
    grads: &mut GradStore,
    lookup: Option<&(Tensor, Var)>,
    item_embedding: &Tensor,
) -> anyhow::Result<()> {
    if let Some((ids, rows)) = lookup {
        if let Some(g) = grads.remove(rows) {
            let table = grads
                .get(item_embedding)
                .map_or_else(|| item_embedding.zeros_like(), |t| Ok(t.clone()))?;
            grads.insert(item_embedding, table.index_add(ids, &g, 0)?);
        }
    }
    Ok(())
}

/// `gr + ga * c`, the update's gradient, in one pass into one new buffer (f32 on the CPU; candle's
/// two ops otherwise) with the same rounding as those ops: `c` rounded to f32, the product
/// `ga * c + 0` rounded, then the sum.
fn combined(gr: &Tensor, ga: &Tensor, c: f64) -> anyhow::Result<Tensor> {
    let plain = gr.dtype() != DType::F32 || !gr.device().is_cpu() || gr.shape() != ga.shape();
    if plain {
        return Ok((gr + (ga * c)?)?);
    }
    let c = c as f32;
    let sum = with_f32_elements(gr, |r| {
        with_f32_elements(ga, |a| {
            r.iter()
                .zip(a)
                .map(|(&r, &a)| r + (a * c + 0.0))
                .collect::<Vec<f32>>()
        })
    })??;
    Ok(Tensor::from_vec(sum, gr.shape(), gr.device())?)
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
    acd_objective_summed(attn, dataset, items, cfg, weighted_probs_sum)
}

/// `sum(p * w)` of a map `p` and its weight mask `w` (broadcast over the heads).
type WeightedSum = fn(&Tensor, &Tensor) -> crate::model::nn::Result<Tensor>;

/// [`acd_objective`] with each map's weighted sum taken by `sum` (the tests' reference passes
/// candle's broadcast product and sum).
fn acd_objective_summed(
    attn: &[AttentionMap],
    dataset: &Dataset,
    items: ArrayView2<ItemId>,
    cfg: &AutoCdsrConfig,
    sum: WeightedSum,
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
    weighted_attention(attn, cfg, "the merged stream", sum, |stream| {
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
/// `sum(p * w) / heads` (`sum(p * w)` from `sum`). A map whose shape does not fit its mask is an error; `what` names the
/// maps when none was recorded.
fn weighted_attention<'w>(
    attn: &[AttentionMap],
    cfg: &AutoCdsrConfig,
    what: &str,
    sum: WeightedSum,
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
        let share = (sum(p, &w.to_dtype(p.dtype())?)? / heads as f64)?;
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
    weighted_attention(
        attn,
        cfg,
        "the IB streams",
        weighted_probs_sum,
        |stream| match stream {
            AttentionStream::A => Some(&weights[0]),
            AttentionStream::B => Some(&weights[1]),
            AttentionStream::Merged => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::SEPARATE_PROBS;
    use crate::train::loss::batch_loss;
    use crate::train::optim::Schedule;
    use crate::train::train_loop::training_data;
    use crate::train::{build_model, RunConfig};

    thread_local! {
        /// The composed step's forward pass: the item lookup a node over the table.
        pub(super) static COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// `kind` (sasrec or bert4rec) with AutoCDSR (Pareto-MTL) on one of the repository's data
    /// slices.
    fn config(kind: &str, slice: &str) -> RunConfig {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(slice);
        let text = format!(
            r#"
            [data]
            path = "{}"
            [model]
            kind = "{kind}"
            d_model = 32
            heads = 2
            ffn_hidden = 85
            layers = 2
            dropout = 0.3
            max_len = 20
            [train]
            batch_size = 64
            negatives_per_domain = 8
            negative_sharing = "per_row"
            threads = 1
            [autocdsr]
            weighting = {{ kind = "pareto" }}
            "#,
            data.display()
        );
        toml::from_str(&text).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// The step as candle ops composed it: the probabilities node computing them again
    /// ([`SEPARATE_PROBS`]), each map's share as a broadcast product and sum, and the update's
    /// gradient as `gr + ga * c`; returns `(a_cd, c)`.
    fn composed_step(
        opt: &mut AdamW,
        item_embedding: &Tensor,
        rec: &Tensor,
        acd: &Tensor,
        cfg: &AutoCdsrConfig,
        lr: f64,
    ) -> (f64, f64) {
        let mut grads = rec.backward().unwrap();
        let g_acd = acd.backward().unwrap();
        let mut gram = GradGram::default();
        for var in opt.vars() {
            let t = var.as_tensor();
            if t.id() == item_embedding.id() {
                continue;
            }
            let host = |g: Option<&Tensor>| {
                g.map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_default()
            };
            gram.accumulate(&host(g_acd.get(t)), &host(grads.get(t)));
        }
        let a_cd = acd.to_scalar::<f32>().unwrap() as f64;
        let l_rec = rec.to_scalar::<f32>().unwrap() as f64;
        let c = cfg
            .weighting
            .coefficient(Some(gram), [a_cd, l_rec])
            .unwrap()
            .coefficient;
        for var in opt.vars() {
            let t = var.as_tensor();
            if let Some(ga) = g_acd.get(t) {
                let g = match grads.get(t) {
                    Some(gr) => (gr + (ga * c).unwrap()).unwrap(),
                    None => (ga * c).unwrap(),
                };
                grads.insert(t, g);
            }
        }
        opt.apply(&grads, lr).unwrap();
        (a_cd, c)
    }

    /// On a real batch (the first of the slice's first epoch), one step gives the weights the
    /// composed step gives, bit for bit, and the same coefficient; `a_cd` (summed in another
    /// order) agrees to f32 rounding. The two backward passes' gradients agree bit for bit but
    /// the item table's (whose looked-up rows' share the step adds itself). SASRec on
    /// food-kitchen, BERT4Rec on KuaiRand-1K.
    #[test]
    fn the_step_updates_the_weights_as_the_composed_step_does() {
        for (kind, slice) in [
            ("sasrec", "data/food-kitchen-mini"),
            ("bert4rec", "data/kuairand-1k-mini"),
        ] {
            same_update_as_the_composed_step(config(kind, slice));
        }
    }

    fn same_update_as_the_composed_step(cfg: RunConfig) {
        let auto = cfg.autocdsr.clone().unwrap();
        let (ds, _, layout) = training_data(&cfg).unwrap();
        let batch = layout.batches(64, cfg.train.seed, 1).next().unwrap();
        let lr = Schedule::new(&cfg.optim).lr;
        let (model, mut opt) = build_model(&cfg, &ds).unwrap();
        let (reference, mut ref_opt) = build_model(&cfg, &ds).unwrap();

        let fused = batch_loss(&model, &ds, &layout, &batch, &cfg, 7).unwrap();
        let set_composed = |on: bool| {
            SEPARATE_PROBS.with(|s| s.set(on));
            COMPOSED.with(|s| s.set(on));
        };
        set_composed(true);
        let composed = batch_loss(&reference, &ds, &layout, &batch, &cfg, 7).unwrap();
        set_composed(false);
        assert!(fused.item_lookup_leaf.is_some() && composed.item_lookup_leaf.is_none());
        assert_eq!(bits(&fused.loss), bits(&composed.loss));
        // the batch as the model read it (BERT4Rec: with its items masked)
        let input = &fused.input;
        let items = ArrayView2::from_shape((input.batch_size(), input.max_len), &input.x).unwrap();
        let broadcast: WeightedSum = |p, w| p.broadcast_mul(w)?.sum_all();
        let acd = acd_objective(&fused.attention, &ds, items, &auto).unwrap();
        let acd_ref =
            acd_objective_summed(&composed.attention, &ds, items, &auto, broadcast).unwrap();

        // the two backward passes, node by node the same arithmetic
        for (root, root_ref) in [(&fused.loss, &composed.loss), (&acd, &acd_ref)] {
            let (g, g_ref) = (root.backward().unwrap(), root_ref.backward().unwrap());
            let table = model.item_embedding().weight.id();
            for (var, var_ref) in opt.vars().iter().zip(ref_opt.vars()) {
                if var.as_tensor().id() == table {
                    continue;
                }
                match (g.get(var), g_ref.get(var_ref)) {
                    (Some(a), Some(b)) => assert_eq!(bits(a), bits(b)),
                    (None, None) => {}
                    _ => panic!("a gradient exists on one side only"),
                }
            }
        }

        let mut schedule = ParetoSchedule::new(&auto);
        let step = batch_step(
            &mut opt,
            &model,
            &ds,
            &fused,
            &auto,
            lr,
            &mut schedule,
            None,
        )
        .unwrap();
        let (a_cd, c) = composed_step(
            &mut ref_opt,
            &reference.item_embedding().weight,
            &composed.loss,
            &acd_ref,
            &auto,
            lr,
        );
        assert!(!step.fallback && a_cd > 0.01, "a_cd {a_cd}");
        assert!(
            (step.a_cd - a_cd).abs() < 1e-5 * a_cd,
            "{} vs {a_cd}",
            step.a_cd
        );
        assert_eq!(step.coefficient, c);
        for (var, var_ref) in opt.vars().iter().zip(ref_opt.vars()) {
            assert_eq!(bits(var.as_tensor()), bits(var_ref.as_tensor()));
        }
    }

    /// `weighting.every = 3`: steps 1 and 2 of an epoch reuse step 0's coefficient and update
    /// the weights as a fixed weight of that value does (bit for bit, the merged stream's
    /// lookup a leaf or not); steps 0 and 3 recompute it as `every = 1` does.
    #[test]
    fn pareto_weights_are_recomputed_every_nth_step_and_reused_between() {
        let mut every3 = config("sasrec", "data/food-kitchen-mini");
        let auto = every3.autocdsr.as_mut().unwrap();
        if let AcdWeighting::Pareto(p) = &mut auto.weighting {
            p.every = 3;
        }
        let every1 = config("sasrec", "data/food-kitchen-mini");
        let (ds, _, layout) = training_data(&every3).unwrap();
        let batches: Vec<_> = layout.batches(64, every3.train.seed, 1).take(4).collect();
        let lr = Schedule::new(&every3.optim).lr;
        let (model, mut opt) = build_model(&every3, &ds).unwrap();
        let (reference, mut ref_opt) = build_model(&every1, &ds).unwrap();
        let mut schedule = ParetoSchedule::new(every3.autocdsr.as_ref().unwrap());
        let mut first_c = None;
        for (i, batch) in batches.iter().enumerate() {
            let seed = 100 + i as u64;
            let loss = batch_loss(&model, &ds, &layout, batch, &every3, seed).unwrap();
            let auto = every3.autocdsr.as_ref().unwrap();
            let step =
                batch_step(&mut opt, &model, &ds, &loss, auto, lr, &mut schedule, None).unwrap();
            // The reference: Pareto-MTL on steps 0 and 3, the fixed weight c0 on 1 and 2.
            let mut cfg = every1.clone();
            if i % 3 != 0 {
                cfg.autocdsr.as_mut().unwrap().weighting = AcdWeighting::Fixed {
                    weight: first_c.unwrap(),
                };
            }
            let ref_loss = batch_loss(&reference, &ds, &layout, batch, &cfg, seed).unwrap();
            assert!(loss.item_lookup_leaf.is_some());
            assert_eq!(ref_loss.item_lookup_leaf.is_some(), i % 3 == 0);
            let ref_auto = cfg.autocdsr.as_ref().unwrap();
            let mut fresh = ParetoSchedule::new(ref_auto);
            let ref_step = batch_step(
                &mut ref_opt,
                &reference,
                &ds,
                &ref_loss,
                ref_auto,
                lr,
                &mut fresh,
                None,
            )
            .unwrap();
            assert_eq!(step.coefficient, ref_step.coefficient, "step {i}");
            if i == 0 {
                first_c = Some(step.coefficient);
            } else if i < 3 {
                assert_eq!(Some(step.coefficient), first_c);
            }
            for (var, var_ref) in opt.vars().iter().zip(ref_opt.vars()) {
                assert_eq!(bits(var.as_tensor()), bits(var_ref.as_tensor()), "step {i}");
            }
        }
        let mut zero = every1.clone();
        if let AcdWeighting::Pareto(p) = &mut zero.autocdsr.as_mut().unwrap().weighting {
            p.every = 0;
        }
        let err = zero.autocdsr.unwrap().validate(2).unwrap_err().to_string();
        assert!(err.contains("autocdsr.weighting.every"), "{err}");
    }
}
