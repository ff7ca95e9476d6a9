//! Compact run directories on real runs: ABXI + GCA_stack at three seeds and a baseline at
//! three widths (enough for the |cos| correlation and the parameter match), trained on the repository's food-kitchen slice, are compacted
//! (`runs::compact_runs`, `cdsr-lab runs compact`); the analysis of the compact copies (study
//! table and report with the |cos| correlation and the parameter-matched comparison, tensor
//! statistics, per-case |cos|, figures) equals that of the full runs, while an analysis of the
//! raw tensors says that the run is compact.

mod common;

use std::path::{Path, PathBuf};

use cdsr_lab::analysis::cases::case_cos_frame;
use cdsr_lab::analysis::study::{study_frame, StudyReport};
use cdsr_lab::eval::names;
use cdsr_lab::runs::{
    compact_run, compact_runs, foreign::open_run_tensors, load_runs, CompactOutcome, LoadOptions,
    RunError, RunSet,
};
use cdsr_lab::train::{train, TrainOptions};
use polars::prelude::*;

use common::smoke_on_slice as smoke;

/// Trains the six runs into `runs/` (once per test binary: every test reads them).
fn trained() -> &'static Path {
    static RUNS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut configs = Vec::new();
        for seed in [7, 8, 9] {
            let mut gca = smoke();
            gca.train.seed = seed;
            configs.push(gca);
        }
        for (d, ffn) in [(16, 32), (24, 48), (32, 64)] {
            let mut base = smoke();
            base.gca.positions = vec![];
            base.model.d_model = d;
            base.model.ffn_hidden = ffn;
            configs.push(base);
        }
        for cfg in configs {
            let opts = TrainOptions {
                progress: false,
                ..TrainOptions::default()
            };
            train(&cfg, &dir.path().join(cfg.run_id()), opts).unwrap();
        }
        dir
    })
    .path()
}

fn load(root: &Path) -> RunSet {
    let set = load_runs(root, LoadOptions::default()).unwrap();
    assert!(set.report.is_clean(), "{}", set.report);
    set
}

/// Frames equal column by column; floats to 1e-12 (the compact statistics are summed in
/// another order than the tensors').
fn assert_frames_match(full: &DataFrame, compact: &DataFrame, what: &str) {
    assert_eq!(full.shape(), compact.shape(), "{what}");
    for c in full.columns() {
        let name = c.name().as_str();
        let d = compact.column(name).unwrap();
        if let (Ok(a), Ok(b)) = (c.f64(), d.f64()) {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                match (x, y) {
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() < 1e-12, "{what} {name} row {i}: {x} vs {y}")
                    }
                    _ => assert_eq!(x, y, "{what} {name} row {i}"),
                }
            }
        } else {
            assert!(c.equals_missing(d), "{what}: column {name} differs");
        }
    }
}

