//! The BERT4Rec-style masked model and AutoCDSR+'s information-bottleneck (IB) tokens, on real
//! sequences of the repository's slices: attention runs both ways, the domains' streams only
//! meet through the IB tokens, the differentiable IB objective equals the logged share, and
//! training (plain, and with the IB share as a second objective) works end to end on
//! food-kitchen and KuaiRand-1K.

use std::path::Path;

use cdsr_lab::data::{self, Dataset, Domain, ItemId};
use cdsr_lab::model::autocdsr::{ib_case_share, ib_streams};
use cdsr_lab::model::nn::{AttentionMap, AttentionStream, Ctx, DType, Device};
use cdsr_lab::model::{GcaConfig, IbConfig, Model, ModelConfig, ModelKind, SeqBatch};
use cdsr_lab::train::autocdsr::ib_objective;
use cdsr_lab::train::config::AutoCdsrConfig;
use cdsr_lab::train::pareto::AcdWeighting;
use cdsr_lab::train::{train, RunConfig, TrainOptions};
use rand::SeedableRng;

mod common;
use common::{attention_smoke, last_valid_acd, metrics, project_root, quiet};

fn food_kitchen() -> Dataset {
    data::load(&project_root().join("data/food-kitchen-mini"))
        .unwrap()
        .dataset
}

const LEN: usize = 12;

/// The last `LEN` items of the first real users, left padded, the last item replaced by its
/// domain's mask token; plus an all-padding row and a row of one domain only.
fn masked_rows(ds: &Dataset) -> Vec<Vec<ItemId>> {
    let mut rows: Vec<Vec<ItemId>> = ds
        .users
        .iter()
        .filter(|u| u.items.len() >= 4)
        .take(5)
        .map(|u| {
            let items: Vec<ItemId> = u.items.iter().rev().take(LEN).rev().copied().collect();
            let mut r = vec![0; LEN - items.len()];
            r.extend(items);
            let last = r[LEN - 1];
            r[LEN - 1] = ds.mask_token(ds.domain_of(last).unwrap());
            r
        })
        .collect();
    rows.push(vec![0; LEN]);
    let mut single = vec![0; LEN];
    single[LEN - 3..].copy_from_slice(&[3, 5, ds.mask_token(Domain::A)]);
    rows.push(single);
    rows
}

