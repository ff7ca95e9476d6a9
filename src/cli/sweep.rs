//! `cdsr-lab sweep ...` subcommands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use cdsr_lab::sweep::engine::{check_run_config, train_run_config};
use cdsr_lab::sweep::exec::{exec_run, exit_when_stdin_closes, ExecOutcome};
use cdsr_lab::sweep::local::{run_local, LocalOptions};
use cdsr_lab::sweep::plan::{default_out_dir, Plan, SweepDir};
use cdsr_lab::sweep::slurm::{write_slurm, SlurmOptions};
use cdsr_lab::sweep::spec::SweepSpec;
use cdsr_lab::sweep::status;

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// List the runs of a sweep file with their ids.
    Plan {
        /// Sweep file (TOML).
        file: PathBuf,
    },
    /// Run a sweep on this machine: skips complete runs, resumes interrupted ones.
    Run {
        file: PathBuf,
        /// Runs at once.
        #[arg(long, short, default_value_t = 1)]
        jobs: usize,
        #[command(flatten)]
        out: OutArg,
        /// Compute threads per run (default: cores / jobs).
        #[arg(long)]
        threads_per_job: Option<usize>,
    },
    /// Summarise a sweep: pending, running, complete, failed, interrupted; durations.
    Status {
        file: PathBuf,
        #[command(flatten)]
        out: OutArg,
        /// Also list every run, a started one with its last epoch, its best epoch by validation
        /// MRR_A + MRR_B and the epochs since (against the patience of its stopping rule).
        #[arg(long)]
        runs: bool,
    },
    /// Write a Slurm job-array script (one array task per run) and the plan it reads.
    Slurm {
        file: PathBuf,
        #[command(flatten)]
        out: OutArg,
        #[arg(long)]
        partition: Option<String>,
        /// Wall-clock limit per task (e.g. 2:00:00).
        #[arg(long)]
        time: Option<String>,
        #[arg(long, default_value_t = 1)]
        cpus_per_task: usize,
        /// Memory per task (e.g. 8G).
        #[arg(long)]
        mem: Option<String>,
        /// At most this many tasks at once.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Extra sbatch option, repeatable (e.g. --sbatch=--gres=gpu:1).
        #[arg(long = "sbatch")]
        extra: Vec<String>,
        /// Include runs that are already complete.
        #[arg(long)]
        all: bool,
    },
    /// Execute one run of a saved plan (what workers and Slurm tasks call).
    #[command(hide = true)]
    Exec {
        /// The sweep's plan.json.
        #[arg(long)]
        plan: PathBuf,
        /// Run id or index in the plan.
        #[arg(long)]
        run: String,
        /// Recorded as who ran it.
        #[arg(long, default_value = "local")]
        executor: String,
        /// Exit when stdin closes (the local runner died).
        #[arg(long)]
        watch_stdin: bool,
    },
}

#[derive(Args, Debug)]
pub struct OutArg {
    /// Sweep output folder (default: runs/sweeps/<sweep name>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn load(file: &Path, out: &OutArg) -> Result<(Plan, SweepDir)> {
    let spec = SweepSpec::from_path(file)?;
    let plan = spec.resolve(check_run_config)?;
    let root = out
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&spec.name));
    Ok((plan, SweepDir::new(root)))
}

