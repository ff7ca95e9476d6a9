//! AutoCDSR training on the real 300-user food-kitchen slice: the differentiable objective is
//! the logged attention share, a_cd as a loss moves the attention the way its sign says, the
//! Pareto-MTL run logs its weights, and bad configurations are refused with the field named.

use std::path::Path;

use cdsr_lab::data::{self, ItemId};
use cdsr_lab::model::attention_share::{attention_share, domain_labels, ShareConfig};
use cdsr_lab::model::nn::{AttentionMap, AttentionStream, DType, Device, Tensor};
use cdsr_lab::model::ModelKind;
use cdsr_lab::train::autocdsr::acd_objective;
use cdsr_lab::train::config::{AcdObjective, AutoCdsrConfig};
use cdsr_lab::train::pareto::AcdWeighting;
use cdsr_lab::train::{train, RunConfig};
use ndarray::{Array2, Array4};
use rand::{Rng, SeedableRng};

mod common;
use common::{attention_smoke, last_valid_acd, metrics, project_root, quiet};

/// The smoke configuration as a SASRec merged-sequence model without GCA.
fn sasrec_smoke(auto: Option<AutoCdsrConfig>) -> RunConfig {
    let mut cfg = attention_smoke("data/food-kitchen-mini", ModelKind::Sasrec);
    cfg.train.epochs = 10;
    cfg.train.full_ranking = false;
    cfg.autocdsr = auto;
    cfg.validate().unwrap();
    cfg
}

