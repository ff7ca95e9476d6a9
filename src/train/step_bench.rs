//! Timed training steps on a pinned real batch: forward, InfoNCE loss, backward and AdamW, the
//! work [`super::train`] does per step, on the run's `train.device`. The speed anchor against
//! the PyTorch port (`scripts/bench_train_step.sh`, `cdsr-lab step`) and the GPU smoke check
//! (the same step on `cpu` and `cuda` must give the same losses within a tolerance,
//! `scripts/gpu_run.sh`).
//!
//! The batch ([`PinnedBatch`]): rows 0..256 of food-kitchen's training layout, checked against
//! `data/fixtures/train_step_batch.npz`, with the npz's negatives (one draw per row, repeated
//! at each target position as the trainer does, for either sharing mode's amount of work).
//!
//! AutoCDSR's step against its base model's ([`time_autocdsr_overhead`]) runs on the
//! trainer's own batches instead, so it times any dataset.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use ndarray::Array2;
use ndarray_npy::NpzReader;
use serde::Serialize;

use super::config::AutoCdsrConfig;
use super::loss::batch_loss_of_input;
use super::{autocdsr, build_model, RunConfig};

mod autocdsr_overhead;
use crate::data::{self, Dataset, LayoutConfig, Split, TrainBatch, TrainLayout};
pub use autocdsr_overhead::{time_autocdsr_overhead, AcdOverhead, SideBySideStep};

/// Rows of the pinned batch (the npz holds exactly these rows of the training layout).
pub const PINNED_ROWS: usize = 256;
/// Pinned negatives per domain in the npz (a config may use the first `n <=` of them).
const PINNED_NEGATIVES: usize = 128;

/// A training batch and its negatives, fixed by `data/fixtures/train_step_batch.npz`.
pub struct PinnedBatch {
    pub batch: TrainBatch,
    /// `[rows * len, 2 n]`: each target position's negatives (A's then B's), 0 elsewhere.
    pub negatives: Vec<u32>,
    /// Rows of the whole training layout (an epoch's sequences).
    pub layout_rows: usize,
}

impl PinnedBatch {
    /// Rows 0..256 of `ds`'s training layout at `cfg.model.max_len`, checked against the npz's
    /// `x`, with the first `cfg.train.negatives_per_domain` of each domain's pinned negatives.
    pub fn load(npz_path: &Path, ds: &Dataset, cfg: &RunConfig) -> anyhow::Result<Self> {
        let split = Split::leave_one_out(ds);
        let layout = TrainLayout::build(
            ds,
            &split,
            LayoutConfig {
                max_len: cfg.model.max_len,
                ..Default::default()
            },
        );
        let rows: Vec<usize> = (0..PINNED_ROWS).collect();
        let batch = layout.gather(&rows);
        let file = std::fs::File::open(npz_path)
            .with_context(|| format!("cannot open pinned batch {}", npz_path.display()))?;
        let mut npz = NpzReader::new(file)
            .with_context(|| format!("{}: not an npz file", npz_path.display()))?;
        let x: Array2<i64> = npz
            .by_name("x")
            .with_context(|| format!("{}: no array `x`", npz_path.display()))?;
        anyhow::ensure!(
            x.iter().map(|&v| v as u32).eq(batch.x.iter().copied()),
            "{}: x differs from {}'s training layout rows 0..{PINNED_ROWS}",
            npz_path.display(),
            ds.name
        );
        let pinned: Array2<i64> = npz
            .by_name("negatives")
            .with_context(|| format!("{}: no array `negatives`", npz_path.display()))?;
        let n = cfg.train.negatives_per_domain;
        anyhow::ensure!(
            pinned.ncols() >= 2 * PINNED_NEGATIVES && n <= PINNED_NEGATIVES,
            "{}: holds {} negatives per row; train.negatives_per_domain = {n} needs {n} of {} per domain",
            npz_path.display(),
            pinned.ncols(),
            PINNED_NEGATIVES
        );
        let l = batch.max_len;
        let w = 2 * n;
        let mut negatives = vec![0u32; batch.batch_size() * l * w];
        for r in 0..batch.batch_size() {
            let row = pinned.row(r);
            // the first n of each domain's pinned draws
            let draw: Vec<u32> = row
                .iter()
                .take(n)
                .chain(row.iter().skip(PINNED_NEGATIVES).take(n))
                .map(|&v| v as u32)
                .collect();
            for t in 0..l {
                if batch.target_domain[r * l + t] != data::layout::TARGET_NONE {
                    negatives[(r * l + t) * w..(r * l + t + 1) * w].copy_from_slice(&draw);
                }
            }
        }
        Ok(Self {
            batch,
            negatives,
            layout_rows: layout.len(),
        })
    }
}

