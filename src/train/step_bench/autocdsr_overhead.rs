//! AutoCDSR's training step against its base model's, side by side in one process: two models
//! from the same seed, one trained plainly and one with `[autocdsr]`, step on the same batches
//! of the trainer's first epoch (its batch order, negatives and dropout seeds), the two sides
//! alternating which goes first. Each AutoCDSR step is split into its phases
//! ([`AcdPhases`]); the sums over the timed steps are an epoch slice's training time.
//! `cdsr-lab autocdsr-step` and `STEPS=N scripts/bench_autocdsr_overhead.sh` print it.

use std::time::Instant;

use serde::Serialize;

use super::StepTimes;
use crate::train::autocdsr::{batch_step, AcdPhases, ParetoSchedule};
use crate::train::loss::batch_loss;
use crate::train::optim::Schedule;
use crate::train::train_loop::{set_threads, step_seed, training_data};
use crate::train::{build_model, RunConfig};

/// One step of each side, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SideBySideStep {
    /// Base model: forward pass with the loss, backward pass, AdamW, the whole step.
    pub base_forward_s: f64,
    pub base_backward_s: f64,
    pub base_adamw_s: f64,
    pub base_step_s: f64,
    /// AutoCDSR: the forward pass with the loss (attention maps recorded), then its phases.
    pub acd_forward_s: f64,
    pub acd: AcdPhases,
    pub acd_step_s: f64,
    pub base_loss: f32,
    pub acd_loss: f32,
    pub a_cd: f64,
    pub coefficient: f64,
}

/// What [`time_autocdsr_overhead`] measured: every step, warm-up included (the first
/// `warmup` are left out of the sums and medians).
#[derive(Debug, Clone, Serialize)]
pub struct AcdOverhead {
    pub warmup: usize,
    pub steps: Vec<SideBySideStep>,
    /// Batches in one epoch of the training layout.
    pub batches_per_epoch: usize,
}

impl AcdOverhead {
    fn timed(&self) -> &[SideBySideStep] {
        &self.steps[self.warmup.min(self.steps.len())..]
    }

    /// Sum and median over the timed steps of one per-step number.
    fn stat(&self, f: impl Fn(&SideBySideStep) -> f64) -> serde_json::Value {
        let v: Vec<f64> = self.timed().iter().map(f).collect();
        serde_json::json!({ "sum": v.iter().sum::<f64>(), "median": StepTimes::median(&v) })
    }

    /// One JSON object: `config` (as given), `threads`, `batch_size`, `batches_per_epoch`,
    /// `timed_steps`, per phase the sum and median over the timed steps (`base`: forward,
    /// backward, adamw, step; `autocdsr`: forward, objective, rec_backward, acd_backward, gram,
    /// update, step), `overhead` (AutoCDSR's summed step time over the base's, minus one) and
    /// `overhead_median`, and the losses and AutoCDSR's `a_cd` and coefficient of every step.
    pub fn summary(&self, config: &str, cfg: &RunConfig) -> serde_json::Value {
        let sum = |f: &dyn Fn(&SideBySideStep) -> f64| self.timed().iter().map(f).sum::<f64>();
        let median = |f: &dyn Fn(&SideBySideStep) -> f64| {
            StepTimes::median(&self.timed().iter().map(f).collect::<Vec<_>>())
        };
        serde_json::json!({
            "config": config,
            "threads": cfg.train.threads,
            "batch_size": cfg.train.batch_size,
            "batches_per_epoch": self.batches_per_epoch,
            "timed_steps": self.timed().len(),
            "base": {
                "forward_s": self.stat(|s| s.base_forward_s),
                "backward_s": self.stat(|s| s.base_backward_s),
                "adamw_s": self.stat(|s| s.base_adamw_s),
                "step_s": self.stat(|s| s.base_step_s),
            },
            "autocdsr": {
                "forward_s": self.stat(|s| s.acd_forward_s),
                "objective_s": self.stat(|s| s.acd.objective_s),
                "rec_backward_s": self.stat(|s| s.acd.rec_backward_s),
                "acd_backward_s": self.stat(|s| s.acd.acd_backward_s),
                "gram_s": self.stat(|s| s.acd.gram_s),
                "update_s": self.stat(|s| s.acd.update_s),
                "step_s": self.stat(|s| s.acd_step_s),
            },
            "overhead": sum(&|s| s.acd_step_s) / sum(&|s| s.base_step_s) - 1.0,
            "overhead_median": median(&|s| s.acd_step_s) / median(&|s| s.base_step_s) - 1.0,
            "base_losses": self.steps.iter().map(|s| s.base_loss).collect::<Vec<_>>(),
            "acd_losses": self.steps.iter().map(|s| s.acd_loss).collect::<Vec<_>>(),
            "a_cd": self.steps.iter().map(|s| s.a_cd).collect::<Vec<_>>(),
            "coefficients": self.steps.iter().map(|s| s.coefficient).collect::<Vec<_>>(),
        })
    }
}

