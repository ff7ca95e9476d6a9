//! `analysis::attention`: a_cd of hand-made attention maps and of real Food-Kitchen domain
//! layouts, per-cell statistics on a hand-made samples frame, and `cdsr-lab diagnose` on the
//! committed converged AutoCDSR runs.
mod common;
#[path = "fixtures/food_kitchen_runs.rs"]
mod fk;

use cdsr_lab::analysis::attention::*;
use cdsr_lab::data::Domain;
use cdsr_lab::runs::{load_runs, FinalResults, LoadOptions, RunIdentity, RunWriter};
use polars::prelude::*;

#[test]
fn cross_domain_share_of_hand_made_maps() {
    use Domain::{A, B};
    // Positions: A, B, A, padding. Head 0 attends uniformly over the 3 real keys; head 1
    // attends to itself only.
    let doms = [Some(A), Some(B), Some(A), None];
    let mut p = ndarray::Array3::<f32>::zeros((2, 4, 4));
    for i in 0..3 {
        for j in 0..3 {
            p[[0, i, j]] = 1.0 / 3.0;
        }
        p[[1, i, i]] = 1.0;
    }
    let s = cross_domain_share(p.view(), &doms).unwrap();
    // Head 0: rows A -> 1/3 on B (twice), row B -> 2/3 on A: total 4/3. Head 1: 0. Mean 2/3.
    assert!((s.raw - 2.0 / 3.0).abs() < 1e-6, "{}", s.raw);
    assert_eq!(s.valid_rows, 3);
    assert!((s.normalised - 2.0 / 9.0).abs() < 1e-6);
    assert!(cross_domain_share(p.view(), &doms[..3]).is_err());
}

#[test]
fn uniform_attention_over_a_real_sequence_gives_the_domain_mix() {
    // Under uniform attention a row of domain D puts (#other / len) on the other domain, so the
    // normalised share is 2 n_A n_B / len² — checked on real users' domain sequences.
    for s in fk::sequences().iter().take(20) {
        let doms: Vec<Option<Domain>> = s
            .iter()
            .map(|&i| {
                Some(if i <= fk::N_ITEMS_A {
                    Domain::A
                } else {
                    Domain::B
                })
            })
            .collect();
        let l = doms.len();
        let p = ndarray::Array3::<f32>::from_elem((2, l, l), 1.0 / l as f32);
        let n_a = doms.iter().filter(|d| **d == Some(Domain::A)).count() as f64;
        let n_b = l as f64 - n_a;
        let got = cross_domain_share(p.view(), &doms).unwrap();
        let want = 2.0 * n_a * n_b / (l * l) as f64;
        assert!(
            (got.normalised - want).abs() < 1e-5,
            "{} vs {want}",
            got.normalised
        );
    }
}

fn samples_frame() -> DataFrame {
    // Cell (single hit, cross miss) has higher a_cd: the paper's failure mode.
    polars::df!(
        "sample" => [0i64, 1, 2, 3, 4, 5, 6, 7],
        "domain" => ["A", "A", "A", "A", "B", "B", "B", "B"],
        "hit_single" => [true, true, false, true, true, true, false, false],
        "hit_cross" => [false, false, true, true, false, false, true, true],
        "a_cd" => [0.6, 0.8, 0.2, 0.3, 0.5, 0.7, 0.1, 0.3]
    )
    .unwrap()
}