pub fn run(cmd: SweepCommand) -> Result<()> {
    match cmd {
        SweepCommand::Plan { file } => {
            let spec = SweepSpec::from_path(&file)?;
            let plan = spec.resolve(check_run_config)?;
            for r in &plan.runs {
                let settings: Vec<String> =
                    r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{:>4}  {}  {}", r.index, r.id, settings.join(" "));
            }
            println!("{} runs in sweep `{}`", plan.runs.len(), plan.sweep);
            for (slug, kept) in &plan.duplicates {
                println!("dropped {slug}: same configuration as {kept}");
            }
            Ok(())
        }
        SweepCommand::Run {
            file,
            jobs,
            out,
            threads_per_job,
        } => {
            let (plan, dir) = load(&file, &out)?;
            let mut opts = LocalOptions::new(jobs)?;
            if let Some(t) = threads_per_job {
                opts.threads_per_job = t.max(1);
            }
            let report = run_local(&plan, &dir, &opts)?;
            println!(
                "sweep `{}` in {}: {} already complete, {} completed now, {} failed",
                plan.sweep,
                dir.root.display(),
                report.skipped,
                report.completed.len(),
                report.failed.len()
            );
            if !report.failed.is_empty() {
                for (id, why) in &report.failed {
                    eprintln!("failed: {id}: {why}");
                }
                bail!("{} runs failed", report.failed.len());
            }
            Ok(())
        }
        SweepCommand::Status { file, out, runs } => {
            let (plan, dir) = load(&file, &out)?;
            let rows = status::collect(&plan, &dir)?;
            let only_saved = status::runs_only_in_saved_plan(&plan, &dir)?;
            if !only_saved.is_empty() {
                // The folder's runner works from its saved plan: keep its table.
                eprintln!(
                    "note: {} changed since {} was written: {} of the saved plan's runs are not \
                     in the file's plan ({}); this is the status of the file's plan, and \
                     status.jsonl is left as it is",
                    file.display(),
                    dir.plan().display(),
                    only_saved.len(),
                    only_saved.join(", ")
                );
            } else if dir.root.exists() {
                status::write_table(&dir, &rows)?;
            }
            if runs {
                for r in &rows {
                    // Where a started run stands by its stopping rule; unreadable: left out.
                    let progress = (r.state != status::RunState::Pending)
                        .then(|| cdsr_lab::runs::training_progress(&dir.run(&r.id)).ok())
                        .flatten()
                        .map_or(String::new(), |p| format!("  {p}"));
                    println!(
                        "{:>4}  {:<11}  {:>8}  {}{}{}",
                        r.index,
                        r.state.as_str(),
                        r.duration_s.map_or("-".into(), |d| format!("{d:.1}s")),
                        r.id,
                        progress,
                        r.error
                            .as_ref()
                            .map_or(String::new(), |e| format!("  ({e})"))
                    );
                }
            }
            println!("{}", status::summarise(&rows));
            Ok(())
        }
        SweepCommand::Slurm {
            file,
            out,
            partition,
            time,
            cpus_per_task,
            mem,
            max_parallel,
            extra,
            all,
        } => {
            let (plan, dir) = load(&file, &out)?;
            let opts = SlurmOptions {
                partition,
                time,
                cpus_per_task,
                mem,
                max_parallel,
                extra,
                only_incomplete: !all,
                ..SlurmOptions::new()?
            };
            match write_slurm(&plan, &dir, &opts)? {
                Some(script) => println!(
                    "wrote {} ({} tasks, --array={}); submit with: sbatch {}",
                    script.path.display(),
                    script.tasks,
                    script.array,
                    script.path.display()
                ),
                None => println!(
                    "every run of sweep `{}` is complete; nothing to submit",
                    plan.sweep
                ),
            }
            Ok(())
        }
        SweepCommand::Exec {
            plan,
            run,
            executor,
            watch_stdin,
        } => {
            if watch_stdin {
                exit_when_stdin_closes();
            }
            let root = plan.parent().map(PathBuf::from).unwrap_or_default();
            let plan = Plan::load(&plan)?;
            let entry = plan.find(&run)?;
            let dir = SweepDir::new(root);
            let outcome = exec_run(&dir, entry, &executor, train_run_config)?;
            let what = match outcome {
                ExecOutcome::AlreadyComplete => "already complete",
                ExecOutcome::Trained => "complete",
                ExecOutcome::Resumed => "complete (resumed)",
            };
            println!("run {}: {what}", entry.id);
            Ok(())
        }
    }
}
