//! Runs as TensorBoard, Lightning and Hydra leave them (tests/fixtures/foreign_runs, written by
//! scripts/python/foreign_runs_fixture.py with the real writers from committed results/ runs):
//! every value read is checked against the native run or study table it was logged from.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cdsr_lab::analysis::study::{read_study_csv, study_frame, StudyReport};
use cdsr_lab::data::Domain;
use cdsr_lab::runs::frames::flatten_json;
use cdsr_lab::runs::*;

fn fixtures() -> PathBuf {
    common::project_root().join("tests/fixtures/foreign_runs")
}

fn native(name: &str) -> LoadedRun {
    load_run(&common::project_root().join("results/abxi-cpu").join(name)).unwrap()
}

/// (epoch, split, domain) -> metrics of a run's rows.
fn rows(run: &LoadedRun) -> BTreeMap<(u32, Split, Option<Domain>), Metrics> {
    run.metrics
        .iter()
        .map(|r| ((r.epoch, r.split, r.domain), r.values.clone()))
        .collect()
}

/// Whether `a` and `b` are the same double, or neighbours. The native side is read by
/// serde_json, whose default float parser is not correctly rounded (it can miss by one unit in
/// the last place); Python, which logged the values, and polars' CSV reader are.
fn same_double(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
}

/// Asserts `test` (final test metrics) holds `native`'s, value by value ([`same_double`]).
/// The logged test rows also hold the attention share `a_cd`, which `run.json` leaves out.
fn assert_same_test(test: &DomainMetrics, native: &DomainMetrics) {
    assert_eq!(
        test.keys().collect::<Vec<_>>(),
        native.keys().collect::<Vec<_>>()
    );
    for (d, values) in native {
        let mut keys: Vec<&String> = test[d].keys().filter(|k| *k != "a_cd").collect();
        keys.sort();
        assert_eq!(keys, values.keys().collect::<Vec<_>>());
        for (k, v) in values {
            assert!(same_double(test[d][k].0, v.0), "test {d} {k}");
        }
    }
}

/// Asserts `read` holds exactly the rows of `native`, each value equal ([`same_double`]) after
/// `logged` (the precision it was logged at for its split).
fn assert_same_rows(read: &LoadedRun, native: &LoadedRun, logged: impl Fn(Split, f64) -> f64) {
    let (a, b) = (rows(read), rows(native));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{}",
        read.dir.display()
    );
    for (key, values) in &b {
        let got = &a[key];
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            values.keys().collect::<Vec<_>>()
        );
        for (k, v) in values {
            let (got, want) = (got[k].0, logged(key.1, v.0));
            assert!(same_double(got, want), "{key:?} {k}: {got} against {want}");
        }
    }
}

/// The native config flattened as torch's hparams writer logs it: no `null` values (the plugin
/// cannot hold them) and booleans as the numbers 1 and 0 (torch checks for numbers first).
fn as_torch_hparams(config: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    let mut flat = flatten_json(config);
    flat.retain(|_, v| !v.is_null());
    for v in flat.values_mut() {
        if let Some(b) = v.as_bool() {
            *v = serde_json::json!(i64::from(b));
        }
    }
    flat
}

#[test]
fn tensorboard_event_files_hold_the_native_runs_values_in_both_scalar_encodings() {
    let pairs = [
        ("abxi-d256-s1", "2026-11-23-d256"),
        ("abxi-d256-s2", "2026-11-24-d256-seed2"),
        ("abxi-d256-s3", "2026-11-24-d256-seed3"),
    ];
    for (tb, source) in pairs {
        let run = load_run(&fixtures().join("tensorboard").join(tb)).unwrap();
        let native = native(source);
        // Train rows went through simple_value (float32); valid and test rows through
        // float64 tensors of the scalars plugin.
        assert_same_rows(&run, &native, |split, v| match split {
            Split::Train => f64::from(v as f32),
            _ => v,
        });
        let m = &run.manifest;
        assert_eq!((m.run_id.as_str(), m.model.as_str()), (tb, "abxi"));
        assert_eq!(m.status, RunStatus::Complete);
        assert_eq!(m.seed, native.manifest.seed);
        assert_eq!(m.params.total, native.manifest.params.total);
        assert_eq!(m.epochs_run, native.manifest.epochs_run);
        // The last test rows are those of the best epoch: the native final results.
        assert_same_test(&m.test, &native.manifest.test);
        // hparams plugin: whole numbers as integers, lists written as text read back as lists.
        assert_eq!(
            flatten_json(&m.config),
            as_torch_hparams(&native.manifest.config)
        );
    }
}

