//! Running a sweep on this machine: a bounded pool of workers, each executing one run at a
//! time as a child process (`cdsr-lab sweep exec`).
//!
//! Why child processes rather than threads calling the trainer in-process: a run that panics,
//! aborts or runs out of memory takes only itself down; each run gets its own thread pool,
//! sized by `threads_per_job` (RAYON_NUM_THREADS), instead of all runs fighting over one global
//! pool; and a run can be killed on its own. A child watches its stdin pipe and exits when the
//! runner dies, so no orphan keeps writing into a run directory that a restarted sweep resumes.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use super::plan::{Plan, SweepDir};
use super::status::{self, run_is_complete, unix_now, AttemptRecord, RunState};

/// How to run a sweep locally.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Runs at once.
    pub jobs: usize,
    /// The `cdsr-lab` executable to start for each run (normally this very binary).
    pub exe: PathBuf,
    /// Compute threads per run (RAYON_NUM_THREADS of each child).
    pub threads_per_job: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl LocalOptions {
    /// `jobs` runs at once with this executable, sharing the machine's cores between them.
    pub fn new(jobs: usize) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(LocalOptions {
            jobs: jobs.max(1),
            exe: std::env::current_exe().context("cannot locate the cdsr-lab executable")?,
            threads_per_job: (cores / jobs.max(1)).max(1),
            progress: true,
        })
    }
}

/// What a local sweep did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalReport {
    /// Runs already complete before this invocation.
    pub skipped: usize,
    /// Runs that completed in this invocation (fresh or resumed).
    pub completed: Vec<String>,
    /// Runs that failed: (id, reason).
    pub failed: Vec<(String, String)>,
}

enum Event {
    Started(String),
    Finished(String, std::result::Result<(), String>),
}

/// Runs every incomplete run of `plan` into `dir` with at most `opts.jobs` at a time.
///
/// Holds the folder's lock ([`SweepDir::lock`]) throughout: a second `sweep run` on the same
/// folder stops at once, naming the process at work. Writes `plan.json`, keeps `status.jsonl` current after every start and finish, and sends
/// each run's output to `logs/<id>.log`. Complete runs are skipped; interrupted ones resume.
pub fn run_local(plan: &Plan, dir: &SweepDir, opts: &LocalOptions) -> Result<LocalReport> {
    for d in [dir.root.clone(), dir.logs(), dir.runs()] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // A second `sweep run` on this folder would train the same runs at the same time.
    let _lock =
        super::lock::Lock::acquire(&dir.lock(), &format!("sweep folder {}", dir.root.display()))?;
    plan.save(&dir.plan())?;
    let todo: VecDeque<usize> = plan
        .runs
        .iter()
        .filter(|r| !run_is_complete(&dir.run(&r.id)))
        .map(|r| r.index)
        .collect();
    let mut report = LocalReport {
        skipped: plan.runs.len() - todo.len(),
        ..Default::default()
    };
    status::write_table(dir, &status::collect(plan, dir)?)?;
    if todo.is_empty() {
        return Ok(report);
    }
    let bar = if opts.progress {
        indicatif::ProgressBar::new(todo.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {elapsed}  {msg}")
            .expect("valid template"),
    );
    let queue = Mutex::new(todo);
    let (tx, rx) = mpsc::channel::<Event>();
    let workers = opts.jobs.min(plan.runs.len());
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || loop {
                let Some(index) = queue.lock().expect("queue lock").pop_front() else {
                    break;
                };
                let id = plan.runs[index].id.clone();
                let _ = tx.send(Event::Started(id.clone()));
                let result = run_child(dir, &id, opts);
                let _ = tx.send(Event::Finished(id, result));
            });
        }
        drop(tx);
        for event in rx {
            match event {
                Event::Started(id) => bar.set_message(format!("started {id}")),
                Event::Finished(id, Ok(())) => {
                    bar.inc(1);
                    bar.set_message(format!("done {id}"));
                    report.completed.push(id);
                }
                Event::Finished(id, Err(reason)) => {
                    bar.inc(1);
                    bar.println(format!("run {id} failed: {reason}"));
                    report.failed.push((id, reason));
                }
            }
            status::write_table(dir, &status::collect(plan, dir)?)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(report)
}

/// Starts `cdsr-lab sweep exec` for one run and waits for it.
fn run_child(dir: &SweepDir, id: &str, opts: &LocalOptions) -> std::result::Result<(), String> {
    let log_path = dir.logs().join(format!("{id}.log"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(&opts.exe)
        .args([
            "sweep",
            "exec",
            "--watch-stdin",
            "--executor",
            "local",
            "--plan",
        ])
        .arg(dir.plan())
        .args(["--run", id])
        .env("RAYON_NUM_THREADS", opts.threads_per_job.to_string())
        .stdin(Stdio::piped()) // held open until the child exits; see exit_when_stdin_closes
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.exe.display()))?;
    // `Child::wait` closes a stdin it still owns; keep ours open until the child has exited.
    let keep_stdin_open = child.stdin.take();
    let status = child.wait().map_err(|e| e.to_string());
    drop(keep_stdin_open);
    let status = status?;
    if status.success() {
        return Ok(());
    }
    let reason = format!(
        "{status} after {:.1} s; see {}",
        started.elapsed().as_secs_f64(),
        log_path.display()
    );
    // A child killed by a signal could not record its own failure.
    if let Ok(Some(mut r)) = AttemptRecord::load(dir, id) {
        if r.state == RunState::Running {
            let now = unix_now();
            r.state = RunState::Failed;
            r.finished_at = Some(now);
            r.duration_s = Some(now - r.started_at);
            r.total_duration_s += now - r.started_at;
            r.error = Some(reason.clone());
            let _ = r.save(dir);
        }
    }
    Err(reason)
}
