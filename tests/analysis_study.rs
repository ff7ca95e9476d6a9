//! The study table and report over real runs: six short runs on the repository's food-kitchen
//! slice (ABXI + GCA_stack with two seeds, ABXI baselines at widths 16, 24 and 32, SASRec with a
//! fixed-weight a_cd objective) are trained, loaded and tabulated.

use std::path::Path;

use cdsr_lab::analysis::study::{study_frame, StudyReport};
use cdsr_lab::model::ModelKind;
use cdsr_lab::runs::{load_runs, LoadOptions};
use cdsr_lab::train::config::AutoCdsrConfig;
use cdsr_lab::train::pareto::AcdWeighting;
use cdsr_lab::train::{train, RunConfig, TrainOptions};

use common::smoke_on_slice as smoke;

fn run(cfg: &RunConfig, runs: &Path) {
    let opts = TrainOptions {
        resume: false,
        progress: false,
        stop_after_epochs: None,
    };
    train(cfg, &runs.join(cfg.run_id()), opts).unwrap();
}

#[test]
fn study_table_and_report_of_gca_baseline_and_autocdsr_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path();
    let mut gca = smoke();
    gca.name = Some("gca".into());
    run(&gca, runs);
    gca.train.seed = 8;
    run(&gca, runs);
    let mut base = smoke();
    base.name = Some("base".into());
    base.gca.positions.clear();
    for d in [16, 24, 32] {
        base.model.d_model = d;
        run(&base, runs);
    }
    // The width-16 baseline also with GCA's second seed, so the two pair up by seed.
    base.model.d_model = 16;
    base.train.seed = 8;
    run(&base, runs);
    let mut auto = smoke();
    auto.name = Some("auto".into());
    auto.model.kind = ModelKind::Sasrec;
    auto.gca.positions.clear();
    auto.autocdsr = Some(AutoCdsrConfig {
        weighting: AcdWeighting::Fixed { weight: 0.5 },
        ..AutoCdsrConfig::default()
    });
    run(&auto, runs);

    let set = load_runs(runs, LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 7);
    let (frame, report) = study_frame(&set).unwrap();
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(frame.height(), 14, "one row per run and domain");
    let col = |c: &str| -> Vec<Option<String>> {
        frame
            .column(c)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    };
    let (ids, settings, objectives, gates) =
        (col("run_id"), col("setting"), col("objective"), col("gate"));
    let a_cd = frame.column("a_cd").unwrap().f64().unwrap().to_vec();
    let wall = frame.column("wall_time_s").unwrap().f64().unwrap().to_vec();
    for i in 0..frame.height() {
        let id = ids[i].as_deref().unwrap();
        let (setting, objective, gate) = match id.split('-').next().unwrap() {
            "gca" => ("+GCA_stack sigmoid LN", "rec", Some("sigmoid")),
            "base" => ("baseline", "rec", None),
            "auto" => ("AutoCDSR fixed", "autocdsr-fixed", None),
            other => panic!("unexpected run {other}"),
        };
        assert_eq!(settings[i].as_deref(), Some(setting), "{id}");
        assert_eq!(objectives[i].as_deref(), Some(objective), "{id}");
        assert_eq!(gates[i].as_deref(), gate, "{id}");
        // Every run logs the merged stream's share on its test cases, at its best epoch.
        let a = a_cd[i].unwrap();
        assert!(a > 0.0 && a < 1.0, "{id}: a_cd {a}");
        assert!(wall[i].unwrap() > 0.0);
    }

    let r = StudyReport::of(&frame, "ndcg@10").unwrap();
    let stack: Vec<_> = r
        .variants
        .iter()
        .filter(|v| v.variant == "+GCA_stack sigmoid LN")
        .collect();
    assert_eq!(stack.len(), 2, "one cell per domain");
    assert!(stack
        .iter()
        .all(|v| v.n == 2 && v.sd.is_some() && v.a_cd.is_some()));
    // GCA runs are matched against the plain baseline only; AutoCDSR runs take no part.
    assert!(!r.param_matches.is_empty(), "{:?}", r.notes);
    for (model, _, matches) in &r.param_matches {
        assert_eq!(model, "abxi");
        assert_eq!(matches.len(), 2);
        assert!(matches
            .iter()
            .all(|m| m.nearest_baseline.run_id.starts_with("base-")));
    }
    // One summary line per (model, domain, setting) of GCA runs.
    assert_eq!(r.param_summary.len(), 2);
    assert!(r
        .param_summary
        .iter()
        .all(|p| p.setting == "+GCA_stack sigmoid LN" && p.n == 2));
    // GCA_stack against the width-16 baseline, paired by the two seeds, per domain; the other
    // baselines' widths and the SASRec AutoCDSR run have nothing to pair with.
    assert_eq!(
        r.baseline_comparisons.len(),
        2,
        "{:?}",
        r.baseline_comparisons
    );
    let acc = frame.column("ndcg@10").unwrap().f64().unwrap().to_vec();
    let mean_of = |prefix: &str, d: &str, width: i64| {
        let dm = frame.column("d_model").unwrap().i64().unwrap().to_vec();
        let doms = col("domain");
        let v: Vec<f64> = (0..frame.height())
            .filter(|&i| {
                ids[i].as_deref().unwrap().starts_with(prefix)
                    && doms[i].as_deref() == Some(d)
                    && dm[i] == Some(width)
            })
            .map(|i| acc[i].unwrap())
            .collect();
        assert_eq!(v.len(), 2);
        (v[0] + v[1]) / 2.0
    };
    for c in &r.baseline_comparisons {
        assert_eq!(
            (c.model.as_str(), c.setting.as_str(), c.d_model),
            ("abxi", "+GCA_stack sigmoid LN", Some(16))
        );
        assert!(c.paired && c.n == 2 && c.n_baseline == 2, "{c:?}");
        let (g, b) = (
            mean_of("gca-", &c.domain, 16),
            mean_of("base-", &c.domain, 16),
        );
        assert!((c.mean - g).abs() < 1e-12 && (c.baseline_mean - b).abs() < 1e-12);
        assert!((c.test.mean_difference - (g - b)).abs() < 1e-12);
        assert!(c.test.p_value > 0.0 && c.test.p_value <= 1.0);
    }
    let text = r.to_string();
    assert!(
        text.contains("against the baseline of the same width"),
        "{text}"
    );
    assert!(
        text.contains("AutoCDSR fixed") && text.contains("a_cd"),
        "{text}"
    );
}