fn model(kind: ModelKind, ib: Option<&IbConfig>, ds: &Dataset) -> Model {
    let cfg = ModelConfig {
        kind,
        d_model: 16,
        heads: 2,
        ffn_hidden: 32,
        layers: 2,
        dropout: 0.0,
        max_len: LEN,
        ..ModelConfig::default()
    };
    Model::new(
        &cfg,
        &GcaConfig::default(),
        ib,
        ds.vocab_size(),
        ds.n_items[0],
        3,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

/// Output `[b, l, d]` of every position (head A everywhere) and the recorded attention maps.
fn forward(m: &Model, rows: &[Vec<ItemId>]) -> (Vec<Vec<Vec<f32>>>, Vec<AttentionMap>) {
    let td = vec![vec![Some(0); LEN]; rows.len()];
    let batch = SeqBatch::new(rows, rows, rows, &td, LEN, DType::F32, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ctx = Ctx::new(false, &mut rng);
    ctx.attn_probs = Some(Vec::new());
    let h = m.forward(&batch, &mut ctx).unwrap();
    (h.to_vec3::<f32>().unwrap(), ctx.attn_probs.unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn masked_model_attends_both_ways_and_sasrec_only_backwards() {
    let ds = food_kitchen();
    let rows = masked_rows(&ds);
    // Another item of the same domain at the second-to-last position of row 0.
    let mut changed = rows.clone();
    let t = LEN - 2;
    let old = changed[0][t];
    let d = ds.domain_of(old).unwrap();
    changed[0][t] = *ds.item_range(d).start() + (old == *ds.item_range(d).start()) as ItemId;
    for (kind, sees_later) in [(ModelKind::Bert4rec, true), (ModelKind::Sasrec, false)] {
        let m = model(kind, None, &ds);
        // SASRec has no mask tokens: give it the plain rows.
        let plain = |r: &Vec<Vec<ItemId>>| -> Vec<Vec<ItemId>> {
            r.iter()
                .map(|row| {
                    row.iter()
                        .map(|&i| if i >= ds.vocab_size() as ItemId { 1 } else { i })
                        .collect()
                })
                .collect()
        };
        let (a, b) = if kind.is_masked() {
            (forward(&m, &rows).0, forward(&m, &changed).0)
        } else {
            (
                forward(&m, &plain(&rows)).0,
                forward(&m, &plain(&changed)).0,
            )
        };
        let earlier = max_diff(&a[0][t - 2], &b[0][t - 2]);
        assert_eq!(earlier > 1e-6, sees_later, "{kind:?}: change {earlier}");
        assert!(
            max_diff(&a[1][t], &b[1][t]) == 0.0,
            "other samples untouched"
        );
    }
}

#[test]
fn domains_meet_only_through_the_ib_tokens() {
    let ds = food_kitchen();
    let rows = masked_rows(&ds);
    // Row 0 with one B token replaced by another B item.
    let r0 = &rows[0];
    let tb = (0..LEN)
        .find(|&t| ds.domain_of_token(r0[t]) == Some(Domain::B))
        .expect("a B token in row 0");
    let a_positions: Vec<usize> = (0..LEN)
        .filter(|&t| ds.domain_of_token(r0[t]) == Some(Domain::A))
        .collect();
    assert!(!a_positions.is_empty());
    let mut changed = rows.clone();
    let first_b = *ds.item_range(Domain::B).start();
    changed[0][tb] = if r0[tb] == first_b {
        first_b + 1
    } else {
        first_b
    };
    for (comm, meet) in [(vec![], false), (vec![0], true)] {
        let ib = IbConfig {
            tokens: 2,
            comm_layers: comm.clone(),
        };
        let m = model(ModelKind::Bert4rec, Some(&ib), &ds);
        let (a, b) = (forward(&m, &rows).0, forward(&m, &changed).0);
        let at_a = a_positions
            .iter()
            .map(|&t| max_diff(&a[0][t], &b[0][t]))
            .fold(0.0, f32::max);
        assert_eq!(
            at_a > 1e-6,
            meet,
            "comm_layers {comm:?}: A outputs moved {at_a}"
        );
        assert!(
            max_diff(&a[0][tb], &b[0][tb]) > 1e-6,
            "the changed B token's own output moves"
        );
        assert!(a.iter().flatten().flatten().all(|v| v.is_finite()));
    }
}

#[test]
fn ib_objective_equals_the_logged_share() {
    let ds = food_kitchen();
    let rows = masked_rows(&ds);
    let ib = IbConfig {
        tokens: 3,
        comm_layers: vec![0],
    };
    let m = model(ModelKind::Bert4rec, Some(&ib), &ds);
    let (_, attn) = forward(&m, &rows);
    let flat: Vec<ItemId> = rows.iter().flatten().copied().collect();
    let items = ndarray::ArrayView2::from_shape((rows.len(), LEN), &flat).unwrap();
    let cfg = AutoCdsrConfig {
        ib: Some(ib.clone()),
        ..AutoCdsrConfig::default()
    };
    let got = ib_objective(&attn, &ds, items, &cfg)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let streams = ib_streams(&ds, items).unwrap();
    // the padding row has no tokens, the single-domain row three A tokens (mask included)
    let count = |d: usize, b: usize| streams[d].row(b).iter().filter(|&&v| v).count();
    assert_eq!([count(0, 5), count(1, 5)], [0, 0]);
    assert_eq!([count(0, 6), count(1, 6)], [3, 0]);
    // each stream is as wide as the batch's most tokens of its domain, not the merged length
    for (d, stream) in streams.iter().enumerate() {
        let most = (0..rows.len()).map(|b| count(d, b)).max().unwrap();
        assert_eq!(stream.ncols(), most.max(1));
        assert!(stream.ncols() < LEN || d == 0);
    }
    let host = |layer: usize, stream: AttentionStream| {
        let p = &attn
            .iter()
            .find(|m| m.layer == layer && m.stream == stream)
            .unwrap()
            .probs;
        let dims = p.dims4().unwrap();
        ndarray::Array4::from_shape_vec(dims, p.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .unwrap()
    };
    let mut want = 0.0;
    for l in 0..2 {
        let (a, b) = (host(l, AttentionStream::A), host(l, AttentionStream::B));
        let per_case = ib_case_share([a.view(), b.view()], 3, &streams).unwrap();
        assert_eq!(per_case[5], None, "an all-padding row has no share");
        let v: Vec<f64> = per_case.into_iter().flatten().collect();
        assert!(v.iter().all(|s| (0.0..=1.0).contains(s)));
        want += v.iter().sum::<f64>() / v.len() as f64;
    }
    assert!(want > 0.0);
    assert!(
        (got - want).abs() < 1e-5,
        "objective {got} vs logged {want}"
    );

    // an id outside the items and mask tokens is named by sample and position
    let mut bad = flat.clone();
    bad[2 * LEN + 4] = ds.vocab_size() as ItemId + 5;
    let bad = ndarray::ArrayView2::from_shape((rows.len(), LEN), &bad).unwrap();
    let err = ib_objective(&attn, &ds, bad, &cfg).unwrap_err().to_string();
    assert!(err.contains("sample 2, position 4"), "{err}");
}

fn bert4rec_smoke(data: &str, auto: Option<AutoCdsrConfig>) -> RunConfig {
    let mut cfg = attention_smoke(data, ModelKind::Bert4rec);
    cfg.model.layers = 2;
    cfg.train.epochs = 8;
    cfg.train.full_ranking = true;
    cfg.autocdsr = auto;
    cfg.validate().unwrap();
    cfg
}

#[test]
fn ib_share_as_a_loss_moves_attention_off_the_ib_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let ib = IbConfig {
        tokens: 4,
        comm_layers: vec![0, 1],
    };
    let plain = bert4rec_smoke(
        "data/food-kitchen-mini",
        Some(AutoCdsrConfig {
            weighting: AcdWeighting::Fixed { weight: 0.0 },
            ib: Some(ib.clone()),
            ..AutoCdsrConfig::default()
        }),
    );
    let pushed = bert4rec_smoke(
        "data/food-kitchen-mini",
        Some(AutoCdsrConfig {
            weighting: AcdWeighting::Fixed { weight: 100.0 },
            ib: Some(ib),
            ..AutoCdsrConfig::default()
        }),
    );
    let mut shares = Vec::new();
    for cfg in [&plain, &pushed] {
        let s = train(cfg, &tmp.path().join(cfg.run_id()), quiet()).unwrap();
        let rows = metrics(&s.run_dir);
        assert!(rows
            .iter()
            .any(|r| r["split"] == "train" && r["a_cd"].is_number()));
        let test = s.test.expect("test metrics");
        assert!(test.a.ndcg_10.is_finite() && test.b.ndcg_10.is_finite());
        shares.push(last_valid_acd(&rows));
    }
    assert!(
        shares[1] < 0.5 * shares[0],
        "share on IB tokens: weight 0 -> {:.3}, weight 100 -> {:.3}",
        shares[0],
        shares[1]
    );
}

#[test]
fn killed_autocdsr_plus_run_resumes_to_the_uninterrupted_result() {
    // Masking, negatives and dropout are seeded per step, the IB tokens and Pareto state live
    // in the checkpoint: a run stopped after one epoch and resumed ends where one run ends.
    let mut cfg = bert4rec_smoke(
        "data/food-kitchen-mini",
        Some(AutoCdsrConfig {
            ib: Some(IbConfig {
                tokens: 2,
                comm_layers: vec![0],
            }),
            ..AutoCdsrConfig::default()
        }),
    );
    cfg.train.epochs = 3;
    let tmp = tempfile::tempdir().unwrap();
    let full = train(&cfg, &tmp.path().join("full"), quiet()).unwrap();
    let dir = tmp.path().join("killed");
    let first = train(
        &cfg,
        &dir,
        TrainOptions {
            stop_after_epochs: Some(1),
            ..quiet()
        },
    )
    .unwrap();
    assert!(!first.complete);
    let resumed = train(
        &cfg,
        &dir,
        TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(resumed.test.unwrap(), full.test.unwrap());
    assert_eq!(resumed.test_full.unwrap(), full.test_full.unwrap());
    let acd =
        |d: &Path| -> Vec<Option<f64>> { metrics(d).iter().map(|r| r["a_cd"].as_f64()).collect() };
    assert_eq!(acd(&resumed.run_dir), acd(&full.run_dir));
}

#[test]
fn bert4rec_trains_on_kuairand_by_file_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = bert4rec_smoke("data/kuairand-1k-mini", None);
    cfg.model.max_len = 30;
    cfg.train.epochs = 4;
    let s = train(&cfg, &tmp.path().join(cfg.run_id()), quiet()).unwrap();
    let rows = metrics(&s.run_dir);
    let losses: Vec<f64> = rows
        .iter()
        .filter(|r| r["split"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses[losses.len() - 1] < 0.9 * losses[0],
        "training loss {losses:?}"
    );
    // Every user of the testing file set is one test case, its last item masked; the
    // merged stream's share is logged per case (mask tokens carry their domain).
    let loaded = data::load(&project_root().join("data/kuairand-1k-mini")).unwrap();
    let split = data::Split::by_file_sets(&loaded.dataset, loaded.file_sets.as_ref().unwrap());
    let cases = cdsr_lab::analysis::attention::read_test_cases(&s.run_dir).unwrap();
    assert_eq!(cases.height(), split.test.len());
    let acd = cases.column("a_cd").unwrap().f64().unwrap();
    assert_eq!(acd.null_count(), 0);
    assert!(acd.into_no_null_iter().all(|v| (0.0..=2.0).contains(&v)));
    assert!(
        s.test.is_some() && s.test_full.is_some(),
        "sampled and full ranking"
    );
}

#[test]
fn configs_name_what_a_masked_or_ib_model_refuses() {
    let mut cfg = bert4rec_smoke("data/food-kitchen-mini", None);
    cfg.model.kind = ModelKind::Sasrec;
    cfg.autocdsr = Some(AutoCdsrConfig {
        ib: Some(IbConfig::default()),
        ..AutoCdsrConfig::default()
    });
    cfg.model.layers = 3;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("autocdsr.ib") && err.contains("bert4rec"),
        "{err}"
    );
    cfg.autocdsr = None;
    cfg.model.mask_prob = Some(0.2);
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("model.mask_prob"));
    cfg.model.kind = ModelKind::Bert4rec;
    cfg.model.mask_prob = Some(1.5);
    assert!(cfg.validate().unwrap_err().to_string().contains("(0, 1)"));
    cfg.model.mask_prob = None;
    cfg.gca.positions = vec![0];
    let tmp = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        train(&cfg, &tmp.path().join("x"), quiet()).unwrap_err()
    );
    assert!(err.contains("gca.positions"), "{err}");
}