#[test]
fn share_by_cell_gives_means_and_t_intervals() {
    let out = share_by_cell(&samples_frame(), &["domain"], 0.95).unwrap();
    assert_eq!(out.height(), 5);
    let cols: Vec<&str> = out
        .get_column_names()
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        cols,
        [
            "domain",
            "hit_single",
            "hit_cross",
            "n",
            "mean",
            "sd",
            "ci_low",
            "ci_high"
        ]
    );
    // Sorted by domain, then (false, true) before (true, false) before (true, true).
    let row = |i: usize, c: &str| out.column(c).unwrap().get(i).unwrap();
    // A, single hit & cross miss: values .6, .8 -> mean .7, sd .1414.., t_{0.975, 1} = 12.7062.
    assert_eq!(row(1, "domain"), AnyValue::String("A"));
    assert_eq!(
        (row(1, "hit_single"), row(1, "hit_cross")),
        (AnyValue::Boolean(true), AnyValue::Boolean(false))
    );
    let mean = out.column("mean").unwrap().f64().unwrap().get(1).unwrap();
    assert!((mean - 0.7).abs() < 1e-12);
    let half = 12.706204736174707 * (0.02f64).sqrt() / 2f64.sqrt();
    let lo = out.column("ci_low").unwrap().f64().unwrap().get(1).unwrap();
    assert!((lo - (0.7 - half)).abs() < 1e-9, "{lo}");
    // Single-value cells have no interval.
    assert_eq!(out.column("ci_low").unwrap().null_count(), 2);

    let mut bad = samples_frame();
    bad.replace(
        "a_cd",
        Column::new("a_cd".into(), [0.1, f64::NAN, 0.2, 0.3, 0.5, 0.7, 0.1, 0.3]),
    )
    .unwrap();
    assert!(share_by_cell(&bad, &["domain"], 0.95)
        .unwrap_err()
        .to_string()
        .contains("row 1"));
    // In a frame stacked from runs, the run is named too.
    let n = bad.height();
    let ids: Vec<String> = (0..n).map(|i| format!("run-{i}")).collect();
    bad.with_column(Column::new("run_id".into(), ids)).unwrap();
    let err = share_by_cell(&bad, &["domain"], 0.95)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1 (run run-1)"), "{err}");
}

#[test]
fn samples_are_loaded_from_runs_with_their_run_id() {
    let root = tempfile::tempdir().unwrap();
    for seed in [1u64, 2] {
        let id = RunIdentity {
            run_id: format!("autocdsr-s{seed}"),
            model: "sasrec".into(),
            dataset: "food-kitchen".into(),
            seed,
        };
        let w = RunWriter::create(root.path(), id, &serde_json::json!({"autocdsr": true})).unwrap();
        w.write_samples(&mut samples_frame()).unwrap();
        w.finish(FinalResults::default()).unwrap();
    }
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    let (all, report) = load_samples(&set).unwrap();
    assert!(report.is_clean());
    assert_eq!(all.height(), 16);
    assert_eq!(
        all.get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()[0],
        "run_id"
    );
    let cells = share_by_cell(&all, &["run_id", "domain"], 0.95).unwrap();
    assert_eq!(cells.height(), 10);
}

/// `cdsr-lab diagnose` on the committed converged runs of seed 1 prints every cell (domain x
/// layer x single hit x cross hit) whole, and the cells hold every test case once per layer.
#[test]
fn diagnose_prints_every_cell_of_the_committed_runs() {
    let runs = common::project_root().join("results/autocdsr/early-stop/runs");
    let run = |prefix: &str| {
        std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .unwrap()
    };
    let out = common::stdout_of(
        common::cdsr_lab()
            .arg("diagnose")
            .arg("--single")
            .arg(run("sasrec-single-s1-"))
            .arg("--cross")
            .arg(run("sasrec-s1-"))
            .arg("--print-only"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 17, "{out}");
    assert!(!out.contains('…'), "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let n = header.iter().position(|&c| c == "n").unwrap();
    let layer = header.iter().position(|&c| c == "layer").unwrap();
    for l in ["0", "1"] {
        let cases: u64 = lines[1..]
            .iter()
            .map(|r| r.split_whitespace().collect::<Vec<_>>())
            .filter(|r| r[layer] == l)
            .map(|r| r[n].parse::<u64>().unwrap())
            .sum();
        // food-kitchen has one test case per user (7,144), in the domain of its last item.
        assert_eq!(cases, 7_144, "layer {l}: {out}");
    }
}
