//! Helpers shared by the integration tests (sweeps, AutoCDSR and BERT4Rec training).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cdsr_lab::model::ModelKind;
use cdsr_lab::train::{RunConfig, TrainOptions};

/// The `cdsr-lab` binary under test.
pub fn cdsr_lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cdsr-lab"))
}

/// Runs `cmd`, asserts it succeeded (showing its stderr if not) and returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The project root (relative data paths in configs resolve against it).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `status` of `run_dir/run.json`, if readable.
pub fn run_json_status(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("run.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["status"].as_str().map(str::to_owned)
}

/// Writes a sweep of the trainer's smoke configuration over `seeds` into `dir` and returns
/// the sweep file and its run ids (from `cdsr-lab sweep plan`).
pub fn smoke_sweep(dir: &Path, seeds: &[i64]) -> (PathBuf, Vec<String>) {
    let base = project_root().join("configs/smoke.toml");
    let seeds: Vec<String> = seeds.iter().map(i64::to_string).collect();
    let text = format!(
        "name = \"smoke\"\nbase = {:?}\nseeds = [{}]\n",
        base.display().to_string(),
        seeds.join(", ")
    );
    let file = dir.join("smoke-sweep.toml");
    std::fs::write(&file, text).unwrap();
    let ids = stdout_of(cdsr_lab().args(["sweep", "plan"]).arg(&file))
        .lines()
        .filter_map(|l| {
            // `  INDEX  ID  SETTINGS`; the closing "N runs in sweep ..." line is not a run.
            let mut f = l.split_whitespace();
            f.next()?.parse::<usize>().ok()?;
            f.next().filter(|id| *id != "runs").map(str::to_owned)
        })
        .collect();
    (file, ids)
}

/// The smoke configuration (`configs/smoke.toml`) on the food-kitchen slice, sampled
/// evaluation only.
pub fn smoke_on_slice() -> RunConfig {
    let root = project_root();
    let mut cfg = RunConfig::from_file(&root.join("configs/smoke.toml")).unwrap();
    cfg.data.path = root.join("data/food-kitchen-mini");
    cfg.train.full_ranking = false;
    cfg
}

/// The smoke configuration on the repository slice `data` (relative to the project root) as a
/// `kind` model without GCA, no warm-up, at a large rate: about 50 steps on the slice are
/// enough for the (tiny, near-uniform at initialisation) attention maps to move.
pub fn attention_smoke(data: &str, kind: ModelKind) -> RunConfig {
    let mut cfg = RunConfig::from_file(&project_root().join("configs/smoke.toml")).unwrap();
    cfg.data.path = project_root().join(data);
    cfg.model.kind = kind;
    cfg.gca.positions.clear();
    cfg.optim.warmup_epochs = 0;
    cfg.optim.lr = 3e-2;
    cfg
}

/// Options of a test run: fresh, no progress bar, to the end.
pub fn quiet() -> TrainOptions {
    TrainOptions {
        resume: false,
        progress: false,
        stop_after_epochs: None,
    }
}

/// Rows of a run's `metrics.jsonl` as JSON values.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last epoch's logged validation `a_cd`, mean over the two domains.
pub fn last_valid_acd(rows: &[serde_json::Value]) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r["split"] == "valid")
        .filter_map(|r| r["a_cd"].as_f64())
        .collect();
    assert_eq!(v.len() % 2, 0, "one a_cd per domain and epoch");
    v[v.len() - 2..].iter().sum::<f64>() / 2.0
}