#[test]
fn lightning_tensorboard_and_csv_loggers_hold_the_native_runs_values() {
    let lightning = fixtures().join("lightning");
    let cases = [
        ("abxi-d256-gca-early", "2026-11-24-d256-gca-early", true),
        ("abxi-d64-24-epochs", "2026-11-23-24-epochs", false),
        ("abxi-d64-per-position", "2026-11-23-per-position", false),
    ];
    for (name, source, tensorboard) in cases {
        let dir = lightning.join(name).join("version_0");
        let run = load_run(&dir).unwrap();
        let native = native(source);
        // Lightning's TensorBoardLogger writes simple_value (float32) and `epoch` scalars
        // counted from 0; the CSV keeps every digit.
        assert_same_rows(&run, &native, |_, v| {
            if tensorboard {
                f64::from(v as f32)
            } else {
                v
            }
        });
        let m = &run.manifest;
        assert_eq!(m.run_id, format!("{name}-version_0"));
        assert_eq!(m.params.total, native.manifest.params.total);
        assert_eq!(m.seed, 1);
        // hparams.yaml keeps nesting, nulls and lists.
        assert_eq!(
            flatten_json(&m.config),
            flatten_json(&native.manifest.config)
        );
        if !tensorboard {
            assert_same_test(&m.test, &native.manifest.test);
        }
    }
}

/// The rows of results/abxi-cpu-seeds/12-epochs/study.csv (the 9 runs the Hydra jobs logged).
fn study_csv() -> polars::prelude::DataFrame {
    read_study_csv(&common::project_root().join("results/abxi-cpu-seeds/12-epochs/study.csv"))
        .unwrap()
}

#[test]
fn hydra_multirun_jobs_load_with_resolved_configs_and_their_overrides() {
    let set = load_runs(&fixtures().join("hydra"), LoadOptions::default()).unwrap();
    assert!(set.report.is_clean(), "{}", set.report);
    assert_eq!(set.len(), 9);
    let study = study_csv();
    let col = |name: &str| study.column(name).unwrap().clone();
    let (variant, seed, domain, ndcg, params) = (
        col("variant"),
        col("seed"),
        col("domain"),
        col("ndcg@10"),
        col("params"),
    );
    for run in &set.runs {
        let m = &run.manifest;
        let flat = flatten_json(&m.config);
        let choice = flat["overrides.gca"].as_str().unwrap();
        let expected_variant = match choice {
            "none" => "baseline",
            "early" => "+GCA_early",
            "stack" => "+GCA_stack",
            other => panic!("override gca={other}"),
        };
        assert_eq!(flat["train.seed"], serde_json::json!(m.seed));
        assert!(!flat.contains_key("overrides.train.seed"));
        // `${train.batch_size}` resolved with its type; the oc.env resolver kept as text.
        assert_eq!(flat["train.eval_batch_size"], serde_json::json!(256));
        assert_eq!(
            flat["data.path"],
            serde_json::json!("${oc.env:CDSR_DATA,../shared/data}/food-kitchen")
        );
        let mut matched = 0;
        for i in 0..study.height() {
            let same = variant.str().unwrap().get(i) == Some(expected_variant)
                && seed.i64().unwrap().get(i) == Some(m.seed as i64);
            if !same {
                continue;
            }
            let d: Domain = domain.str().unwrap().get(i).unwrap().parse().unwrap();
            assert_eq!(m.test[&d]["ndcg@10"].0, ndcg.f64().unwrap().get(i).unwrap());
            assert_eq!(m.params.total as f64, params.f64().unwrap().get(i).unwrap());
            matched += 1;
        }
        assert_eq!(matched, 2, "{}", run.dir.display());
    }
    // Labelled by what differs: the GCA positions (with the `gca` override that sets them)
    // and the seed.
    let labels = set.labels();
    assert!(
        labels.contains(&"positions [0,1] (+1), seed 2".to_owned()),
        "{labels:?}"
    );
    // Averaged over seeds: one row per GCA setting, seeds 1-3 each.
    let means = set.seed_means_frame(&["ndcg@10"], false).unwrap();
    assert_eq!(means.height(), 3);
    let seeds = means.column("seeds").unwrap().str().unwrap();
    assert!(seeds.iter().all(|s| s == Some("1, 2, 3")), "{means}");
}