#[test]
fn objective_equals_the_logged_share_on_real_sequences() {
    let ds = data::load(&project_root().join("data/food-kitchen-mini"))
        .unwrap()
        .dataset;
    // 6 real merged histories, left-padded to 12, plus one all-padding row and one row that
    // holds a single domain.
    let len = 12;
    let mut rows: Vec<Vec<ItemId>> = ds
        .users
        .iter()
        .take(6)
        .map(|u| {
            let items: Vec<ItemId> = u.items.iter().rev().take(len).rev().copied().collect();
            let mut r = vec![0; len - items.len()];
            r.extend(items);
            r
        })
        .collect();
    rows.push(vec![0; len]);
    let one_domain: Vec<ItemId> = ds.users[0]
        .items
        .iter()
        .copied()
        .filter(|&i| ds.domain_of(i) == Some(data::Domain::A))
        .take(3)
        .collect();
    let mut r = vec![0; len - one_domain.len()];
    r.extend(one_domain);
    rows.push(r);
    let batch = rows.len();
    let items = Array2::from_shape_vec((batch, len), rows.concat()).unwrap();

    // Two layers of seeded row-stochastic maps with 2 heads.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut maps = Vec::new();
    for layer in 0..2 {
        let mut p = Array4::<f32>::zeros((batch, 2, len, len));
        for mut row in p.rows_mut() {
            let w: Vec<f32> = (0..len).map(|_| rng.random::<f32>() + 0.01).collect();
            let s: f32 = w.iter().sum();
            for (x, v) in row.iter_mut().zip(w) {
                *x = v / s;
            }
        }
        maps.push((layer, p));
    }
    let tensors: Vec<AttentionMap> = maps
        .iter()
        .map(|(layer, p)| AttentionMap {
            layer: *layer,
            stream: AttentionStream::Merged,
            probs: Tensor::from_vec(p.iter().copied().collect(), p.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        })
        .collect();
    let (labels, valid) = domain_labels(&ds, items.view());
    let per_layer: Vec<f64> = maps
        .iter()
        .map(|(_, p)| {
            attention_share(
                p.view(),
                labels.view(),
                valid.view(),
                &ShareConfig::two_domains(),
            )
            .unwrap()
            .batch_mean_norm()
        })
        .collect();

    let all = AutoCdsrConfig::default();
    let got = acd_objective(&tensors, &ds, items.view(), &all)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(per_layer.iter().all(|&v| v > 0.05), "{per_layer:?}");
    assert!(
        (got - per_layer.iter().sum::<f64>()).abs() < 1e-5,
        "{got} vs {per_layer:?}"
    );

    let only_1 = AutoCdsrConfig {
        layers: vec![1],
        ..AutoCdsrConfig::default()
    };
    let got = acd_objective(&tensors, &ds, items.view(), &only_1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!((got - per_layer[1]).abs() < 1e-5);

    // Raw: sum over valid rows, averaged over heads and all samples.
    let raw = AutoCdsrConfig {
        objective: AcdObjective::Raw,
        layers: vec![0],
        ..AutoCdsrConfig::default()
    };
    let want = attention_share(
        maps[0].1.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap()
    .raw_head_mean()
    .mean()
    .unwrap();
    let got = acd_objective(&tensors, &ds, items.view(), &raw)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");

    // Only single-domain and padding rows: a_cd is exactly 0.
    let single = items.slice(ndarray::s![batch - 2.., ..]).to_owned();
    let t: Vec<AttentionMap> = tensors
        .iter()
        .map(|m| AttentionMap {
            probs: m.probs.narrow(0, batch - 2, 2).unwrap(),
            ..m.clone()
        })
        .collect();
    let got = acd_objective(&t, &ds, single.view(), &all)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(got, 0.0);

    // An item outside the dataset: the error names the sample and position.
    let mut bad = items.clone();
    bad[[2, 5]] = 10_000_000;
    let err = acd_objective(&tensors, &ds, bad.view(), &all)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 2") && err.contains("position 5"),
        "{err}"
    );
}

#[test]
fn acd_as_a_loss_moves_attention_by_its_sign() {
    let fixed = |weight: f64| {
        sasrec_smoke(Some(AutoCdsrConfig {
            weighting: AcdWeighting::Fixed { weight },
            ..AutoCdsrConfig::default()
        }))
    };
    let dir = tempfile::tempdir().unwrap();
    let penalised = train(&fixed(100.0), &dir.path().join("pen"), quiet()).unwrap();
    let rewarded = train(&fixed(-100.0), &dir.path().join("rew"), quiet()).unwrap();
    let (p, r) = (
        last_valid_acd(&metrics(&penalised.run_dir)),
        last_valid_acd(&metrics(&rewarded.run_dir)),
    );
    // Both start near 0.35 (near-uniform causal attention over mixed histories).
    assert!(
        p < 0.1 && r > 0.5,
        "penalising a_cd should remove cross-domain attention, rewarding it add: {p} vs {r}"
    );
    // The training log has the objective, the coefficient and no fallbacks.
    let train_rows: Vec<_> = metrics(&penalised.run_dir)
        .into_iter()
        .filter(|r| r["split"] == "train")
        .collect();
    assert_eq!(train_rows.len(), 10);
    for row in &train_rows {
        assert_eq!(row["acd_coefficient"].as_f64(), Some(100.0));
        assert_eq!(row["acd_fallback_steps"].as_f64(), Some(0.0));
        let a = row["a_cd"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{a}");
    }
}

#[test]
fn pareto_run_logs_weights_and_share() {
    let dir = tempfile::tempdir().unwrap();
    let base = train(&sasrec_smoke(None), &dir.path().join("base"), quiet()).unwrap();
    let auto = train(
        &sasrec_smoke(Some(AutoCdsrConfig::default())),
        &dir.path().join("auto"),
        quiet(),
    )
    .unwrap();
    assert!(base.complete && auto.complete);
    // Every run, AutoCDSR or not, logs the merged stream's a_cd at validation.
    let base_rows = metrics(&base.run_dir);
    let b = last_valid_acd(&base_rows);
    assert!(b > 0.0 && b < 1.0, "{b}");
    assert!(base_rows
        .iter()
        .filter(|r| r["split"] == "train")
        .all(|r| r["a_cd"].is_null()));
    let rows = metrics(&auto.run_dir);
    for row in rows.iter().filter(|r| r["split"] == "train") {
        let c = row["acd_coefficient"].as_f64().unwrap();
        let a = row["a_cd"].as_f64().unwrap();
        assert!(
            c > 0.0 && c.is_finite() && (0.0..=1.0).contains(&a),
            "{row}"
        );
        assert_eq!(row["acd_fallback_steps"].as_f64(), Some(0.0));
    }
    // With the public code's preferences, Pareto-MTL puts a positive weight on a_cd here,
    // and the cross-domain share falls well below the plain model's (0.35 -> ~0.08 on this
    // slice while the baseline stays at ~0.35).
    let a = last_valid_acd(&rows);
    assert!(a + 0.1 < b, "AutoCDSR a_cd {a}, baseline {b}");
}

#[test]
fn single_domain_model_refuses_gca() {
    let mut cfg = sasrec_smoke(None);
    cfg.model.kind = ModelKind::SasrecSingle;
    cfg.gca.positions = vec![0];
    // The config check refuses it (so `sweep plan` does, before anything trains) ...
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("gca.positions must be empty"), "{err}");
    assert!(err.contains("sasrec-single"), "{err}");
    // ... and so does training, without writing a run.
    let dir = tempfile::tempdir().unwrap();
    let err = train(&cfg, &dir.path().join("r"), quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("gca.positions must be empty"), "{err}");
    assert!(!dir.path().join("r").join("run.json").exists());
}

#[test]
fn bad_autocdsr_configs_name_the_field() {
    let mut cfg = sasrec_smoke(None);
    cfg.autocdsr = Some(AutoCdsrConfig {
        layers: vec![3],
        ..AutoCdsrConfig::default()
    });
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("autocdsr.layers contains 3"), "{err}");
    cfg.autocdsr = Some(AutoCdsrConfig {
        ib: Some(Default::default()),
        ..AutoCdsrConfig::default()
    });
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("autocdsr.ib"), "{err}");
}