#[test]
fn the_analysis_of_compact_runs_equals_that_of_the_full_runs() {
    let full_root = trained();
    let out = tempfile::tempdir().unwrap();
    let compact_root = out.path().join("compact");
    let report = compact_runs(full_root, &compact_root).unwrap();
    assert_eq!(report.written.len(), 6, "{report}");
    assert!(report.skipped.is_empty(), "{report}");
    assert!(
        report.compact_bytes * 3 < report.source_bytes,
        "the compact copy is not much smaller: {report}"
    );
    for dir in &report.written {
        assert!(!dir.join("tensors.safetensors").exists());
        assert!(!dir.join("checkpoint").exists());
    }

    let full = load(full_root);
    let compact = load(&compact_root);
    assert_eq!(compact.len(), 6);
    let gca_runs = compact.runs.iter().filter(|r| r.is_compact()).count();
    assert_eq!(gca_runs, 3, "the GCA runs keep capture statistics");

    let (full_stats, r1) = full.tensor_stats_frame().unwrap();
    let (compact_stats, r2) = compact.tensor_stats_frame().unwrap();
    assert!(r1.is_clean() && r2.is_clean(), "{r1}{r2}");
    // Three GCA runs x positions {0, 1} x domains {A, B}.
    assert_eq!(full_stats.height(), 12);
    assert_frames_match(&full_stats, &compact_stats, "tensor statistics");

    let (full_study, _) = study_frame(&full).unwrap();
    let (compact_study, _) = study_frame(&compact).unwrap();
    assert_frames_match(&full_study, &compact_study, "study frame");
    let full_report = StudyReport::of(&full_study, names::NDCG_10).unwrap();
    let compact_report = StudyReport::of(&compact_study, names::NDCG_10).unwrap();
    assert_eq!(full_report.to_string(), compact_report.to_string());
    assert!(!compact_report.param_matches.is_empty(), "{compact_report}");
    assert!(!compact_report.correlations.is_empty(), "{compact_report}");

    let (full_cases, _) = case_cos_frame(&full).unwrap();
    let (compact_cases, _) = case_cos_frame(&compact).unwrap();
    assert!(full_cases.height() > 0);
    assert_frames_match(&full_cases, &compact_cases, "per-case |cos|");

    let full_runs = full.runs_frame().unwrap().drop("path").unwrap();
    let compact_runs_frame = compact.runs_frame().unwrap().drop("path").unwrap();
    assert_frames_match(&full_runs, &compact_runs_frame, "runs frame");
    let epochs = |s: &RunSet| s.epochs_frame().unwrap();
    assert_frames_match(&epochs(&full), &epochs(&compact), "epochs frame");

    // The figures draw from compact runs and skip none for want of tensors.
    let figures = cdsr_lab::plot::figures_of_runs(&compact, &out.path().join("figures")).unwrap();
    assert!(
        figures.skipped_runs.is_empty(),
        "{:?}",
        figures.skipped_runs
    );
    let drawn: Vec<&str> = figures
        .figures
        .iter()
        .filter_map(|f| match f {
            cdsr_lab::plot::FigureOutcome::Written { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for name in ["orthogonality_vs_ndcg", "cos_boxplots", "case_cos_vs_hit"] {
        assert!(drawn.contains(&name), "{name} not drawn: {drawn:?}");
    }

    // An analysis of the raw tensors says the run is compact.
    let gca = compact.runs.iter().find(|r| r.is_compact()).unwrap();
    match open_run_tensors(gca) {
        Err(e @ RunError::Compact { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("compact") && text.contains("capture_stats.parquet"),
                "{text}"
            )
        }
        Err(e) => panic!("expected RunError::Compact, got {e}"),
        Ok(_) => panic!("a compact run opened raw tensors"),
    }
}

#[test]
fn compacting_again_keeps_what_is_there_and_skips_unfinished_runs() {
    let full_root = trained();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("compact");
    // A compaction stopped midway leaves a partial folder; it is replaced, never loaded as a run.
    std::fs::create_dir_all(&dst).unwrap();
    let first: PathBuf = cdsr_lab::runs::find_run_dirs(full_root).unwrap()[0].clone();
    let id = cdsr_lab::runs::read_manifest(&first).unwrap().run_id;
    let partial = dst.join(format!(".{id}.partial"));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("metrics.jsonl"), "{\"epoch\": 1").unwrap();
    match compact_run(&first, &dst).unwrap() {
        CompactOutcome::Written(d) => assert_eq!(d, dst.join(&id)),
        other => panic!("{other:?}"),
    }
    assert!(!partial.exists());

    // A run still training is listed as skipped, with its status.
    let running = out.path().join("src");
    let copy = running.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("run.json")).unwrap()).unwrap();
    manifest["status"] = "running".into();
    manifest["run_id"] = "still-training".into();
    std::fs::write(copy.join("run.json"), manifest.to_string()).unwrap();
    let report = compact_runs(&running, &dst).unwrap();
    assert!(report.written.is_empty());
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(report.skipped[0].1.contains("running"), "{report}");

    // The CLI: the rest of the tree is written, the first run is already there.
    let bin = env!("CARGO_BIN_EXE_cdsr-lab");
    let out_cli = std::process::Command::new(bin)
        .args(["runs", "compact"])
        .arg(full_root)
        .arg(&dst)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out_cli.stdout);
    assert!(out_cli.status.success(), "{text}");
    assert!(
        text.contains("5 runs compacted") && text.contains("1 already there"),
        "{text}"
    );
    let table = std::process::Command::new(bin)
        .arg("runs")
        .arg(&dst)
        .output()
        .unwrap();
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table_text}");
    assert!(table_text.contains("6 runs from"), "{table_text}");

    // A different run under an existing id is refused, naming the folder.
    let mut other = manifest.clone();
    other["status"] = "complete".into();
    other["run_id"] = id.clone().into();
    other["seed"] = 99.into();
    let clash = out.path().join("clash");
    std::fs::create_dir_all(&clash).unwrap();
    std::fs::write(clash.join("run.json"), other.to_string()).unwrap();
    let err = compact_run(&clash, &dst).unwrap_err().to_string();
    assert!(err.contains("another run.json"), "{err}");
}