#[test]
fn study_report_of_the_hydra_runs_matches_the_native_study_table() {
    let set = load_runs(&fixtures().join("hydra"), LoadOptions::default()).unwrap();
    let (study, _) = study_frame(&set).unwrap();
    let foreign = StudyReport::of(&study, "ndcg@10").unwrap();
    let native = StudyReport::of(&study_csv(), "ndcg@10").unwrap();
    assert_eq!(foreign.baseline_comparisons.len(), 4);
    assert_eq!(
        foreign.baseline_comparisons.len(),
        native.baseline_comparisons.len()
    );
    for (f, n) in foreign
        .baseline_comparisons
        .iter()
        .zip(&native.baseline_comparisons)
    {
        assert_eq!(
            (&f.setting, &f.domain, f.n, f.paired),
            (&n.setting, &n.domain, n.n, n.paired)
        );
        assert!(f.paired, "paired by seed: {f:?}");
        assert_eq!(f.mean, n.mean);
        assert_eq!(f.test.p_value, n.test.p_value);
    }
    assert_eq!(foreign.param_summary, native.param_summary);
}

/// Copies `from` into `to` recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary tree with the fixture's mapping file and a copy of its run folder `run` at
/// `at`: (the tree, the run's folder).
fn run_copy(run: &str, at: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("foreign-runs.toml"),
        root.path().join("foreign-runs.toml"),
    )
    .unwrap();
    let run_dir = root.path().join(at);
    copy_tree(&fixtures().join(run), &run_dir);
    (root, run_dir)
}

/// The foreign fixture tree plus the three native d 256 runs it was logged from.
fn mixed_tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), &root.path().join("foreign"));
    for name in [
        "2026-11-23-d256",
        "2026-11-24-d256-seed2",
        "2026-11-24-d256-seed3",
    ] {
        copy_tree(
            &common::project_root().join("results/abxi-cpu").join(name),
            &root.path().join("native").join(name),
        );
    }
    root
}

#[test]
fn a_mixed_tree_loads_labels_averages_over_seeds_and_draws_its_figures() {
    let root = mixed_tree();
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert!(set.report.is_clean(), "{}", set.report);
    assert_eq!(set.len(), 3 + 3 + 3 + 9);

    // Native and TensorBoard copies of the d 256 seeds average to the same final NDCG@10.
    let means = set.seed_means_frame(&["ndcg@10"], false).unwrap();
    let runs = means.column("runs").unwrap().i64().unwrap();
    let seeds = means.column("seeds").unwrap().str().unwrap();
    let mean = means.column("test.A.ndcg@10").unwrap().f64().unwrap();
    let expected: f64 = [
        "2026-11-23-d256",
        "2026-11-24-d256-seed2",
        "2026-11-24-d256-seed3",
    ]
    .iter()
    .map(|n| native(n).manifest.test[&Domain::A]["ndcg@10"].0)
    .sum::<f64>()
        / 3.0;
    let full_groups: Vec<f64> = (0..means.height())
        .filter(|&i| runs.get(i) == Some(3) && seeds.get(i) == Some("1, 2, 3"))
        .filter_map(|i| mean.get(i))
        .filter(|m| (m - expected).abs() < 1e-12)
        .collect();
    assert_eq!(full_groups.len(), 2, "{means}");

    let out = tempfile::tempdir().unwrap();
    let report = cdsr_lab::plot::figures_of_runs(&set, out.path()).unwrap();
    let parallel = report
        .figures
        .iter()
        .find(|f| matches!(f, cdsr_lab::plot::FigureOutcome::Written { name, .. } if name == "parallel_coordinates"));
    assert!(parallel.is_some(), "{:?}", report.figures);
    let svg = std::fs::read_to_string(out.path().join("parallel_coordinates.svg")).unwrap();
    assert!(
        svg.contains("test.A.ndcg@10") && svg.contains("d_model"),
        "axes named"
    );
}