mod common;

/// `cdsr-lab report` recomputes the committed reports from their committed study tables, so a
/// report in `results/` is reproducible from its CSV alone (and a change of the report shows up
/// here); a CSV without the study columns is an error naming the file.
#[test]
fn cli_report_recomputes_the_committed_reports_from_their_csv() {
    let results = common::project_root().join("results");
    for study in [
        "demo",
        "study",
        "abxi-cpu-seeds/patience-15",
        "abxi-cpu-seeds/patience-7",
        "abxi-cpu-seeds/12-epochs",
        "autocdsr",
        "autocdsr/early-stop",
        "abxi-d256",
        "autocdsr-plus",
        "autocdsr-kuairand",
        "orthogonality",
    ] {
        let dir = results.join(study);
        let text = common::stdout_of(common::cdsr_lab().arg("report").arg(dir.join("study.csv")));
        let committed = std::fs::read_to_string(dir.join("report.txt")).unwrap();
        assert_eq!(
            text, committed,
            "results/{study}/report.txt is not what its CSV gives"
        );
    }
    // AutoCDSR with Pareto-MTL's weights recomputed every 4th step is a setting of its own,
    // paired by seed against SASRec, not pooled with every-step AutoCDSR.
    let committed =
        std::fs::read_to_string(results.join("autocdsr/early-stop/report.txt")).unwrap();
    // (the setting column is padded: two spaces end the name)
    for setting in ["AutoCDSR", "AutoCDSR every 4"] {
        assert_eq!(
            committed
                .lines()
                .filter(|l| l.contains(&format!(" {setting}  ")) && l.contains(" 3p "))
                .count(),
            2,
            "{setting}: one paired line per domain"
        );
    }
    // The intervention study pools each intervention over the GCA settings it changes.
    let committed = std::fs::read_to_string(results.join("orthogonality/report.txt")).unwrap();
    for intervention in ["orthogonal", "parallel", "cos_penalty +1", "cos_penalty -1"] {
        assert!(
            committed
                .lines()
                .any(|l| l.contains(&format!(" {intervention} "))
                    && l.contains(" A+B ")
                    && l.contains(" 6 ")),
            "no pooled A+B line of {intervention} over 6 pairs"
        );
    }
    let out = common::cdsr_lab()
        .arg("report")
        .arg(results.join("abxi-cpu/2026-11-23-d256/run.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2026-11-23-d256/run.json"), "{err}");
}