/// Sets `cfg`'s GCA positions from a list: `""` keeps the config's, `"none"` removes GCA,
/// `"0"` or `"0,1"` place it.
pub fn set_gca_positions(cfg: &mut RunConfig, list: &str) -> anyhow::Result<()> {
    match list.trim() {
        "" => {}
        "none" => cfg.gca.positions.clear(),
        list => {
            cfg.gca.positions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse()
                        .with_context(|| format!("GCA position `{p}` is not a number"))
                })
                .collect::<anyhow::Result<_>>()?
        }
    }
    cfg.validate()?;
    Ok(())
}

/// Turns AutoCDSR on (`[autocdsr]` with its defaults: Pareto-MTL weights, the public code's
/// preferences) or off for the timed steps; `keep` leaves the config's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCdsrSwitch {
    Keep,
    On,
    Off,
}

impl AutoCdsrSwitch {
    /// `""` (keep), `"on"` or `"off"`, as the benchmark's environment and the CLI give it.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "" | "keep" => Ok(Self::Keep),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => anyhow::bail!("AutoCDSR switch `{other}`: on, off or keep"),
        }
    }

    /// Applies the switch to `cfg` (an `[autocdsr]` already there is kept by `On`).
    pub fn apply(self, cfg: &mut RunConfig) -> anyhow::Result<()> {
        match self {
            Self::Keep => {}
            Self::On => {
                cfg.autocdsr.get_or_insert_with(AutoCdsrConfig::default);
            }
            Self::Off => cfg.autocdsr = None,
        }
        cfg.validate()?;
        Ok(())
    }
}

