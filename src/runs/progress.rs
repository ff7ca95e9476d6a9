//! How far a run has trained by its stopping rule, read from its directory while it trains or
//! after: the last epoch, the best epoch ([`super::LoadedRun::best_so_far`]: the trainer's own
//! choice) with its validation selection score (MRR_A + MRR_B, as
//! [`crate::eval::EvalReport::selection_score`]), and the epochs since, against the recorded
//! patience. `cdsr-lab sweep status --runs` prints it for every started run, so a long sweep
//! shows whether its runs are still improving or close to stopping.

use std::fmt;
use std::path::Path;

use super::{load_run, RunError, Split};

/// A run's training progress (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingProgress {
    /// The last epoch with a line in `metrics.jsonl` (0 before the first).
    pub epoch: u32,
    /// The epoch cap (`train.epochs`), when recorded.
    pub epoch_cap: Option<u64>,
    /// The best epoch so far and its validation selection score; `None` before the first
    /// epoch that improved validation after warm-up.
    pub best: Option<(u32, f64)>,
    /// The recorded patience: training stops after more than this many epochs without a better
    /// score.
    pub patience: Option<u64>,
}

impl TrainingProgress {
    /// Epochs after the best one (the stopping rule's count).
    pub fn epochs_since_best(&self) -> Option<u32> {
        self.best.map(|(best, _)| self.epoch - best)
    }
}

/// The progress of the run in `dir` from `run.json` and `metrics.jsonl` (a run killed
/// mid-line is an error naming the line, as for [`super::read_metrics`]).
pub fn training_progress(dir: &Path) -> Result<TrainingProgress, RunError> {
    let run = load_run(dir)?;
    let view = run.manifest.config_view();
    let best = run.best_so_far().and_then(|(epoch, _)| epoch).map(|epoch| {
        let score: f64 = run
            .metrics
            .iter()
            .filter(|r| r.split == Split::Valid && r.epoch == epoch)
            .filter_map(|r| r.values.get("mrr"))
            .map(|v| v.0)
            .sum();
        (epoch, score)
    });
    Ok(TrainingProgress {
        epoch: run.metrics.iter().map(|r| r.epoch).max().unwrap_or(0),
        epoch_cap: view.train.epochs,
        best,
        patience: view.optim.early_stop_patience,
    })
}

impl fmt::Display for TrainingProgress {
    /// `epoch 50/200, best 49 (valid MRR A+B 0.2881), 1 since (stops after 7)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.epoch)?;
        if let Some(cap) = self.epoch_cap {
            write!(f, "/{cap}")?;
        }
        if let (Some((epoch, score)), Some(since)) = (self.best, self.epochs_since_best()) {
            write!(
                f,
                ", best {epoch} (valid MRR A+B {score:.4}), {since} since"
            )?;
            if let Some(p) = self.patience {
                write!(f, " (stops after {p})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::read_manifest;

    /// On the committed runs of the intervention study (every one early-stopped), the best
    /// epoch is the one `run.json` records, its score is the highest validation score of the
    /// run, and the run stopped one epoch past its patience.
    #[test]
    fn committed_early_stopped_runs_read_their_best_epoch_and_patience() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/orthogonality/runs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            let manifest = read_manifest(&dir).unwrap();
            let p = training_progress(&dir).unwrap();
            assert_eq!(p.epoch, manifest.epochs_run, "{}", dir.display());
            assert_eq!(
                p.best.map(|(e, _)| e),
                manifest.best_epoch,
                "{}",
                dir.display()
            );
            assert_eq!(
                p.epochs_since_best().map(u64::from),
                p.patience.map(|k| k + 1),
                "{}: an early stop comes after more than `patience` epochs",
                dir.display()
            );
            let run = load_run(&dir).unwrap();
            let highest = (1..=p.epoch)
                .map(|e| {
                    run.metrics
                        .iter()
                        .filter(|r| r.split == Split::Valid && r.epoch == e)
                        .map(|r| r.values["mrr"].0)
                        .sum::<f64>()
                })
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(p.best.unwrap().1, highest, "{}", dir.display());
            let text = p.to_string();
            assert!(
                text.contains(", best ") && text.contains("stops after 7"),
                "{text}"
            );
            seen += 1;
        }
        assert!(seen >= 27, "{seen} runs");
    }
}
