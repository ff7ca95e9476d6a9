//! RunWriter and the reader: round trips, frames, and every kind of bad input.
#[path = "fixtures/food_kitchen_runs.rs"]
mod fk;

use cdsr_lab::data::Domain;
use cdsr_lab::runs::*;
use polars::prelude::*;

mod common;

fn spec(
    id: &str,
    model: &str,
    seed: u64,
    hidden: usize,
    positions: Vec<usize>,
    params: u64,
) -> fk::RunSpec {
    fk::RunSpec {
        run_id: id.into(),
        model: model.into(),
        seed,
        hidden,
        positions,
        scale: 0.5,
        params,
        ndcg10: [0.15 + seed as f64 / 100.0, 0.11],
    }
}

#[test]
fn writer_produces_format_v1_and_reader_round_trips() {
    let seqs = fk::sequences();
    let emb = fk::embeddings(&seqs, 16);
    let root = tempfile::tempdir().unwrap();
    let dir = fk::write_run(
        root.path(),
        &spec("abxi-gca0-s1", "abxi", 1, 64, vec![0], 2_000_000),
        &seqs,
        &emb,
    );

    // No temporary file survives.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    for f in [
        "run.json",
        "config.toml",
        "metrics.jsonl",
        "tensors.safetensors",
    ] {
        assert!(names.contains(&f.to_string()), "missing {f}");
    }
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(config["model"]["hidden"].as_integer(), Some(64));
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        6
    );

    let run = load_run(&dir).unwrap();
    assert_eq!(run.manifest.status, RunStatus::Complete);
    assert_eq!(run.manifest.format_version, 1);
    assert_eq!(run.manifest.params.total, 2_000_000);
    assert_eq!(run.manifest.best_epoch, Some(2));
    assert_eq!(run.metrics.len(), 6);
    assert_eq!(run.metrics[1].domain, Some(Domain::A));
    assert_eq!(run.metrics[1].values["ndcg@10"].0, 0.16 / 2.0);
    // hr@10 of the popularity ranking on the real slice: a real number in (0, 1).
    let hr = run.manifest.test[&Domain::A]["hr@10"].0;
    assert!(hr > 0.0 && hr < 1.0, "{hr}");

    let t = MappedTensors::open(&run.tensors_path()).unwrap();
    assert_eq!(t.shape("gca.0.A.x").unwrap(), vec![200, 6, 16]);
    assert_eq!(t.shape("gca.0.B.y").unwrap(), vec![200, 8, 16]);
    assert_eq!(t.u8("gca.0.A.mask").unwrap().shape(), &[200, 6]);
}

#[test]
fn status_is_running_until_finish_and_failed_with_reason() {
    let root = tempfile::tempdir().unwrap();
    let id = |s: &str| RunIdentity {
        run_id: s.into(),
        model: "sasrec".into(),
        dataset: "food-kitchen".into(),
        seed: 3,
    };
    let w = RunWriter::create(root.path(), id("r1"), &serde_json::json!({"a": 1})).unwrap();
    assert_eq!(read_manifest(w.dir()).unwrap().status, RunStatus::Running);
    let dir = w.fail("loss became NaN at epoch 3").unwrap();
    let m = read_manifest(&dir).unwrap();
    assert_eq!(m.status, RunStatus::Failed);
    assert_eq!(m.failure.as_deref(), Some("loss became NaN at epoch 3"));
    // Creating the same run twice is refused rather than overwriting it.
    assert!(RunWriter::create(root.path(), id("r1"), &serde_json::json!({})).is_err());
    assert!(matches!(
        RunWriter::create(root.path(), id("../escape"), &serde_json::json!({})),
        Err(RunError::RunId(_))
    ));
}

/// A new run `r` (abxi, food-kitchen, seed 1) under `parent`, nothing logged yet.
fn new_run(parent: &std::path::Path) -> RunWriter {
    let id = RunIdentity {
        run_id: "r".into(),
        model: "abxi".into(),
        dataset: "food-kitchen".into(),
        seed: 1,
    };
    RunWriter::create(parent, id, &serde_json::json!({"x": 1})).unwrap()
}

