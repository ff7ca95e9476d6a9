//! A local sweep killed mid-way (SIGKILL to the runner) and started again finishes with the
//! same results as a sweep that was never interrupted.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{cdsr_lab, run_json_status, smoke_sweep};

fn sweep_run(file: &Path, out: &Path) -> std::process::Command {
    let mut c = cdsr_lab();
    c.args(["sweep", "run"])
        .arg(file)
        .args(["--jobs", "2", "--out"])
        .arg(out)
        .current_dir(common::project_root());
    c
}

/// run.json's test metrics and every non-timing metrics.jsonl value, for comparison.
fn results(run_dir: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    let rows = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("wall_time_s");
            v
        })
        .collect();
    (
        serde_json::json!({ "test": manifest["test"], "best_epoch": manifest["best_epoch"],
                            "epochs_run": manifest["epochs_run"], "params": manifest["params"] }),
        rows,
    )
}

#[test]
fn killed_sweep_finishes_with_the_results_of_an_uninterrupted_one() {
    let work = tempfile::tempdir().unwrap();
    let (file, ids) = smoke_sweep(work.path(), &[1, 2, 3]);
    assert_eq!(ids.len(), 3);

    let straight = work.path().join("straight");
    let o = sweep_run(&file, &straight).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let broken = work.path().join("broken");
    let mut runner = sweep_run(&file, &broken)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some run has a checkpoint file (not just its folder), i.e. is part-way
    // through training with something to resume from.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ids.iter().any(|id| {
        broken
            .join("runs")
            .join(id)
            .join("checkpoint/state.safetensors")
            .is_file()
    }) {
        assert!(Instant::now() < deadline, "no run wrote a checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    runner.kill().unwrap(); // SIGKILL: the runner gets no chance to clean up
    runner.wait().unwrap();
    let unfinished = ids
        .iter()
        .filter(|id| run_json_status(&broken.join("runs").join(id)).as_deref() != Some("complete"))
        .count();
    assert!(unfinished > 0, "every run finished before the kill");
    // The workers notice their runner is gone (stdin closed) and stop.
    let status = cdsr_lab()
        .args(["sweep", "status"])
        .arg(&file)
        .arg("--out")
        .arg(&broken)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.starts_with("3 runs: "), "{text}");

    let o = sweep_run(&file, &broken).output().unwrap();
    let logs: String = ids
        .iter()
        .map(|id| {
            let log = broken.join("logs").join(format!("{id}.log"));
            format!(
                "--- {id}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        o.status.success(),
        "{}\n{logs}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!(
            "{} already complete, {unfinished} completed now, 0 failed",
            3 - unfinished
        )),
        "{said}"
    );

    let mut resumed = 0;
    for id in &ids {
        let (a, b) = (straight.join("runs").join(id), broken.join("runs").join(id));
        assert_eq!(run_json_status(&b).as_deref(), Some("complete"), "{id}");
        assert_eq!(
            results(&a),
            results(&b),
            "run {id} differs after the interruption"
        );
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(broken.join(format!("status/{id}.json"))).unwrap(),
        )
        .unwrap();
        if record["resumed"] == true {
            resumed += 1;
            assert_eq!(record["attempts"], 2, "{record}");
        }
    }
    assert!(resumed >= 1, "no run resumed from its checkpoint");

    let status = cdsr_lab()
        .args(["sweep", "status"])
        .arg(&file)
        .arg("--out")
        .arg(&broken)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with("3 runs: 0 pending, 0 running, 3 complete, 0 failed, 0 interrupted"),
        "{text}"
    );
    let table = std::fs::read_to_string(broken.join("status.jsonl")).unwrap();
    assert_eq!(table.lines().count(), 3);
    // `--runs` lists each run with where it stands by its stopping rule.
    let listed = cdsr_lab()
        .args(["sweep", "status", "--runs"])
        .arg(&file)
        .arg("--out")
        .arg(&broken)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    for id in &ids {
        let progress = cdsr_lab::runs::training_progress(&broken.join("runs").join(id)).unwrap();
        let line = text.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(line.contains("complete"), "{line}");
        assert!(line.ends_with(&progress.to_string()), "{line}");
        assert!(progress.best.is_some(), "{line}");
    }
}
