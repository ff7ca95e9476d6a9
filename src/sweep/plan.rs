//! A resolved sweep: the list of concrete runs with their stable ids, and the sweep's output
//! folder layout. The plan is saved as `plan.json` so that every executor (the local pool, a
//! Slurm array task) runs exactly the configuration the planner resolved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use toml::Table;

use crate::runs::write_atomic;

/// `format` field of `plan.json`.
pub const PLAN_FORMAT: &str = "cdsr-lab-sweep-plan";
/// File name of the plan inside a sweep output folder.
pub const PLAN_JSON: &str = "plan.json";

/// One concrete run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Position in the plan (the Slurm array index).
    pub index: usize,
    /// `<readable slug>-<first 8 hex of the config hash>`; the run directory's name.
    pub id: String,
    pub seed: Option<i64>,
    /// What this run sets, for display: dotted key (or variant label) -> value.
    pub settings: BTreeMap<String, String>,
    /// The full resolved configuration.
    pub config: Table,
}

/// The runs of one sweep, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub sweep: String,
    /// The sweep file it was resolved from.
    pub origin: String,
    pub runs: Vec<PlannedRun>,
    /// Runs dropped because their configuration equals an earlier run's: (slug, kept id).
    pub duplicates: Vec<(String, String)>,
}

impl Plan {
    pub fn new(
        sweep: String,
        origin: String,
        runs: Vec<PlannedRun>,
        duplicates: Vec<(String, String)>,
    ) -> Self {
        Plan {
            format: PLAN_FORMAT.to_owned(),
            sweep,
            origin,
            runs,
            duplicates,
        }
    }

    /// Writes the plan to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("serialising the sweep plan")?;
        Ok(write_atomic(path, &json)?)
    }

    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep plan {}", path.display()))?;
        let plan: Plan = serde_json::from_str(&text)
            .with_context(|| format!("sweep plan {} is not valid", path.display()))?;
        if plan.format != PLAN_FORMAT {
            bail!(
                "{} has format `{}`, expected `{PLAN_FORMAT}`",
                path.display(),
                plan.format
            );
        }
        Ok(plan)
    }

    /// The run with this id, or with this index when `key` is a number.
    pub fn find(&self, key: &str) -> Result<&PlannedRun> {
        if let Ok(i) = key.parse::<usize>() {
            return self.runs.get(i).with_context(|| {
                format!(
                    "the plan has {} runs; index {i} is out of range",
                    self.runs.len()
                )
            });
        }
        self.runs
            .iter()
            .find(|r| r.id == key)
            .with_context(|| format!("no run `{key}` in sweep `{}`", self.sweep))
    }
}

/// Where a sweep's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepDir {
    pub root: PathBuf,
}

impl SweepDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SweepDir { root: root.into() }
    }
    /// `plan.json`.
    pub fn plan(&self) -> PathBuf {
        self.root.join(PLAN_JSON)
    }
    /// Parent of the run directories (`runs/<id>/`).
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
    pub fn run(&self, id: &str) -> PathBuf {
        self.runs().join(id)
    }
    /// One attempt record per run (`status/<id>.json`), written by whoever executes it.
    pub fn records(&self) -> PathBuf {
        self.root.join("status")
    }
    /// The combined status table, one JSON object per run.
    pub fn status_table(&self) -> PathBuf {
        self.root.join("status.jsonl")
    }
    /// Standard output and error of each run (`logs/<id>.log`).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Held by the `cdsr-lab sweep run` working on this folder ([`super::lock`]).
    pub fn lock(&self) -> PathBuf {
        self.root.join("sweep.lock")
    }
    /// Held by the process executing run `id` ([`super::lock`]).
    pub fn run_lock(&self, id: &str) -> PathBuf {
        self.records().join(format!("{id}.lock"))
    }
    /// Slurm script and per-task output.
    pub fn slurm(&self) -> PathBuf {
        self.root.join("slurm")
    }
}

/// The default output folder of a sweep: `runs/sweeps/<name>` under the current directory.
pub fn default_out_dir(sweep_name: &str) -> PathBuf {
    PathBuf::from("runs").join("sweeps").join(sweep_name)
}
