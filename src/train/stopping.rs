//! When a run stops training: early stopping (the schedule's patience on the validation score
//! ran out: the run converged), or a budget (`train.epochs`, `train.max_wall_time_s`) reached
//! first. The reason is recorded in `run.json` (`stop_reason`, [`StopReason`]).
//!
//! ```
//! use cdsr_lab::train::optim::EpochOutcome;
//! use cdsr_lab::train::stopping::{stop_after_epoch, Budget};
//! use cdsr_lab::runs::StopReason;
//! let budget = Budget { epochs: 10, wall_time_s: Some(60.0) };
//! assert_eq!(stop_after_epoch(EpochOutcome::Improved, 3, 20.0, &budget), None);
//! assert_eq!(stop_after_epoch(EpochOutcome::Stop, 3, 20.0, &budget), Some(StopReason::EarlyStop));
//! assert_eq!(stop_after_epoch(EpochOutcome::Improved, 10, 20.0, &budget), Some(StopReason::EpochCap));
//! assert_eq!(stop_after_epoch(EpochOutcome::NoImprovement, 4, 61.0, &budget), Some(StopReason::TimeCap));
//! ```

use super::optim::EpochOutcome;
pub use crate::runs::StopReason;

/// The most a run may spend: epochs, and optionally training wall time in seconds (summed over
/// resumed calls).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub epochs: usize,
    pub wall_time_s: Option<f64>,
}

/// Whether training stops after `epoch` (1-based) with the schedule's `outcome`, given the
/// wall time spent so far. Early stopping wins over a cap reached at the same epoch: the rule
/// had already decided.
pub fn stop_after_epoch(
    outcome: EpochOutcome,
    epoch: usize,
    wall_time_s: f64,
    budget: &Budget,
) -> Option<StopReason> {
    if outcome == EpochOutcome::Stop {
        Some(StopReason::EarlyStop)
    } else if epoch >= budget.epochs {
        Some(StopReason::EpochCap)
    } else if budget.wall_time_s.is_some_and(|cap| wall_time_s >= cap) {
        Some(StopReason::TimeCap)
    } else {
        None
    }
}

/// Whether a run resumed after `epoch` completed epochs may train at all: `Some(reason)` when it
/// had already stopped (recorded `stopped`, or a budget already spent), so a resumed run that
/// stopped never trains further.
pub fn stopped_before(
    recorded: Option<StopReason>,
    epoch: usize,
    wall_time_s: f64,
    budget: &Budget,
) -> Option<StopReason> {
    recorded.or_else(|| {
        if epoch >= budget.epochs {
            Some(StopReason::EpochCap)
        } else if budget.wall_time_s.is_some_and(|cap| wall_time_s >= cap) {
            Some(StopReason::TimeCap)
        } else {
            None
        }
    })
}
