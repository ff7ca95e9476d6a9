//! Foreign runs (what a PyTorch script writes), mapped by manifest.toml; the fixture and its
//! expected numpy statistics come from scripts/python/analysis_foreign_fixture.py.
use std::path::{Path, PathBuf};

use cdsr_lab::data::Domain;
use cdsr_lab::runs::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/foreign_run")
}

#[test]
fn foreign_csv_and_npy_run_loads_like_a_native_one() {
    let run = load_run(&fixture_dir()).unwrap();
    let m = &run.manifest;
    assert_eq!(
        (m.run_id.as_str(), m.model.as_str(), m.seed),
        ("torch-abxi-gca0-s1", "abxi", 1)
    );
    assert_eq!(m.params.total, 123456);
    assert_eq!(m.epochs_run, 3);
    // Final test metrics come from the test rows of best_epoch (3).
    assert_eq!(m.test[&Domain::A]["ndcg@10"].0, 0.125);
    assert_eq!(m.test[&Domain::B]["hr@10"].0, 0.19);
    assert_eq!(run.metrics.len(), 3 * 3 + 2);
    assert_eq!(run.metrics[0].split, Split::Train);
    assert_eq!(run.metrics[0].domain, None);
    assert_eq!(run.metrics[0].values["loss"].0, 6.0);
    assert_eq!(run.metrics[1].domain, Some(Domain::A));

    let set = load_run_dirs(&[fixture_dir()], LoadOptions::default());
    assert!(set.report.is_clean(), "{}", set.report);
    let frame = set.runs_frame().unwrap();
    assert_eq!(
        frame
            .column("config.gca.positions")
            .unwrap()
            .str()
            .unwrap()
            .get(0),
        Some("[0]")
    );
    assert_eq!(
        frame.column("config.hidden").unwrap().i64().unwrap().get(0),
        Some(8)
    );

    let (stats, report) = set.tensor_stats_frame().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(stats.height(), 1);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap(),
    )
    .unwrap();
    let got = stats
        .column("cos_x_xprime")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!(
        (got - expected["cos_x_xprime"].as_f64().unwrap()).abs() < 1e-6,
        "{got}"
    );
    let par = stats
        .column("parallel_share")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!(
        (par - expected["parallel_share"].as_f64().unwrap()).abs() < 1e-6,
        "{par}"
    );
    assert_eq!(
        stats.column("n_valid").unwrap().i64().unwrap().get(0),
        expected["n_valid"].as_i64()
    );
    assert_eq!(
        stats.column("cos_x_y").unwrap().null_count(),
        1,
        "no y was mapped"
    );
}

fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(fixture_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn foreign_jsonl_metrics_and_bad_mappings_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("jsonl");
    copy_fixture(&good);
    std::fs::write(
        good.join("log.jsonl"),
        "{\"epoch\": 1, \"split\": \"test\", \"domain\": \"A\", \"NDCG@10\": 0.2}\n\
         {\"epoch\": 1, \"split\": \"test\", \"domain\": \"B\", \"NDCG@10\": 0.1}\n",
    )
    .unwrap();
    let manifest = std::fs::read_to_string(good.join("manifest.toml")).unwrap();
    let jsonl_manifest = manifest
        .replace("file = \"log.csv\"", "file = \"log.jsonl\"")
        .replace("epoch = \"ep\"\nsplit = \"phase\"\ndomain = \"dom\"\n", "")
        .replace("best_epoch = 3\n", "")
        // Its own id: the other copies of the fixture below keep the original one, and a run
        // tree loads one run per id.
        .replace(
            "run_id = \"torch-abxi-gca0-s1\"",
            "run_id = \"torch-abxi-gca0-s1-jsonl\"",
        );
    std::fs::write(good.join("manifest.toml"), &jsonl_manifest).unwrap();
    let run = load_run(&good).unwrap();
    assert_eq!(run.manifest.test[&Domain::A]["ndcg@10"].0, 0.2);

    // An unmapped split name, a tensor with the wrong dtype, and a future version.
    let bad_split = root.path().join("bad_split");
    copy_fixture(&bad_split);
    std::fs::write(
        bad_split.join("manifest.toml"),
        manifest.replace("tst = \"test\"\n", ""),
    )
    .unwrap();
    let bad_shape = root.path().join("bad_shape");
    copy_fixture(&bad_shape);
    // X' with a different length than X.
    ndarray_npy::write_npy(
        bad_shape.join("xp_a.npy"),
        &ndarray::Array3::<f32>::zeros((40, 4, 8)),
    )
    .unwrap();
    let future = root.path().join("future");
    copy_fixture(&future);
    std::fs::write(
        future.join("manifest.toml"),
        manifest.replace("format_version = 1", "format_version = 7"),
    )
    .unwrap();

    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    let reasons: Vec<String> = set
        .report
        .skipped
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.display()))
        .collect();
    assert_eq!(set.len(), 2, "{reasons:?}");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("bad_split") && r.contains("line 11") && r.contains("split `tst`")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("future") && r.contains("version 7")),
        "{reasons:?}"
    );
    let (stats, report) = set.tensor_stats_frame().unwrap();
    assert_eq!(
        stats.height(),
        1,
        "only the good run has consistent tensors"
    );
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(
        report.skipped[0]
            .1
            .contains("X is [40, 5, 8] but X' is [40, 4, 8]"),
        "{report}"
    );
    // A domain name that is neither A nor B and not mapped names itself and the fix.
    let other = tempfile::tempdir().unwrap();
    let bad_domain = other.path().join("bad_domain");
    copy_fixture(&bad_domain);
    std::fs::write(bad_domain.join("manifest.toml"), &jsonl_manifest).unwrap();
    std::fs::write(
        bad_domain.join("log.jsonl"),
        "{\"epoch\": 1, \"split\": \"test\", \"domain\": \"C\", \"NDCG@10\": 0.2}\n",
    )
    .unwrap();
    let err = load_run(&bad_domain).unwrap_err().to_string();
    assert!(
        err.contains("domain `C` is not A or B") && err.contains("[metrics.domain_values]"),
        "{err}"
    );
}
