//! Training-step throughput of the ABXI(+GCA) model on a pinned real batch: forward, InfoNCE
//! loss, backward and AdamW, the work `train::train` does per step
//! ([`cdsr_lab::train::step_bench`]). Run through `scripts/bench_train_step.sh`, which runs the
//! PyTorch port (`scripts/python/train_step_torch.py`) right after on the same batch and
//! threads and prints the ratio. `cdsr-lab step` runs the same measurement from the binary
//! (the GPU machine has no cargo).
//!
//! Settings from the environment: `TRAIN_STEP_CONFIG` (configs/abxi-cpu.toml),
//! `TRAIN_STEP_GCA_POSITIONS` ('' = the config's, 'none', '0', '0,1'), `TRAIN_STEP_AUTOCDSR`
//! ('' = the config's, 'on': AutoCDSR's Pareto-MTL update, 'off'), `TRAIN_STEP_THREADS` (2),
//! `TRAIN_STEP_WARMUP` (3), `TRAIN_STEP_STEPS` (20), `TRAIN_STEP_BATCH` (the npz).
//! Prints one JSON line with the median step time and the step's peak resident memory.
use std::path::PathBuf;

use cdsr_lab::data;
use cdsr_lab::train::step_bench::{set_gca_positions, time_steps, AutoCdsrSwitch, PinnedBatch};
use cdsr_lab::train::RunConfig;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config_path = env("TRAIN_STEP_CONFIG", "configs/abxi-cpu.toml");
    let mut cfg = RunConfig::from_file(&root.join(&config_path))?;
    set_gca_positions(&mut cfg, &env("TRAIN_STEP_GCA_POSITIONS", ""))?;
    AutoCdsrSwitch::parse(&env("TRAIN_STEP_AUTOCDSR", ""))?.apply(&mut cfg)?;
    let threads: usize = env("TRAIN_STEP_THREADS", "2").parse()?;
    cfg.train.threads = Some(threads);
    let warmup: usize = env("TRAIN_STEP_WARMUP", "3").parse()?;
    let steps: usize = env("TRAIN_STEP_STEPS", "20").parse()?;
    let npz_path = root.join(env(
        "TRAIN_STEP_BATCH",
        "data/fixtures/train_step_batch.npz",
    ));

    let data_dir = data::shared_data_dir()
        .ok_or_else(|| anyhow::anyhow!("../shared/data not found (set CDSR_SHARED_DATA)"))?
        .join("food-kitchen");
    let ds = data::load(&data_dir)?.dataset;
    let pinned = PinnedBatch::load(&npz_path, &ds, &cfg)?;
    let t = time_steps(&cfg, &ds, &pinned, warmup, steps)?;
    println!("{}", t.summary(&config_path, &cfg));
    Ok(())
}