/// Trains `cfg`'s model (its `[autocdsr]` section is required) and the same model without
/// AutoCDSR side by side on the first `warmup + steps` batches of the trainer's first epoch,
/// each step with the trainer's step seed, and times each side's steps.
pub fn time_autocdsr_overhead(
    cfg: &RunConfig,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<AcdOverhead> {
    let auto = cfg
        .autocdsr
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the config has no [autocdsr] section to time"))?;
    let mut base_cfg = cfg.clone();
    base_cfg.autocdsr = None;
    set_threads(cfg.train.threads);
    let (ds, _, layout) = training_data(cfg)?;
    let (base_model, mut base_opt) = build_model(&base_cfg, &ds)?;
    let (acd_model, mut acd_opt) = build_model(cfg, &ds)?;
    let lr = Schedule::new(&cfg.optim).lr;
    let bs = cfg.train.batch_size;
    let batches: Vec<_> = layout
        .batches(bs, cfg.train.seed, 1)
        .take(warmup + steps)
        .collect();
    anyhow::ensure!(
        batches.len() == warmup + steps,
        "the training layout has {} batches of {bs}; asked for {warmup} + {steps}",
        batches.len()
    );
    let mut out = AcdOverhead {
        warmup,
        steps: Vec::new(),
        batches_per_epoch: layout.len().div_ceil(bs),
    };
    let mut schedule = ParetoSchedule::new(auto);
    for (i, batch) in batches.iter().enumerate() {
        let step_seed = step_seed(cfg.train.seed, i as u64);
        let mut s = SideBySideStep::default();
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                let bl = batch_loss(&base_model, &ds, &layout, batch, &base_cfg, step_seed)?;
                s.base_loss = bl.loss.to_scalar::<f32>()?;
                s.base_forward_s = t.elapsed().as_secs_f64();
                let grads = bl.loss.backward()?;
                s.base_backward_s = t.elapsed().as_secs_f64() - s.base_forward_s;
                base_opt.apply(&grads, lr)?;
                s.base_step_s = t.elapsed().as_secs_f64();
                s.base_adamw_s = s.base_step_s - s.base_forward_s - s.base_backward_s;
            } else {
                let bl = batch_loss(&acd_model, &ds, &layout, batch, cfg, step_seed)?;
                s.acd_loss = bl.loss.to_scalar::<f32>()?;
                s.acd_forward_s = t.elapsed().as_secs_f64();
                let step = batch_step(
                    &mut acd_opt,
                    &acd_model,
                    &ds,
                    &bl,
                    auto,
                    lr,
                    &mut schedule,
                    Some(&mut s.acd),
                )?;
                s.acd_step_s = t.elapsed().as_secs_f64();
                s.a_cd = step.a_cd;
                s.coefficient = step.coefficient;
            }
        }
        out.steps.push(s);
    }
    Ok(out)
}
