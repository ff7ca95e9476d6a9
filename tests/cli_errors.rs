//! What a user sees when a command is given bad input: one clear message (no backtrace, even
//! with `RUST_BACKTRACE` set), warnings for a diagnostic given mixed-up runs, and a sweep
//! folder that a second `sweep run` does not enter.

mod common;

use cdsr_lab::sweep::lock::Lock;
use cdsr_lab::sweep::plan::SweepDir;

#[test]
fn a_user_error_is_one_line_even_with_rust_backtrace_set() {
    let out = common::cdsr_lab()
        .args(["data", "stats", "/no/such/dataset"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "error: /no/such/dataset: no such file or directory\n");
}

/// The committed d 256 run as both runs of the diagnostic, and as the single-domain run
/// although it is an `abxi` model: both mistakes are said before anything is read.
#[test]
fn diagnose_warns_about_the_same_run_twice_and_a_cross_domain_single() {
    let run = common::project_root().join("results/abxi-cpu/2026-11-23-d256");
    let warnings = cdsr_lab::analysis::attention::pair_warnings(&run, &run);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with(
        "the single-domain and the cross-domain run are the same run (`abxi-s1-778b1e52`)"
    ));
    assert!(warnings[1].contains("is a `abxi` model, which reads both domains"));
    let other = common::project_root().join("results/abxi-cpu/2026-11-24-d256-seed2");
    assert_eq!(
        cdsr_lab::analysis::attention::pair_warnings(&run, &other).len(),
        1
    );
    let out = common::cdsr_lab()
        .arg("diagnose")
        .arg("--single")
        .arg(&run)
        .arg("--cross")
        .arg(&run)
        .arg("--print-only")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("warning: ").count(), 2, "{err}");
}

/// While one process holds a sweep folder, `sweep run` on it stops at once, naming the holder.
#[test]
fn a_second_sweep_run_on_one_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = common::smoke_sweep(tmp.path(), &[1]);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let held = Lock::acquire(&SweepDir::new(&out_dir).lock(), "test").unwrap();
    let out = common::cdsr_lab()
        .args(["sweep", "run"])
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "sweep folder {} is in use by another process (pid {}",
            out_dir.display(),
            std::process::id()
        )),
        "{err}"
    );
    assert!(!out_dir.join("runs").join("x").exists());
    assert!(!out_dir.join("plan.json").exists(), "{err}");
    drop(held);
}
