//! Where each run of a sweep stands: per-run attempt records and the combined status table.
//!
//! Whoever executes a run (a local worker, a Slurm array task) writes its own attempt record
//! `status/<id>.json` atomically, so concurrent executors never share a file. The table
//! `status.jsonl` combines the records with each run directory's `run.json` (the authority on
//! completion) and is rewritten atomically by the local runner and by `sweep status`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::plan::{Plan, SweepDir};
use crate::runs::{write_atomic, RUN_JSON};

/// The state of one run in a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Never started.
    Pending,
    /// Its executor is alive (or on another host, where liveness cannot be checked).
    Running,
    /// `run.json` says `complete`.
    Complete,
    /// The last attempt ended with an error.
    Failed,
    /// Started, then its executor died without finishing (killed, preempted, machine lost).
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 5] = [
        RunState::Pending,
        RunState::Running,
        RunState::Complete,
        RunState::Failed,
        RunState::Interrupted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Complete => "complete",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// The latest attempt at one run, as its executor recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: String,
    /// `running`, `complete` or `failed` as last written by the executor.
    pub state: RunState,
    /// How many attempts were started (1 for the first).
    pub attempts: u32,
    /// Whether the latest attempt resumed from a checkpoint.
    pub resumed: bool,
    pub host: String,
    pub pid: u32,
    /// `local` or `slurm:<job>_<task>`.
    pub executor: String,
    /// Unix seconds.
    pub started_at: f64,
    pub finished_at: Option<f64>,
    /// Seconds of the latest attempt.
    pub duration_s: Option<f64>,
    /// Seconds over all attempts that finished (complete or failed).
    pub total_duration_s: f64,
    pub error: Option<String>,
}

impl AttemptRecord {
    pub fn load(dir: &SweepDir, id: &str) -> Result<Option<AttemptRecord>> {
        let path = dir.records().join(format!("{id}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("attempt record {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, dir: &SweepDir) -> Result<()> {
        let records = dir.records();
        std::fs::create_dir_all(&records)
            .with_context(|| format!("cannot create {}", records.display()))?;
        let json = serde_json::to_vec(self).expect("records serialise");
        Ok(write_atomic(
            &records.join(format!("{}.json", self.id)),
            &json,
        )?)
    }
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub index: usize,
    pub id: String,
    pub state: RunState,
    pub attempts: u32,
    pub resumed: bool,
    pub executor: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// Finished attempts' seconds, plus the running attempt's elapsed time.
    pub duration_s: Option<f64>,
    pub error: Option<String>,
}

/// The status of every planned run, from the run directories and attempt records.
pub fn collect(plan: &Plan, dir: &SweepDir) -> Result<Vec<RunStatus>> {
    let now = unix_now();
    let host = this_host();
    plan.runs
        .iter()
        .map(|run| {
            let record = AttemptRecord::load(dir, &run.id)?;
            let run_dir = dir.run(&run.id);
            let state = if run_is_complete(&run_dir) {
                RunState::Complete
            } else {
                match &record {
                    None if run_dir.exists() => RunState::Interrupted,
                    None => RunState::Pending,
                    Some(r) => match r.state {
                        RunState::Running if r.host == host && !process_alive(r.pid) => {
                            RunState::Interrupted
                        }
                        // A record says complete but run.json does not: the run dir was
                        // removed or damaged afterwards; it must run again.
                        RunState::Complete => RunState::Interrupted,
                        s => s,
                    },
                }
            };
            let duration_s = record.as_ref().map(|r| match (state, r.state) {
                (RunState::Running, _) => r.total_duration_s + (now - r.started_at).max(0.0),
                _ => r.total_duration_s,
            });
            Ok(RunStatus {
                index: run.index,
                id: run.id.clone(),
                state,
                attempts: record.as_ref().map_or(0, |r| r.attempts),
                resumed: record.as_ref().is_some_and(|r| r.resumed),
                executor: record.as_ref().map(|r| r.executor.clone()),
                started_at: record.as_ref().map(|r| r.started_at),
                finished_at: record.as_ref().and_then(|r| r.finished_at),
                duration_s,
                error: record.and_then(|r| r.error),
            })
        })
        .collect()
}

/// The runs of the folder's saved `plan.json` (the plan its last `sweep run` or `sweep slurm`
/// wrote) that `plan` does not have: non-empty when the sweep file changed since (a changed
/// setting changes a run's id), so that a status of the file's plan would not show what the
/// folder's runner is working on. Empty when there is no saved plan.
pub fn runs_only_in_saved_plan(plan: &Plan, dir: &SweepDir) -> Result<Vec<String>> {
    if !dir.plan().is_file() {
        return Ok(Vec::new());
    }
    let saved = Plan::load(&dir.plan())?;
    Ok(saved
        .runs
        .into_iter()
        .filter(|s| !plan.runs.iter().any(|r| r.id == s.id))
        .map(|s| s.id)
        .collect())
}

/// Rewrites `status.jsonl` (one [`RunStatus`] per line) atomically.
pub fn write_table(dir: &SweepDir, rows: &[RunStatus]) -> Result<()> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row).expect("rows serialise");
        out.push(b'\n');
    }
    std::fs::create_dir_all(&dir.root)
        .with_context(|| format!("cannot create {}", dir.root.display()))?;
    Ok(write_atomic(&dir.status_table(), &out)?)
}

/// Counts and durations over a status table.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub counts: BTreeMap<RunState, usize>,
    pub total: usize,
    /// Over complete runs: (count, mean, min, max) seconds.
    pub complete_durations: Option<(usize, f64, f64, f64)>,
    /// Seconds spent so far over all runs (finished attempts and running ones).
    pub compute_s: f64,
}