#[test]
fn diagnostic_joins_single_and_cross_domain_runs_case_by_case() {
    use cdsr_lab::analysis::attention::{share_by_cell, write_success_cells};
    let dir = tempfile::tempdir().unwrap();
    let mut single = sasrec_smoke(None);
    single.model.kind = ModelKind::SasrecSingle;
    single.train.epochs = 3;
    let mut cross = sasrec_smoke(Some(AutoCdsrConfig::default()));
    cross.model.layers = 2;
    cross.train.epochs = 3;
    let s = train(&single, &dir.path().join("single"), quiet()).unwrap();
    let c = train(&cross, &dir.path().join("cross"), quiet()).unwrap();

    // Every run writes its test cases; the single-domain model has no merged stream.
    let read = |p: &Path| {
        polars::prelude::ParquetReader::new(
            std::fs::File::open(p.join("test_cases.parquet")).unwrap(),
        )
        .finish()
        .unwrap()
    };
    use polars::prelude::SerReader;
    let (ts, tc) = (read(&s.run_dir), read(&c.run_dir));
    assert_eq!(ts.height(), tc.height());
    assert_eq!(ts.column("a_cd").unwrap().null_count(), ts.height());
    assert_eq!(tc.column("a_cd@1").unwrap().null_count(), 0);
    // The per-case hits reproduce the run's HR@10 in each domain.
    let domains: Vec<String> = tc
        .column("domain")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|d| d.unwrap().to_owned())
        .collect();
    let hits: Vec<bool> = tc
        .column("hit@10")
        .unwrap()
        .bool()
        .unwrap()
        .iter()
        .map(Option::unwrap)
        .collect();
    let test = c.test.unwrap();
    for (d, hr) in [("A", test.a.hr_10), ("B", test.b.hr_10)] {
        let (n, h) = domains
            .iter()
            .zip(&hits)
            .filter(|(x, _)| *x == d)
            .fold((0, 0), |(n, h), (_, &hit)| (n + 1, h + hit as usize));
        assert!(
            n > 0 && (h as f64 / n as f64 - hr).abs() < 1e-9,
            "{d}: {h}/{n} vs {hr}"
        );
    }

    let samples = write_success_cells(&s.run_dir, &c.run_dir).unwrap();
    assert_eq!(
        samples.height(),
        2 * tc.height(),
        "one row per case and layer"
    );
    assert!(c.run_dir.join("samples.parquet").exists());
    let cells = share_by_cell(&samples, &["domain", "layer"], 0.95).unwrap();
    assert!(cells.height() >= 4, "{cells}");

    // Runs evaluated on different cases are refused, saying where they differ.
    let path = s.run_dir.join("test_cases.parquet");
    let mut fewer = ts.slice(0, ts.height() - 1);
    cdsr_lab::runs::write_parquet(&path, &mut fewer).unwrap();
    let err = write_success_cells(&s.run_dir, &c.run_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not evaluated on the same cases"), "{err}");
    let flipped: Vec<&str> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| match (i, d.as_str()) {
            (0, "A") => "B",
            (0, _) => "A",
            (_, d) => d,
        })
        .collect();
    let mut other = ts.clone();
    other
        .replace(
            "domain",
            polars::prelude::Column::new("domain".into(), flipped),
        )
        .unwrap();
    cdsr_lab::runs::write_parquet(&path, &mut other).unwrap();
    let err = write_success_cells(&s.run_dir, &c.run_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("test case 0 is in domain"), "{err}");
    // A mistyped column names the file and the column.
    let mut mistyped = ts.clone();
    mistyped
        .replace(
            "hit@10",
            polars::prelude::Column::new("hit@10".into(), vec![1i64; ts.height()]),
        )
        .unwrap();
    cdsr_lab::runs::write_parquet(&path, &mut mistyped).unwrap();
    let err = write_success_cells(&s.run_dir, &c.run_dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("column `hit@10`"),
        "{err}"
    );

    // A run without test cases is named in the error.
    std::fs::remove_file(&path).unwrap();
    let err = write_success_cells(&s.run_dir, &c.run_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("test_cases.parquet"), "{err}");
}
