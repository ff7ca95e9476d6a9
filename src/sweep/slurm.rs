//! Running a sweep on a Slurm cluster: one job array, one array task per planned run.
//!
//! `sweep slurm` saves the plan and writes an sbatch script whose task `i` runs
//! `cdsr-lab sweep exec --plan plan.json --run i`; the script asks for `--requeue`, and a
//! requeued (preempted, node-failed) task resumes its run from the checkpoint, because
//! `sweep exec` always continues a run that has one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plan::{Plan, SweepDir};
use super::status::run_is_complete;
use crate::runs::write_atomic;

/// The sbatch settings of the job array.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmOptions {
    /// The `cdsr-lab` executable the tasks run (must be reachable from the compute nodes).
    pub exe: PathBuf,
    /// Working directory of every task (relative paths in configs resolve against it).
    pub workdir: PathBuf,
    pub partition: Option<String>,
    /// Wall-clock limit per task, in Slurm's syntax (`2:00:00`).
    pub time: Option<String>,
    pub cpus_per_task: usize,
    /// Memory per task, in Slurm's syntax (`8G`).
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines, e.g. `--gres=gpu:1`, `--account=x`.
    pub extra: Vec<String>,
    /// Leave runs that are already complete out of the array.
    pub only_incomplete: bool,
}

impl SlurmOptions {
    /// Defaults: this executable, the current directory, 1 CPU per task, all runs.
    pub fn new() -> Result<Self> {
        Ok(SlurmOptions {
            exe: std::env::current_exe().context("cannot locate the cdsr-lab executable")?,
            workdir: std::env::current_dir().context("cannot read the current directory")?,
            partition: None,
            time: None,
            cpus_per_task: 1,
            mem: None,
            max_parallel: None,
            extra: Vec::new(),
            only_incomplete: true,
        })
    }
}

/// The script `write_slurm` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmScript {
    pub path: PathBuf,
    /// The `--array` index list, e.g. `0-3,7`.
    pub array: String,
    /// Number of array tasks.
    pub tasks: usize,
}

/// Saves `plan.json` into `dir` and writes `slurm/sweep.sbatch`; returns `None` when every run
/// is already complete (nothing to submit).
pub fn write_slurm(
    plan: &Plan,
    dir: &SweepDir,
    opts: &SlurmOptions,
) -> Result<Option<SlurmScript>> {
    std::fs::create_dir_all(dir.slurm())
        .with_context(|| format!("cannot create {}", dir.slurm().display()))?;
    std::fs::create_dir_all(dir.runs())
        .with_context(|| format!("cannot create {}", dir.runs().display()))?;
    let root = dir
        .root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.root.display()))?;
    let dir = SweepDir::new(root);
    plan.save(&dir.plan())?;
    let indices: Vec<usize> = plan
        .runs
        .iter()
        .filter(|r| !(opts.only_incomplete && run_is_complete(&dir.run(&r.id))))
        .map(|r| r.index)
        .collect();
    if indices.is_empty() {
        return Ok(None);
    }
    let array = array_spec(&indices);
    let text = render_script(plan, &dir, opts, &array, indices.len());
    let path = dir.slurm().join("sweep.sbatch");
    write_atomic(&path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(Some(SlurmScript {
        path,
        array,
        tasks: indices.len(),
    }))
}

/// The sbatch script text for the given array index list.
pub fn render_script(
    plan: &Plan,
    dir: &SweepDir,
    opts: &SlurmOptions,
    array: &str,
    tasks: usize,
) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# Written by `cdsr-lab sweep slurm` for sweep `{}` ({}): {tasks} of {} runs.\n",
        plan.sweep,
        plan.origin,
        plan.runs.len()
    ));
    s.push_str(
        "# Array task i runs plan run i; a requeued task resumes its run from the checkpoint.\n",
    );
    let mut sb = |line: String| s.push_str(&format!("#SBATCH {line}\n"));
    sb(format!("--job-name=cdsr-{}", plan.sweep));
    sb(match opts.max_parallel {
        Some(n) => format!("--array={array}%{n}"),
        None => format!("--array={array}"),
    });
    sb("--requeue".into());
    sb("--open-mode=append".into());
    sb(format!(
        "--output={}",
        dir.slurm().join("%A_%a.out").display()
    ));
    sb(format!("--chdir={}", opts.workdir.display()));
    sb(format!("--cpus-per-task={}", opts.cpus_per_task.max(1)));
    if let Some(p) = &opts.partition {
        sb(format!("--partition={p}"));
    }
    if let Some(t) = &opts.time {
        sb(format!("--time={t}"));
    }
    if let Some(m) = &opts.mem {
        sb(format!("--mem={m}"));
    }
    for e in &opts.extra {
        sb(e.clone());
    }
    s.push_str("set -euo pipefail\n");
    s.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
    s.push_str(&format!(
        "exec {} sweep exec --plan {} --run \"$SLURM_ARRAY_TASK_ID\" \\\n    --executor \"slurm:${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"\n",
        shell_quote(&opts.exe),
        shell_quote(&dir.plan()),
    ));
    s
}

/// Compresses sorted indices into Slurm's array syntax: `[0,1,2,5,7,8]` -> `0-2,5,7-8`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs() {
        assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(array_spec(&[3]), "3");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn script_runs_one_plan_entry_per_task_and_requeues() {
        let plan = Plan::new("demo".into(), "sweeps/demo.toml".into(), vec![], vec![]);
        let opts = SlurmOptions {
            exe: "/opt/it's/cdsr-lab".into(),
            workdir: "/work".into(),
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: 4,
            mem: None,
            max_parallel: Some(8),
            extra: vec!["--gres=gpu:1".into()],
            only_incomplete: true,
        };
        let text = render_script(&plan, &SweepDir::new("/out"), &opts, "0-2,5", 4);
        assert_eq!(
            text,
            r#"#!/bin/bash
# Written by `cdsr-lab sweep slurm` for sweep `demo` (sweeps/demo.toml): 4 of 0 runs.
# Array task i runs plan run i; a requeued task resumes its run from the checkpoint.
#SBATCH --job-name=cdsr-demo
#SBATCH --array=0-2,5%8
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=/out/slurm/%A_%a.out
#SBATCH --chdir=/work
#SBATCH --cpus-per-task=4
#SBATCH --partition=gpu
#SBATCH --time=1:00:00
#SBATCH --gres=gpu:1
set -euo pipefail
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
exec '/opt/it'\''s/cdsr-lab' sweep exec --plan '/out/plan.json' --run "$SLURM_ARRAY_TASK_ID" \
    --executor "slurm:${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
"#
        );
    }
}
