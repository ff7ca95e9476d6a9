//! Helpers shared by the sweep integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `cdsr-lab` binary under test.
pub fn cdsr_lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cdsr-lab"))
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
    let out = cdsr_lab()
        .args(["sweep", "plan"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8_lossy(&out.stdout)
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