/// A report's sections, as notebooks print them one at a time, are the committed study's
/// report cut at its headings: the correlation section is its two domain lines.
#[test]
fn report_sections_are_the_committed_report_cut_at_its_headings() {
    use cdsr_lab::analysis::study::{read_study_csv, ReportSection, StudyReport};
    let dir = common::project_root().join("results/study");
    let report =
        StudyReport::of(&read_study_csv(&dir.join("study.csv")).unwrap(), "ndcg@10").unwrap();
    let committed = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    let sections: Vec<String> = ReportSection::ALL
        .into_iter()
        .map(|s| report.section(s))
        .collect();
    // No intervention on X' in this study, and no notes: those two sections are empty.
    assert!(sections[2].is_empty(), "{}", sections[2]);
    assert!(sections[6].is_empty(), "{}", sections[6]);
    let tables = [&sections[0], &sections[1], &sections[3]]
        .map(String::as_str)
        .join("\n");
    assert_eq!(
        format!("{tables}\n{}{}", sections[4], sections[5]),
        committed
    );
    assert!(sections[5].starts_with("per run:\n"), "{}", sections[5]);
    let correlations = report.section(ReportSection::Correlations);
    assert!(
        correlations.starts_with("|cos(X, X')| against ndcg@10 over GCA runs\n"),
        "{correlations}"
    );
    assert_eq!(correlations.lines().count(), 3, "{correlations}");
    assert!(committed.contains(&correlations));
}

/// Study tables stack into one: the same runs twice count once (the first source wins), a
/// table lacking columns gets them null, and `cdsr-lab report A B` reports the stacked table
/// (here the committed demo and GCA study: their baselines of width 16 pool into one cell).
#[test]
fn study_tables_stack_with_the_first_source_of_a_run_winning() {
    use cdsr_lab::analysis::study::{read_study_csv, stack_study_tables};
    use polars::prelude::*;
    let results = common::project_root().join("results");
    let study = read_study_csv(&results.join("study/study.csv")).unwrap();
    let demo = read_study_csv(&results.join("demo/study.csv")).unwrap();
    let twice = stack_study_tables(&[study.clone(), study.clone()]).unwrap();
    assert!(twice.equals_missing(&study));
    // A later source with fewer columns and a changed metric: its new rows join with nulls
    // where it has no value, its repeated rows are left out.
    let narrow = demo
        .select(["run_id", "model", "seed", "domain", "ndcg@10"])
        .unwrap();
    let stacked = stack_study_tables(&[study.clone(), narrow.clone(), demo.clone()]).unwrap();
    assert_eq!(stacked.height(), study.height() + demo.height());
    assert_eq!(stacked.get_column_names(), study.get_column_names());
    let tail = stacked.slice(study.height() as i64, demo.height());
    assert_eq!(tail.column("params").unwrap().null_count(), demo.height());
    assert!(tail
        .column("ndcg@10")
        .unwrap()
        .equals_missing(demo.column("ndcg@10").unwrap()));
    let text = common::stdout_of(
        common::cdsr_lab()
            .arg("report")
            .arg(results.join("study/study.csv"))
            .arg(results.join("demo/study.csv")),
    );
    let baseline_16_a = text
        .lines()
        .find(|l| l.starts_with("abxi") && l.contains(" baseline ") && l.contains(" 16      A "))
        .unwrap_or_else(|| panic!("{text}"));
    let runs = |t: &DataFrame| {
        let mask = t
            .column("setting")
            .unwrap()
            .str()
            .unwrap()
            .equal("baseline")
            & t.column("domain").unwrap().str().unwrap().equal("A")
            & t.column("d_model")
                .unwrap()
                .cast(&DataType::Int64)
                .unwrap()
                .i64()
                .unwrap()
                .equal(16);
        t.filter(&mask).unwrap().height()
    };
    let n: usize = baseline_16_a
        .split_whitespace()
        .nth(5)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(n, runs(&study) + runs(&demo), "{baseline_16_a}");
}