#[test]
fn cdsr_lab_runs_over_seeds_lists_foreign_runs_beside_native_ones() {
    let root = mixed_tree();
    let out = common::stdout_of(
        common::cdsr_lab()
            .args(["runs", "--over-seeds", "--metrics", "ndcg@10"])
            .arg(root.path()),
    );
    assert!(out.starts_with("18 runs from"), "{out}");
    assert!(out.contains("1, 2, 3"), "{out}");
}

#[test]
fn a_truncated_event_file_is_a_run_still_written_and_a_corrupt_one_an_error() {
    let (root, run_dir) = run_copy("tensorboard/abxi-d256-s1", "abxi-d256-s1");
    let file = run_dir.join("events.out.tfevents.abxi-d256-s1");
    let bytes = std::fs::read(&file).unwrap();
    let full = load_run(&run_dir).unwrap();

    // Cut inside the last record, as a writer still running leaves the file.
    std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();
    let cut = load_run(&run_dir).unwrap();
    assert_eq!(cut.manifest.status, RunStatus::Running);
    let why = cut.manifest.failure.clone().unwrap();
    assert!(
        why.contains("events.out.tfevents.abxi-d256-s1 ends inside record"),
        "{why}"
    );
    let values = |r: &LoadedRun| r.metrics.iter().map(|m| m.values.len()).sum::<usize>();
    assert_eq!(values(&cut) + 1, values(&full));
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 0);
    assert!(
        set.report.skipped[0].1.contains("still being written"),
        "{}",
        set.report
    );
    let with_running = LoadOptions {
        include_incomplete: true,
        ..LoadOptions::default()
    };
    assert_eq!(load_runs(root.path(), with_running).unwrap().len(), 1);

    // A flipped byte inside a record's data: the CRC names the file, record and byte.
    let mut corrupt = bytes.clone();
    let middle = bytes.len() / 2;
    corrupt[middle] ^= 0x20;
    std::fs::write(&file, &corrupt).unwrap();
    let err = load_run(&run_dir).unwrap_err().to_string();
    assert!(
        err.contains("events.out.tfevents.abxi-d256-s1: record ") && err.contains("CRC mismatch"),
        "{err}"
    );
}

#[test]
fn a_csv_column_no_pattern_maps_is_an_error_at_line_1() {
    let (root, run_dir) = run_copy(
        "lightning/abxi-d64-per-position/version_0",
        "abxi-d64/version_0",
    );
    let csv = run_dir.join("metrics.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let with_column: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l},grad_norm\n")
            } else {
                format!("{l},0.5\n")
            }
        })
        .collect();
    std::fs::write(&csv, with_column).unwrap();
    let err = load_run(&run_dir).unwrap_err().to_string();
    assert!(
        err.contains("metrics.csv: line 1: `grad_norm` matches no pattern of")
            && err.contains("foreign-runs.toml"),
        "{err}"
    );
    // Listed in `ignore`, the column is not read.
    let mapping = std::fs::read_to_string(root.path().join("foreign-runs.toml")).unwrap();
    let mapping = mapping.replace("params = ", "ignore = [\"grad_norm\"]\nparams = ");
    std::fs::write(root.path().join("foreign-runs.toml"), mapping).unwrap();
    let run = load_run(&run_dir).unwrap();
    assert!(run
        .metrics
        .iter()
        .all(|r| !r.values.contains_key("grad_norm")));
}

#[test]
fn a_yaml_syntax_error_names_the_file_and_line_and_a_job_without_metrics_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let job = root.path().join("0");
    copy_tree(&fixtures().join("hydra/multirun/0"), &job);
    let config = job.join(".hydra/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    // A flow sequence opened on line 2 that never closes.
    std::fs::write(
        &config,
        text.replacen("gca:\n", "gca:\n  broken: [0, 1\n", 1),
    )
    .unwrap();
    let err = load_run(&job).unwrap_err().to_string();
    assert!(err.contains(".hydra/config.yaml: line "), "{err}");
    assert!(err.contains("YAML"), "{err}");

    std::fs::write(&config, text).unwrap();
    std::fs::remove_dir_all(job.join("tb")).unwrap();
    let err = load_run(&job).unwrap_err().to_string();
    assert!(err.contains("Hydra job without metrics"), "{err}");
}