/// What [`time_steps`] measured: per step (after the warm-up), the seconds of the forward pass
/// with the loss, the backward pass, AdamW and the whole step; the loss of every step. With
/// `[autocdsr]` the backward time is the rest of the AutoCDSR update (the `a_cd` objective,
/// both backward passes, the Gram matrix, the weights and AdamW) and the AdamW time about 0.
#[derive(Debug, Clone, Serialize)]
pub struct StepTimes {
    pub device: &'static str,
    pub params: usize,
    /// Batches of `train.batch_size` in one epoch of the dataset (the last may be smaller):
    /// times the median step, an epoch's training time without evaluation.
    pub batches_per_epoch: usize,
    /// Loss of each step, warm-up included: step 0 is the initial weights' loss, step 1 the
    /// loss after one AdamW update.
    pub losses: Vec<f32>,
    pub step_s: Vec<f64>,
    pub forward_s: Vec<f64>,
    pub backward_s: Vec<f64>,
    pub adamw_s: Vec<f64>,
    /// Resident memory before the first step (model, optimiser state, data), bytes; `None`
    /// where `/proc/self/status` cannot be read.
    pub rss_before_steps: Option<u64>,
    /// The process's peak resident memory during the steps (warm-up included), bytes: the
    /// kernel's high-water mark, reset before the first step where `/proc/self/clear_refs`
    /// allows it (else the peak since the process started).
    pub peak_rss: Option<u64>,
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`) in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl StepTimes {
    /// The median of a list of seconds (NaN when empty).
    pub fn median(seconds: &[f64]) -> f64 {
        let mut v = seconds.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// One JSON object for the benchmark scripts: `impl` (`rust`), `device`, `config` (as
    /// given), `gca_positions`, `threads`, `params`, `batches_per_epoch`, the medians (`median_step_s`,
    /// `median_forward_s`, `median_backward_s`, `median_adamw_s`), `min_step_s`, `steps`,
    /// the resident memory (`rss_before_steps_bytes`, `peak_rss_bytes` and their difference
    /// `step_peak_rss_bytes`, what the steps added at their peak), `loss_first`, `loss_last`
    /// and `losses`.
    pub fn summary(&self, config: &str, cfg: &RunConfig) -> serde_json::Value {
        serde_json::json!({
            "impl": "rust",
            "device": self.device,
            "config": config,
            "gca_positions": cfg.gca.positions,
            "autocdsr": cfg.autocdsr.is_some(),
            "threads": cfg.train.threads,
            "params": self.params,
            "batches_per_epoch": self.batches_per_epoch,
            "median_step_s": Self::median(&self.step_s),
            "median_forward_s": Self::median(&self.forward_s),
            "median_backward_s": Self::median(&self.backward_s),
            "median_adamw_s": Self::median(&self.adamw_s),
            "min_step_s": self.step_s.iter().copied().fold(f64::INFINITY, f64::min),
            "steps": self.step_s.len(),
            "rss_before_steps_bytes": self.rss_before_steps,
            "peak_rss_bytes": self.peak_rss,
            "step_peak_rss_bytes": self.peak_rss.zip(self.rss_before_steps).map(|(p, b)| p.saturating_sub(b)),
            "loss_first": self.losses.first(),
            "loss_last": self.losses.last(),
            "losses": self.losses,
        })
    }
}

/// Builds `cfg`'s model (seeded, on `cfg.train.device`) and runs `warmup + steps` training
/// steps on the pinned batch, step `s` with dropout seed `s`; times the last `steps`. Each
/// phase ends with the device synchronised, so GPU times are not just launch times.
pub fn time_steps(
    cfg: &RunConfig,
    ds: &Dataset,
    pinned: &PinnedBatch,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<StepTimes> {
    super::train_loop::set_threads(cfg.train.threads);
    let (model, mut opt) = build_model(cfg, ds)?;
    let device = model.params().device().clone();
    let mut out = StepTimes {
        device: cfg.train.device.as_str(),
        params: model.params().total_params(),
        batches_per_epoch: pinned.layout_rows.div_ceil(cfg.train.batch_size),
        losses: Vec::new(),
        step_s: Vec::new(),
        forward_s: Vec::new(),
        backward_s: Vec::new(),
        adamw_s: Vec::new(),
        rss_before_steps: proc_status_bytes("VmRSS"),
        peak_rss: None,
    };
    // "5" resets the high-water mark to the current resident size (Linux 4.0+), so VmHWM
    // after the steps is their peak; where the write fails it is the process's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut schedule = None;
    for step in 0..warmup + steps {
        let t = Instant::now();
        let batch = batch_loss_of_input(
            &model,
            std::borrow::Cow::Borrowed(&pinned.batch),
            &pinned.negatives,
            cfg,
            step as u64,
        )?;
        // Reading the loss waits for the forward pass.
        out.losses.push(batch.loss.to_scalar::<f32>()?);
        let t_fwd = t.elapsed().as_secs_f64();
        let t_bwd = match &cfg.autocdsr {
            None => {
                let grads = batch.loss.backward()?;
                device.synchronize()?;
                let t_bwd = t.elapsed().as_secs_f64();
                opt.apply(&grads, cfg.optim.lr)?;
                t_bwd
            }
            Some(auto) => {
                autocdsr::batch_step(
                    &mut opt,
                    &model,
                    ds,
                    &batch,
                    auto,
                    cfg.optim.lr,
                    schedule.get_or_insert_with(|| autocdsr::ParetoSchedule::new(auto)),
                    None,
                )?;
                device.synchronize()?;
                t.elapsed().as_secs_f64()
            }
        };
        device.synchronize()?;
        let t_all = t.elapsed().as_secs_f64();
        if step >= warmup {
            out.forward_s.push(t_fwd);
            out.backward_s.push(t_bwd - t_fwd);
            out.adamw_s.push(t_all - t_bwd);
            out.step_s.push(t_all);
        }
    }
    out.peak_rss = proc_status_bytes("VmHWM");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::AutoCdsrSwitch;

    #[test]
    fn autocdsr_switch_parses_its_three_values_and_names_a_bad_one() {
        for (text, switch) in [
            ("", AutoCdsrSwitch::Keep),
            ("keep", AutoCdsrSwitch::Keep),
            (" on ", AutoCdsrSwitch::On),
            ("off", AutoCdsrSwitch::Off),
        ] {
            assert_eq!(AutoCdsrSwitch::parse(text).unwrap(), switch, "{text:?}");
        }
        let err = AutoCdsrSwitch::parse("yes").unwrap_err().to_string();
        assert!(
            err.contains("`yes`") && err.contains("on, off or keep"),
            "{err}"
        );
    }
}