#[test]
fn resume_drops_truncated_line_and_later_epochs() {
    let root = tempfile::tempdir().unwrap();
    let mut w = new_run(root.path());
    for e in 1..=3 {
        w.log_metrics(e, Split::Train, None, [("loss", 1.0 / e as f64)])
            .unwrap();
    }
    let dir = w.dir().to_owned();
    drop(w);
    // A kill in the middle of a line.
    let mut text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.push_str("{\"epoch\":4,\"spl");
    std::fs::write(dir.join("metrics.jsonl"), &text).unwrap();
    let err = read_metrics(&dir).unwrap_err().to_string();
    assert!(
        err.contains("line 4") && err.contains("incomplete"),
        "{err}"
    );

    let mut w = RunWriter::resume(&dir, 2).unwrap();
    w.log_metrics(3, Split::Train, None, [("loss", 0.25)])
        .unwrap();
    let rows = read_metrics(&dir).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(rows[2].values["loss"].0, 0.25);
}

/// `run.json` names the trainer of the run (`cdsr-lab VERSION`); a resume by the same version
/// adds nothing, a resume by another version adds it after the first.
#[test]
fn run_json_names_the_trainers_that_trained_the_run_and_where_each_took_over() {
    let root = tempfile::tempdir().unwrap();
    let w = new_run(root.path());
    let dir = w.dir().to_owned();
    drop(w);
    let trainer = format!("cdsr-lab {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(TRAINER, trainer);
    assert_eq!(
        read_manifest(&dir).unwrap().trained_with,
        vec![trainer.clone()]
    );
    assert!(read_manifest(&dir).unwrap().resumes.is_empty());
    drop(RunWriter::resume(&dir, 0).unwrap());
    assert_eq!(
        read_manifest(&dir).unwrap().trained_with,
        vec![trainer.clone()]
    );

    // The run as an earlier version left it.
    let path = dir.join("run.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["trained_with"] = serde_json::json!(["cdsr-lab 0.0.1"]);
    std::fs::write(&path, json.to_string()).unwrap();
    drop(RunWriter::resume(&dir, 0).unwrap());
    assert_eq!(
        read_manifest(&dir).unwrap().trained_with,
        ["cdsr-lab 0.0.1".to_owned(), trainer]
    );
    // A run written before the field has none, and says so once resumed.
    json.as_object_mut().unwrap().remove("trained_with");
    std::fs::write(&path, json.to_string()).unwrap();
    assert!(read_manifest(&dir).unwrap().trained_with.is_empty());
    drop(RunWriter::resume(&dir, 0).unwrap());
    assert_eq!(
        read_manifest(&dir).unwrap().trained_with,
        [EARLIER_TRAINER.to_owned(), TRAINER.to_owned()]
    );

    // Every resume, by whichever trainer, records the checkpoint's epoch it went on from.
    drop(RunWriter::resume(&dir, 7).unwrap());
    let resume = |after_epoch| Resume {
        after_epoch,
        trainer: TRAINER.to_owned(),
    };
    assert_eq!(
        read_manifest(&dir).unwrap().resumes,
        [resume(0), resume(0), resume(7)]
    );
}

/// A tree with good runs and every kind of bad run: the good ones load, the bad ones are
/// reported with a reason naming the problem, and nothing bad reaches a frame.
#[test]
fn load_tree_skips_bad_runs_with_reasons_and_builds_frames() {
    let seqs = fk::sequences();
    let emb = fk::embeddings(&seqs, 16);
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("sweep");
    fk::write_run(
        &good,
        &spec("abxi-s1", "abxi", 1, 64, vec![], 2_000_000),
        &seqs,
        &emb,
    );
    fk::write_run(
        &good,
        &spec("abxi-gca0-s1", "abxi", 1, 64, vec![0], 2_500_000),
        &seqs,
        &emb,
    );
    fk::write_run(
        &good.join("nested"),
        &spec("abxi-gca01-s2", "abxi", 2, 96, vec![0, 1], 3_000_000),
        &seqs,
        &emb,
    );

    let bad = root.path().join("bad");
    // 1. killed: status running and a truncated metrics file.
    let id = |s: &str| RunIdentity {
        run_id: s.into(),
        model: "abxi".into(),
        dataset: "food-kitchen".into(),
        seed: 9,
    };
    let mut w = RunWriter::create(&bad, id("killed"), &serde_json::json!({"a": 1})).unwrap();
    w.log_metrics(1, Split::Train, None, [("loss", 1.0)])
        .unwrap();
    drop(w);
    // 2. complete but with a NaN test metric.
    let w = RunWriter::create(&bad, id("nan"), &serde_json::json!({"a": 1})).unwrap();
    let mut test = std::collections::BTreeMap::new();
    test.insert(Domain::A, metrics([("ndcg@10", f64::NAN)]));
    w.finish(FinalResults {
        test,
        ..Default::default()
    })
    .unwrap();
    // 3. complete but the metrics file was cut mid-line.
    let mut w = RunWriter::create(&bad, id("truncated"), &serde_json::json!({"a": 1})).unwrap();
    w.log_metrics(1, Split::Train, None, [("loss", 1.0)])
        .unwrap();
    let dir = w.finish(FinalResults::default()).unwrap();
    let p = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, &text[..text.len() - 5]).unwrap();
    // 4. a future format version.
    let w = RunWriter::create(&bad, id("future"), &serde_json::json!({"a": 1})).unwrap();
    let dir = w.finish(FinalResults::default()).unwrap();
    let p = dir.join("run.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 2");
    std::fs::write(&p, text).unwrap();

    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 3, "{}", set.report);
    let reasons: std::collections::BTreeMap<String, String> = set
        .report
        .skipped
        .iter()
        .map(|(p, r)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                r.clone(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons["killed"].contains("status is `running`"),
        "{reasons:?}"
    );
    assert!(
        reasons["nan"].contains("test.A.ndcg@10 is not finite"),
        "{reasons:?}"
    );
    assert!(
        reasons["truncated"].contains("line 1") && reasons["truncated"].contains("incomplete"),
        "{reasons:?}"
    );
    assert!(reasons["future"].contains("version 2"), "{reasons:?}");

    // NaN kept on request: the value is NaN in the frame, not a number.
    let keep = load_runs(
        &bad,
        LoadOptions {
            nan_policy: NanPolicy::Keep,
            include_incomplete: false,
        },
    )
    .unwrap();
    assert_eq!(keep.len(), 1);
    let f = keep.runs_frame().unwrap();
    assert!(f
        .column("test.A.ndcg@10")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap()
        .is_nan());

    let runs = set.runs_frame().unwrap();
    assert_eq!(runs.height(), 3);
    let ids: Vec<&str> = runs
        .column("run_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(ids, ["abxi-gca0-s1", "abxi-s1", "abxi-gca01-s2"]);
    assert_eq!(
        runs.column("config.model.hidden").unwrap().dtype(),
        &DataType::Int64
    );
    assert_eq!(
        runs.column("config.train.lr")
            .unwrap()
            .f64()
            .unwrap()
            .get(0),
        Some(1e-4)
    );
    let positions: Vec<&str> = runs
        .column("config.gca.positions")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(positions, ["[0]", "[]", "[0,1]"]);
    assert_eq!(
        runs.column("params.total").unwrap().i64().unwrap().get(2),
        Some(3_000_000)
    );
    assert_eq!(
        runs.column("params.embedding")
            .unwrap()
            .i64()
            .unwrap()
            .get(2),
        Some(1_500_000)
    );
    assert_eq!(
        runs.column("test.A.ndcg@10").unwrap().f64().unwrap().get(2),
        Some(0.15 + 2.0 / 100.0)
    );
    assert_eq!(
        runs.column("test.B.ndcg@10").unwrap().f64().unwrap().get(0),
        Some(0.11)
    );

    let long = set.final_metrics_frame().unwrap();
    assert_eq!(long.height(), 3 * 2 * 2);
    assert_eq!(
        long.get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        ["run_id", "model", "dataset", "seed", "eval", "domain", "metric", "value"]
    );

    let epochs = set.epochs_frame().unwrap();
    assert_eq!(epochs.height(), 3 * 6);
    let names = epochs
        .get_column_names()
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>();
    assert_eq!(&names[..5], ["run_id", "label", "epoch", "split", "domain"]);
    // The runs' configs differ in GCA positions and width: the labels name those.
    assert_eq!(
        set.labels(),
        [
            "positions [0], hidden 64",
            "positions [], hidden 64",
            "positions [0,1], hidden 96"
        ]
    );
    assert!(names.contains(&"loss") && names.contains(&"ndcg@10") && names.contains(&"mrr"));
    // Train rows have no domain and no ndcg; valid rows have no loss.
    let is_train = epochs
        .column("split")
        .unwrap()
        .str()
        .unwrap()
        .equal("train");
    let train = epochs.filter(&is_train).unwrap();
    assert_eq!(train.height(), 6);
    assert_eq!(train.column("domain").unwrap().null_count(), 6);
    assert_eq!(train.column("ndcg@10").unwrap().null_count(), 6);
}

/// A temporary tree holding copies of committed real runs of `results/abxi-cpu/` (their
/// manifest, metrics and config).
fn committed_abxi_cpu_runs(runs: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let results = common::project_root().join("results/abxi-cpu");
    for run in runs {
        let dst = root.path().join(run);
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["run.json", "metrics.jsonl", "config.toml"] {
            std::fs::copy(results.join(run).join(f), dst.join(f)).unwrap();
        }
    }
    root
}

/// `cdsr-lab runs` on three committed real runs (the width and epoch-budget gap experiments):
/// each row is labelled by what differs in its config, the CSV holds the same table, and a
/// metric no run recorded is an error that lists the recorded ones.
#[test]
fn cli_runs_tabulates_real_runs_by_what_sets_them_apart() {
    let root =
        committed_abxi_cpu_runs(&["2026-11-23-simd", "2026-11-23-24-epochs", "2026-11-23-d256"]);
    let csv = root.path().join("table.csv");
    let text = common::stdout_of(
        common::cdsr_lab()
            .arg("runs")
            .arg(root.path())
            .args(["--full-ranking", "--csv"])
            .arg(&csv),
    );
    let wide = text
        .lines()
        .find(|l| l.starts_with("d_model 256 (+1), epochs 12 "))
        .unwrap_or_else(|| panic!("no d 256 row in\n{text}"));
    // params, epochs run, best epoch, why it stopped (these 12-epoch runs ran into their cap:
    // not converged), then test NDCG@10 / HR@10 of Food and Kitchen.
    let cells: Vec<&str> = wide
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(&cells[1..5], ["complete", "9582336", "12", "10"], "{wide}");
    assert_eq!(&cells[5..7], ["epoch_cap", "false"], "{wide}");
    assert_eq!(
        &cells[8..12],
        ["0.1804", "0.2943", "0.1259", "0.2271"],
        "{wide}"
    );
    assert!(text.contains("d_model 64 (+1), epochs 24 "), "{text}");
    assert!(text.contains("test_full.B.hr@10"), "{text}");

    let table = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(csv))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(table.height(), 3);
    assert_eq!(table.width(), 8 + 2 * 2 * 2);

    let bad = common::cdsr_lab()
        .arg("runs")
        .arg(root.path())
        .args(["--metrics", "ndcg@11"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("test.A.ndcg@11") && err.contains("mrr"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let none = common::cdsr_lab()
        .arg("runs")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    let dir = empty.path().display().to_string();
    assert!(
        err.contains("no complete run under") && err.contains(&dir),
        "{err}"
    );
}

/// `cdsr-lab runs --over-seeds` on the committed real runs at ABXI's width: seeds 1-3 of
/// `abxi-cpu-d256.toml` make one row with their mean and sample sd (the numbers of
/// results/abxi-cpu/README.md), the optimiser-schedule run another.
#[test]
fn cli_runs_over_seeds_averages_the_real_seed_runs() {
    let root = committed_abxi_cpu_runs(&[
        "2026-11-23-d256",
        "2026-11-24-d256-seed2",
        "2026-11-24-d256-seed3",
        "2026-11-23-d256-abxi-optim",
    ]);
    let csv = root.path().join("table.csv");
    let text = common::stdout_of(
        common::cdsr_lab()
            .arg("runs")
            .arg(root.path())
            .args(["--over-seeds", "--include-incomplete", "--csv"])
            .arg(&csv),
    );
    let table = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(csv))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(table.height(), 2, "{text}");
    let seeds = table.column("seeds").unwrap().str().unwrap();
    let row = (0..2).find(|&i| seeds.get(i) == Some("1, 2, 3")).unwrap();
    let runs = table.column("runs").unwrap().i64().unwrap();
    assert_eq!((runs.get(row), runs.get(1 - row)), (Some(3), Some(1)));
    // Each seed's best epoch, in the order of the seeds, from its run.json.
    let results = common::project_root().join("results/abxi-cpu");
    let best: Vec<String> = [
        "2026-11-23-d256",
        "2026-11-24-d256-seed2",
        "2026-11-24-d256-seed3",
    ]
    .iter()
    .map(|d| {
        let m = read_manifest(&results.join(d)).unwrap();
        m.best_epoch.unwrap().to_string()
    })
    .collect();
    assert_eq!(
        table.column("best_epochs").unwrap().str().unwrap().get(row),
        Some(best.join(", ").as_str()),
        "{text}"
    );
    let get = |c: &str| table.column(c).unwrap().f64().unwrap().get(row).unwrap();
    // Means and sample sds of .1804/.1838/.1809 and .1259/.1302/.1322 (rounded in the README).
    for (col, want) in [
        ("test.A.ndcg@10", 0.1817),
        ("test.A.ndcg@10 sd", 0.0019),
        ("test.B.ndcg@10", 0.1295),
        ("test.B.ndcg@10 sd", 0.0032),
        ("test.B.hr@10", 0.2296),
    ] {
        assert!(
            (get(col) - want).abs() < 6e-5,
            "{col}: {} in\n{text}",
            get(col)
        );
    }
    // The groups are told apart by the optimiser schedule (its five keys co-vary and are named
    // by the first), not by the seed; a single run has no sd.
    assert!(text.contains("early_stop_patience 7 (+4) "), "{text}");
    assert_eq!(
        table
            .column("test.A.ndcg@10 sd")
            .unwrap()
            .f64()
            .unwrap()
            .get(1 - row),
        None
    );
    assert!(!text.contains("seed "), "{text}");
}

/// A run still training shows, with `include_incomplete`, the epochs logged so far and the test
/// metrics of its best epoch so far (the last test rows); once finished, the manifest's.
#[test]
fn results_of_a_running_run_are_its_best_epoch_so_far() {
    let root = tempfile::tempdir().unwrap();
    let id = |run_id: &str| RunIdentity {
        run_id: run_id.into(),
        model: "abxi".into(),
        dataset: "food-kitchen".into(),
        seed: 1,
    };
    let config = serde_json::json!({"optim": {"lr": 0.0001}});
    let mut run = RunWriter::create(root.path(), id("slow"), &config).unwrap();
    for (epoch, ndcg) in [(1, 0.05), (2, 0.08), (3, 0.07)] {
        run.log_metrics(epoch, Split::Train, None, [("loss", 9.0)])
            .unwrap();
        for d in [Domain::A, Domain::B] {
            run.log_metrics(epoch, Split::Valid, Some(d), [("ndcg@10", ndcg)])
                .unwrap();
        }
        if epoch < 3 {
            // Test rows are written at the epochs that improve validation.
            for d in [Domain::A, Domain::B] {
                run.log_metrics(epoch, Split::Test, Some(d), [("ndcg@10", ndcg / 2.0)])
                    .unwrap();
            }
        }
    }
    let running = LoadOptions {
        include_incomplete: true,
        ..LoadOptions::default()
    };
    let set = load_runs(root.path(), running).unwrap();
    let table = set.results_frame(&["ndcg@10"], false).unwrap();
    let get_i = |c: &str| table.column(c).unwrap().i64().unwrap().get(0);
    assert_eq!(
        table.column("status").unwrap().str().unwrap().get(0),
        Some("running")
    );
    assert_eq!(
        (get_i("epochs_run"), get_i("best_epoch")),
        (Some(3), Some(2))
    );
    let ndcg_b = table
        .column("test.B.ndcg@10")
        .unwrap()
        .f64()
        .unwrap()
        .get(0);
    assert_eq!(ndcg_b, Some(0.04));
    // Without the option the running run is skipped, saying why.
    let complete_only = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert!(complete_only.is_empty());
    assert!(complete_only.report.skipped[0].1.contains("running"));
    // `cdsr-lab runs` says so on stderr before failing for want of a run.
    let out = common::cdsr_lab()
        .arg("runs")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = format!("skipped run {}: ", root.path().join("slow").display());
    assert!(
        stderr.contains(&line) && stderr.contains("running"),
        "{stderr}"
    );
}

/// A run directory copied under a second name keeps its run id: `--over-seeds` would count it
/// twice (seeds 1, 1, 2, 3). The copy is loaded once and reported, and the mean is the one of
/// the three distinct seeds.
#[test]
fn a_copied_run_is_loaded_once_and_reported() {
    let root = committed_abxi_cpu_runs(&[
        "2026-11-23-d256",
        "2026-11-24-d256-seed2",
        "2026-11-24-d256-seed3",
    ]);
    let (a, b) = (
        root.path().join("2026-11-23-d256"),
        root.path().join("z-copy-of-d256"),
    );
    std::fs::create_dir(&b).unwrap();
    for f in ["run.json", "metrics.jsonl", "config.toml"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 3, "{}", set.report);
    assert_eq!(set.report.skipped.len(), 1);
    let (path, reason) = &set.report.skipped[0];
    assert_eq!(path, &b);
    assert!(
        reason.starts_with("duplicate run id `abxi-s1-778b1e52`, already loaded from")
            && reason.ends_with("(an identical copy)"),
        "{reason}"
    );
    let table = set.seed_means_frame(&["ndcg@10"], false).unwrap();
    let seeds = table.column("seeds").unwrap().str().unwrap().get(0);
    assert_eq!(seeds, Some("1, 2, 3"));
    // The same id with other results is said to be another run.
    let text = std::fs::read_to_string(b.join("run.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["wall_time_s"] = 1.0.into();
    std::fs::write(b.join("run.json"), v.to_string()).unwrap();
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert!(
        set.report.skipped[0]
            .1
            .ends_with("a different run under the same id: give one of them another run_id)"),
        "{}",
        set.report
    );
}

/// `results/abxi-cpu/` is a run directory that holds the directories of later runs: a walk
/// that stopped at its `run.json` found one run. Every committed run is found (the 11 of
/// `results/abxi-cpu/` and the compact runs of `results/study/runs/`,
/// `results/orthogonality/runs/`, `results/abxi-cpu-seeds/patience-*/runs/`,
/// `results/autocdsr/early-stop/runs/` and `results/abxi-d256/runs/`); the running one and the
/// ids shared by the three kernel re-runs are reported, not dropped in silence.
#[test]
fn runs_inside_a_run_directory_are_found() {
    let results = common::project_root().join("results");
    let runs_in = |folder: &str| std::fs::read_dir(results.join(folder)).unwrap().count();
    assert!(runs_in("study/runs") > 0);
    let study_runs: usize = [
        "study/runs",
        "orthogonality/runs",
        "abxi-cpu-seeds/patience-7/runs",
        "abxi-cpu-seeds/patience-15/runs",
        "autocdsr/early-stop/runs",
        "abxi-d256/runs",
    ]
    .into_iter()
    .map(runs_in)
    .sum();
    let dirs = find_run_dirs(&results).unwrap();
    let expected: Vec<std::path::PathBuf> = std::fs::read_dir(results.join("abxi-cpu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("run.json").is_file())
        .chain([results.join("abxi-cpu")])
        .collect();
    assert_eq!(dirs.len(), 11 + study_runs);
    for d in &expected {
        assert!(dirs.contains(d), "{d:?} not found in {dirs:?}");
    }
    let set = load_runs(&results, LoadOptions::default()).unwrap();
    let reasons: Vec<String> = set
        .report
        .skipped
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(set.len() + reasons.len(), 11 + study_runs, "{reasons:?}");
    assert!(reasons
        .iter()
        .any(|r| r.starts_with("2026-11-23-d256-abxi-optim: status is `running`")));
    // matmul and simd share fused's run id (same config, other kernels): kept once.
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("duplicate run id `abxi-s1-ebe76f6c`"))
            .count(),
        2,
        "{reasons:?}"
    );
    // A run's checkpoint folder is not searched as a run tree.
    let root = committed_abxi_cpu_runs(&["2026-11-23-d256"]);
    std::fs::create_dir(root.path().join("2026-11-23-d256/checkpoint")).unwrap();
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert_eq!(
        (set.len(), set.report.skipped.len()),
        (1, 0),
        "{}",
        set.report
    );
}

/// A run directory whose files were removed (all, or `run.json`) is reported with what it
/// holds instead of vanishing from the table.
#[test]
fn an_emptied_run_directory_is_reported() {
    let root = committed_abxi_cpu_runs(&["2026-11-23-d256", "2026-11-23-simd"]);
    let emptied = root.path().join("2026-11-23-simd");
    for f in std::fs::read_dir(&emptied).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let no_manifest = root.path().join("2026-11-23-d256");
    std::fs::remove_file(no_manifest.join("run.json")).unwrap();
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    assert!(set.is_empty());
    assert_eq!(
        set.report.skipped,
        vec![
            (
                no_manifest,
                "holds config.toml, metrics.jsonl but no run.json: an unfinished or damaged \
                 run, not loaded"
                    .to_string()
            ),
            (
                emptied,
                "empty directory: no run.json (were its files removed?)".to_string()
            ),
        ]
    );
}

/// The loader for runs an analysis depends on fails, naming the tree, where `load_runs` would
/// give an empty set: a missing tree, an empty one, and one whose only run is damaged; it loads
/// the committed real runs.
#[test]
fn required_runs_fail_clearly_when_missing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("study/runs");
    let err = load_required_runs(&missing, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: no run tree here", missing.display())),
        "{err}"
    );
    let err = load_required_runs(root.path(), LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: no run loaded: it holds no run directory",
            root.path().display()
        )
    );

    let runs = committed_abxi_cpu_runs(&["2026-11-23-d256"]);
    let set = load_required_runs(runs.path(), LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 1);
    let run = runs.path().join("2026-11-23-d256");
    std::fs::remove_file(run.join("run.json")).unwrap();
    let err = load_required_runs(runs.path(), LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no run loaded: 1 run(s) skipped, the first") && err.contains("no run.json"),
        "{err}"
    );
}
