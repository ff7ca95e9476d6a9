//! One AutoCDSR training step: the recommendation loss `L_rec` and the cross-domain attention
//! share `a_cd` ([`crate::model::autocdsr::acd_objective`]) as two objectives, then one AdamW
//! update of `L_rec + c * a_cd`.
//!
//! With Pareto-MTL weighting `c = lambda0 / lambda1` is recomputed every step from the two
//! gradients over the shared parameters (their Gram matrix, l2-normalised, the active
//! preference constraints, the Frank-Wolfe min-norm solution: [`crate::train::pareto`]); with a
//! fixed weight `c` is a constant and one backward pass suffices.

use super::loss::BatchLoss;
use crate::data::Dataset;
use crate::model::autocdsr::{acd_objective, ib_objective, AutoCdsrConfig};
use crate::model::nn::Tensor;
use crate::model::Model;
use crate::train::optim::AdamW;
use crate::train::pareto::{AcdWeighting, GradGram};

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
/// then [`autocdsr_step`] with the recommendation loss.
pub fn batch_step(
    opt: &mut AdamW,
    model: &Model,
    ds: &Dataset,
    batch: &BatchLoss,
    cfg: &AutoCdsrConfig,
    lr: f64,
) -> anyhow::Result<AcdStep> {
    let BatchLoss {
        loss: rec,
        attention,
        input,
    } = batch;
    let items = ndarray::ArrayView2::from_shape((input.batch_size(), input.max_len), &input.x)?;
    let acd = if cfg.ib.is_some() {
        ib_objective(attention, ds, items, cfg)?
    } else {
        acd_objective(attention, ds, items, cfg)?
    };
    autocdsr_step(opt, &model.item_embedding().weight, rec, &acd, cfg, lr)
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
    let a_cd = acd.to_scalar::<f32>()? as f64;
    let l_rec = rec.to_scalar::<f32>()? as f64;
    if let AcdWeighting::Fixed { weight } = cfg.weighting {
        opt.backward_step(&(rec + (acd * weight)?)?, lr)?;
        return Ok(AcdStep {
            a_cd,
            coefficient: weight,
            fallback: false,
        });
    }
    let mut grads = rec.backward()?;
    let g_acd = acd.backward()?;
    let mut gram = GradGram::default();
    let host = |g: Option<&Tensor>, n: usize| -> anyhow::Result<Vec<f32>> {
        Ok(match g {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; n],
        })
    };
    for var in opt.vars() {
        let t = var.as_tensor();
        if cfg.ignore_item_embedding && t.id() == item_embedding.id() {
            continue;
        }
        let n = t.elem_count();
        gram.accumulate(&host(g_acd.get(t), n)?, &host(grads.get(t), n)?);
    }
    let w = cfg.weighting.coefficient(Some(gram), [a_cd, l_rec])?;
    let c = w.coefficient;
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
    Ok(AcdStep {
        a_cd,
        coefficient: c,
        fallback: w.fallback.is_some(),
    })
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
            ("a_cd", self.a_cd / n),
            ("acd_coefficient", self.coefficient / n),
            ("acd_fallback_steps", self.fallbacks as f64),
        ]
    }
}