pub fn summarise(rows: &[RunStatus]) -> Summary {
    let mut counts = BTreeMap::new();
    for s in RunState::ALL {
        counts.insert(s, 0);
    }
    for r in rows {
        *counts.entry(r.state).or_insert(0) += 1;
    }
    let done: Vec<f64> = rows
        .iter()
        .filter(|r| r.state == RunState::Complete)
        .filter_map(|r| r.duration_s)
        .collect();
    let complete_durations = (!done.is_empty()).then(|| {
        let mean = done.iter().sum::<f64>() / done.len() as f64;
        let min = done.iter().copied().fold(f64::INFINITY, f64::min);
        let max = done.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (done.len(), mean, min, max)
    });
    Summary {
        counts,
        total: rows.len(),
        complete_durations,
        // + 0.0: an empty f64 sum is -0.0, printed as such.
        compute_s: rows.iter().filter_map(|r| r.duration_s).sum::<f64>() + 0.0,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        writeln!(f, "{} runs: {}", self.total, parts.join(", "))?;
        if let Some((n, mean, min, max)) = self.complete_durations {
            writeln!(
                f,
                "complete runs: {n}, seconds per run mean {mean:.1} (min {min:.1}, max {max:.1})"
            )?;
        }
        write!(f, "compute so far: {:.1} s", self.compute_s)
    }
}

/// Whether `run_dir/run.json` exists and says `"status": "complete"`.
pub fn run_is_complete(run_dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Head {
        status: crate::runs::RunStatus,
    }
    std::fs::read_to_string(run_dir.join(RUN_JSON))
        .ok()
        .and_then(|t| serde_json::from_str::<Head>(&t).ok())
        .is_some_and(|h| h.status == crate::runs::RunStatus::Complete)
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's host name (compared with records to decide whether a pid can be checked).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Whether a process with this pid exists (Linux `/proc`; elsewhere assumed alive).
pub fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    // A zombie has exited: its /proc entry lingers until the parent reaps it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::plan::PlannedRun;

    fn plan(ids: &[&str]) -> Plan {
        let runs = ids
            .iter()
            .enumerate()
            .map(|(index, id)| PlannedRun {
                index,
                id: id.to_string(),
                seed: None,
                settings: BTreeMap::new(),
                config: toml::Table::new(),
            })
            .collect();
        Plan::new("t".into(), "t.toml".into(), runs, vec![])
    }

    fn record(id: &str, state: RunState, pid: u32, host: &str) -> AttemptRecord {
        AttemptRecord {
            id: id.into(),
            state,
            attempts: 2,
            resumed: true,
            host: host.into(),
            pid,
            executor: "local".into(),
            started_at: 100.0,
            finished_at: (state != RunState::Running).then_some(130.0),
            duration_s: Some(30.0),
            total_duration_s: 50.0,
            error: (state == RunState::Failed).then(|| "boom".into()),
        }
    }

    #[test]
    fn runs_only_in_the_saved_plan_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SweepDir::new(tmp.path());
        let now = plan(&["a-1", "b-2"]);
        assert!(runs_only_in_saved_plan(&now, &dir).unwrap().is_empty());
        plan(&["a-1", "b-0"]).save(&dir.plan()).unwrap();
        assert_eq!(runs_only_in_saved_plan(&now, &dir).unwrap(), ["b-0"]);
        now.save(&dir.plan()).unwrap();
        assert!(runs_only_in_saved_plan(&now, &dir).unwrap().is_empty());
    }

    #[test]
    fn states_come_from_run_json_and_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SweepDir::new(tmp.path());
        let p = plan(&["done", "fail", "dead", "alive", "far", "new", "partial"]);
        std::fs::create_dir_all(dir.run("done")).unwrap();
        std::fs::write(dir.run("done").join("run.json"), r#"{"status":"complete"}"#).unwrap();
        record("done", RunState::Complete, 1, "h")
            .save(&dir)
            .unwrap();
        record("fail", RunState::Failed, 1, "h").save(&dir).unwrap();
        // pid u32::MAX never exists; our own pid is alive.
        record("dead", RunState::Running, u32::MAX, &this_host())
            .save(&dir)
            .unwrap();
        record("alive", RunState::Running, std::process::id(), &this_host())
            .save(&dir)
            .unwrap();
        record("far", RunState::Running, u32::MAX, "another-host")
            .save(&dir)
            .unwrap();
        std::fs::create_dir_all(dir.run("partial")).unwrap();
        let rows = collect(&p, &dir).unwrap();
        let states: Vec<RunState> = rows.iter().map(|r| r.state).collect();
        use RunState::*;
        assert_eq!(
            states,
            [
                Complete,
                Failed,
                Interrupted,
                Running,
                Running,
                Pending,
                Interrupted
            ]
        );
        assert_eq!(rows[0].duration_s, Some(50.0));
        assert_eq!(rows[1].error.as_deref(), Some("boom"));
        assert!(rows[3].duration_s.unwrap() > 50.0 + 1e6); // started at t=100 s, still running
        let s = summarise(&rows);
        assert_eq!(s.counts[&Complete], 1);
        assert_eq!(s.counts[&Interrupted], 2);
        assert_eq!(s.counts[&Pending], 1);
        assert_eq!(s.complete_durations, Some((1, 50.0, 50.0, 50.0)));
        write_table(&dir, &rows).unwrap();
        let text = std::fs::read_to_string(dir.status_table()).unwrap();
        assert_eq!(text.lines().count(), 7);
        let back: RunStatus = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(back, rows[1]);
    }
}
