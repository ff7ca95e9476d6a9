//! The training loop: [`train`] runs one [`RunConfig`] into a run directory (format v1, see
//! `docs/run-format.md`), resumable after a kill.
//!
//! Per epoch: shuffled batches ([`crate::data::TrainLayout::batches`]), ABXI's negatives
//! ([`crate::data::sample_train_negatives`]), sampled-softmax InfoNCE, AdamW; then validation
//! (sampled negatives, [`crate::eval`]), ABXI's schedule (warm-up, plateau, early stop), and at
//! each new best validation MRR_A + MRR_B the test metrics (sampled and full ranking) and the
//! GCA capture. A checkpoint is written atomically after every epoch. Training ends at early
//! stop, at `train.epochs` or at `train.max_wall_time_s`, recorded as the run's `stop_reason`
//! ([`stopping`]); a resumed run that has stopped trains no further.
//!
//! Deterministic on CPU for a fixed seed and thread count: every random draw is seeded from
//! `(seed, epoch)` or `(seed, step)`.
//!
//! The parts: `loss` (a batch's InfoNCE loss plus `gca.cos_penalty`), `evaluate` (metrics,
//! per-case `a_cd` and |cos(X, X')|, the capture), [`stopping`] (when training ends), [`autocdsr`] (AutoCDSR's two-objective step), [`checkpoint`] (resume state),
//! [`optim`] (AdamW and the schedule), [`pareto`] (Pareto-MTL weights) and the loop itself.

pub mod autocdsr;
pub mod checkpoint;
pub mod config;
mod evaluate;
mod loss;
pub mod optim;
pub mod pareto;
pub mod step_bench;
pub mod stopping;
mod train_loop;

use std::path::PathBuf;

pub use config::{
    AutoCdsrConfig, ComputeDevice, ConfigError, DataConfig, DeviceError, Interval, OptimConfig,
    RunConfig, TrainConfig,
};
pub use loss::batch_loss_with_negatives;
pub use train_loop::{build_model, train};

use crate::data::Domain;
use crate::eval::EvalReport;

/// Options of one call that are not part of the run's identity.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `run_dir/checkpoint` instead of starting fresh.
    pub resume: bool,
    /// Show a progress bar (loss, ETA) on stderr.
    pub progress: bool,
    /// Stop after this many epochs *in this call* (tests use it to simulate a kill).
    pub stop_after_epochs: Option<usize>,
}

/// What a finished (or stopped) run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    /// Test metrics at the best epoch (sampled negatives).
    pub test: Option<EvalReport>,
    /// Test metrics at the best epoch (full ranking), when enabled.
    pub test_full: Option<EvalReport>,
    pub params_total: usize,
    pub wall_time_s: f64,
    /// False when the call stopped early on `stop_after_epochs`.
    pub complete: bool,
    /// Why training stopped (`None` when the call stopped early on `stop_after_epochs`).
    pub stop_reason: Option<stopping::StopReason>,
}

/// What `cdsr-lab train` prints: the run directory, its size and time, the test metrics.
impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "run: {}", self.run_dir.display())?;
        writeln!(
            f,
            "params: {}  epochs: {}  best epoch: {:?}  stopped: {}  wall time: {:.1}s",
            self.params_total,
            self.epochs_run,
            self.best_epoch,
            self.stop_reason.map_or("not yet", |r| r.as_str()),
            self.wall_time_s
        )?;
        for (what, report) in [("", &self.test), (" full-ranking", &self.test_full)] {
            let Some(t) = report else { continue };
            for d in Domain::BOTH {
                let m = t.domain(d);
                writeln!(
                    f,
                    "test{what} {d}: NDCG@10 {:.4}  HR@10 {:.4}  MRR {:.4}  AUC {:.4}",
                    m.ndcg_10, m.hr_10, m.mrr, m.auc
                )?;
            }
        }
        Ok(())
    }
}
