//! AdamW (PyTorch's `torch.optim.AdamW` update, decoupled weight decay on every parameter)
//! and ABXI's learning-rate schedule: linear warm-up, then reduce-on-plateau, then early stop.
//! The optimiser state is plain named tensors so checkpoints can hold it.

use serde::{Deserialize, Serialize};

use super::config::OptimConfig;
use crate::model::nn::{adamw_update, AdamWStep, GradStore, Result, Tensor, Var};

/// AdamW over a fixed list of parameters.
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken.
    pub step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, cfg: &OptimConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        })
    }

    /// One update with learning rate `lr` from the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        self.apply(&loss.backward()?, lr)
    }

    /// The parameters this optimiser updates, in its order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update with learning rate `lr` from given gradients (parameters without one are
    /// left alone, moments included).
    pub fn apply(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let step = AdamWStep {
            beta1: self.beta1,
            beta2: self.beta2,
            bias_correction1: 1.0 - self.beta1.powi(t),
            bias_correction2: 1.0 - self.beta2.powi(t),
            eps: self.eps,
            lr,
            weight_decay: self.weight_decay,
        };
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let (param, m, v) = adamw_update(var.as_tensor(), &self.m[i], &self.v[i], g, step)?;
            var.set(&param)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// First and second moments, for checkpoints: `(m, v)` aligned with the parameters.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores moments and step count from a checkpoint.
    pub fn restore(&mut self, m: Vec<Tensor>, v: Vec<Tensor>, step: u64) -> Result<()> {
        if m.len() != self.vars.len() || v.len() != self.vars.len() {
            crate::model::nn::bail!(
                "checkpoint optimiser state has {} tensors, the model {}",
                m.len(),
                self.vars.len()
            );
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}

/// What the schedule decided after an epoch's validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochOutcome {
    /// Still warming up: no model selection.
    Warmup,
    /// New best validation score.
    Improved,
    /// No improvement; keep going.
    NoImprovement,
    /// No improvement for longer than the early-stop patience.
    Stop,
}

/// ABXI's schedule state (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Current learning rate after warm-up and plateau decays.
    pub lr: f64,
    pub base_lr: f64,
    /// Best validation score so far; `None` before the first scored epoch (JSON has no -inf,
    /// and the checkpoint stores this state as JSON).
    pub best_score: Option<f64>,
    pub bad_epochs_lr: usize,
    pub bad_epochs_stop: usize,
}

impl Schedule {
    pub fn new(cfg: &OptimConfig) -> Self {
        let lr = if cfg.warmup_epochs > 0 {
            cfg.lr * 1e-5
        } else {
            cfg.lr
        };
        Self {
            lr,
            base_lr: cfg.lr,
            best_score: None,
            bad_epochs_lr: 0,
            bad_epochs_stop: 0,
        }
    }

    /// Updates after `epoch` (1-based) with the validation selection score.
    pub fn end_epoch(&mut self, cfg: &OptimConfig, epoch: usize, score: f64) -> EpochOutcome {
        if epoch <= cfg.warmup_epochs {
            // torch LinearLR(start_factor=1e-5, total_iters=warmup), stepped once per epoch.
            let f = 1e-5 + (1.0 - 1e-5) * (epoch as f64 / cfg.warmup_epochs as f64);
            self.lr = self.base_lr * f.min(1.0);
            return EpochOutcome::Warmup;
        }
        if self.best_score.is_none_or(|best| score >= best) {
            self.best_score = Some(score);
            self.bad_epochs_lr = 0;
            self.bad_epochs_stop = 0;
            return EpochOutcome::Improved;
        }
        self.bad_epochs_lr += 1;
        self.bad_epochs_stop += 1;
        if self.bad_epochs_stop > cfg.early_stop_patience {
            return EpochOutcome::Stop;
        }
        if self.bad_epochs_lr > cfg.plateau_patience {
            self.lr *= cfg.plateau_factor;
            self.bad_epochs_lr = 0;
        }
        EpochOutcome::NoImprovement
    }
}
