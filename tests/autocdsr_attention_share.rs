//! Cross-domain attention share a_cd (cdsr_lab::model::attention_share) on hand-made attention
//! maps with hand-computed values, and its bad-input behaviour.

use cdsr_lab::model::attention_share::{
    attention_share, cross_domain_mask, ib_share, valid_query_rows, AttentionShare,
    AttentionShareError, ShareConfig, UnknownDomain,
};
use ndarray::{array, Array2, Array4, Axis};

fn close(a: f64, b: f64) -> bool {
    // the maps are f32: 0.3f32 is 0.3 to ~1e-8
    (a - b).abs() < 1e-6
}

/// 3 samples x 2 heads x 4 positions.
/// sample 0: A B A pad; sample 1: all padding; sample 2: B B B B (one domain).
fn maps() -> (Array4<f32>, Array2<i64>, Array2<bool>) {
    #[rustfmt::skip]
    let p: Vec<f32> = vec![
        // sample 0, head 0
        1.0, 0.0, 0.0, 0.0,
        0.5, 0.5, 0.0, 0.0,
        0.2, 0.3, 0.4, 0.1,   // 0.1 on the padding key: not counted
        0.25, 0.25, 0.25, 0.25, // padding row: not counted
        // sample 0, head 1
        0.6, 0.4, 0.0, 0.0,
        0.1, 0.9, 0.0, 0.0,
        0.3, 0.5, 0.2, 0.0,
        0.0, 1.0, 0.0, 0.0,
        // sample 1 (all padding), heads 0 and 1: arbitrary mass, all excluded
        0.5, 0.5, 0.0, 0.0,  0.5, 0.5, 0.0, 0.0,  0.5, 0.5, 0.0, 0.0,  0.5, 0.5, 0.0, 0.0,
        0.0, 0.0, 0.5, 0.5,  0.0, 0.0, 0.5, 0.5,  0.0, 0.0, 0.5, 0.5,  0.0, 0.0, 0.5, 0.5,
        // sample 2 (one domain)
        0.25, 0.25, 0.25, 0.25,  0.25, 0.25, 0.25, 0.25,  0.25, 0.25, 0.25, 0.25,  0.25, 0.25, 0.25, 0.25,
        1.0, 0.0, 0.0, 0.0,  0.0, 1.0, 0.0, 0.0,  0.0, 0.0, 1.0, 0.0,  0.0, 0.0, 0.0, 1.0,
    ];
    let attn = Array4::from_shape_vec((3, 2, 4, 4), p).unwrap();
    let labels = array![[0i64, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]];
    let valid = array![
        [true, true, true, false],
        [false, false, false, false],
        [true, true, true, true]
    ];
    (attn, labels, valid)
}

#[test]
fn hand_made_maps_exact_values() {
    let (attn, labels, valid) = maps();
    let s = attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap();
    // sample 0 head 0: rows 0 (A): 0; 1 (B): 0.5 on A; 2 (A): 0.3 on B  -> 0.8
    // sample 0 head 1: 0.4 + 0.1 + 0.5 = 1.0
    assert!(close(s.raw[[0, 0]], 0.8), "{}", s.raw);
    assert!(close(s.raw[[0, 1]], 1.0));
    assert!(close(s.norm[[0, 0]], 0.8 / 3.0));
    assert!(close(s.norm[[0, 1]], 1.0 / 3.0));
    // all-padding sample: 0, not NaN; single-domain sample: 0
    for b in [1, 2] {
        for h in 0..2 {
            assert_eq!(s.raw[[b, h]], 0.0);
            assert_eq!(s.norm[[b, h]], 0.0);
        }
    }
    assert_eq!(s.valid_rows.to_vec(), vec![3, 0, 4]);
    // averages over heads
    assert!(close(s.raw_head_mean()[0], 0.9));
    assert!(close(s.norm_head_mean()[0], 0.3));
    // batch mean over samples with valid rows (0 and 2): (0.3 + 0) / 2
    assert!(close(s.batch_mean_norm(), 0.15));
}

#[test]
fn mask_based_objective_equals_the_reported_share() {
    let (attn, labels, valid) = maps();
    let cfg = ShareConfig::two_domains();
    let mask = cross_domain_mask(labels.view(), valid.view(), &cfg).unwrap();
    assert_eq!(
        mask.index_axis(Axis(0), 0),
        array![
            [0.0f32, 1.0, 0.0, 0.0],
            [1.0, 0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0]
        ]
    );
    let s = attention_share(attn.view(), labels.view(), valid.view(), &cfg).unwrap();
    for b in 0..3 {
        for h in 0..2 {
            let m =
                &attn.index_axis(Axis(0), b).index_axis(Axis(0), h) * &mask.index_axis(Axis(0), b);
            assert!(close(m.sum() as f64, s.raw[[b, h]]), "b{b} h{h}");
        }
    }
    let rows = valid_query_rows(labels.view(), valid.view(), &cfg).unwrap();
    assert_eq!(rows, s.valid_rows);
}

#[test]
fn layers_sum() {
    let (attn, labels, valid) = maps();
    let cfg = ShareConfig::two_domains();
    let s = attention_share(attn.view(), labels.view(), valid.view(), &cfg).unwrap();
    let total = AttentionShare::sum_layers(&[s.clone(), s.clone()]).unwrap();
    assert!(close(total.raw[[0, 1]], 2.0));
    assert!(close(total.norm[[0, 0]], 1.6 / 3.0));
    assert!(AttentionShare::sum_layers(&[]).is_none());
}

#[test]
fn labels_outside_the_configured_domains() {
    let (attn, mut labels, valid) = maps();
    labels[[0, 2]] = 7;
    let err = attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        AttentionShareError::UnknownDomain {
            sample: 0,
            position: 2,
            label: 7,
            configured: vec![0, 1]
        }
    );
    assert!(
        err.to_string()
            .contains("sample 0, position 2: domain label 7"),
        "{err}"
    );
    // a padding position may carry any label
    labels[[0, 2]] = 0;
    labels[[0, 3]] = -5;
    assert!(attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains()
    )
    .is_ok());
    labels[[0, 3]] = 0;

    labels[[0, 2]] = 7;
    // Exclude: position 2 is neither row nor key. head 0: row 1 puts 0.5 on A -> 0.5 over 2 rows
    let cfg = ShareConfig {
        domains: vec![0, 1],
        unknown: UnknownDomain::Exclude,
    };
    let s = attention_share(attn.view(), labels.view(), valid.view(), &cfg).unwrap();
    assert!(close(s.raw[[0, 0]], 0.5));
    assert!(close(s.norm[[0, 0]], 0.25));
    assert_eq!(s.valid_rows[0], 2);
    // Keep: label 7 is a domain of its own. head 0: row 1 -> 0.5 (A) + 0 (7); row 2 (7) -> 0.2 + 0.3
    let cfg = ShareConfig {
        domains: vec![0, 1],
        unknown: UnknownDomain::Keep,
    };
    let s = attention_share(attn.view(), labels.view(), valid.view(), &cfg).unwrap();
    assert!(close(s.raw[[0, 0]], 1.0));
    assert!(close(s.norm[[0, 0]], 1.0 / 3.0));
}

#[test]
fn kuairand_style_labels() {
    // domains 9 and 4, as configured for KuaiRand-1K
    let attn = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0f32, 0.0, 0.75, 0.25]).unwrap();
    let cfg = ShareConfig {
        domains: vec![9, 4],
        unknown: UnknownDomain::Error,
    };
    let s = attention_share(
        attn.view(),
        array![[9i64, 4]].view(),
        array![[true, true]].view(),
        &cfg,
    )
    .unwrap();
    assert!(close(s.raw[[0, 0]], 0.75));
    assert!(close(s.norm[[0, 0]], 0.375));
}

#[test]
fn bad_shapes_and_values_are_errors() {
    let (attn, labels, valid) = maps();
    let cfg = ShareConfig::two_domains();
    let short = labels.slice(ndarray::s![.., ..3]).to_owned();
    let err = attention_share(attn.view(), short.view(), valid.view(), &cfg).unwrap_err();
    assert_eq!(
        err,
        AttentionShareError::Shape {
            what: "domain labels",
            got: vec![3, 3],
            expected: [3, 4]
        }
    );
    let rect = Array4::<f32>::zeros((1, 1, 2, 3));
    assert!(matches!(
        attention_share(rect.view(), labels.view(), valid.view(), &cfg),
        Err(AttentionShareError::NotSquare { .. })
    ));
    let mut nan = attn.clone();
    nan[[0, 1, 2, 1]] = f32::NAN;
    assert!(matches!(
        attention_share(nan.view(), labels.view(), valid.view(), &cfg),
        Err(AttentionShareError::NonFinite {
            sample: 0,
            head: 1,
            query: 2,
            key: 1,
            ..
        })
    ));
    // a NaN in a padding row is never read; one on a padding key of a valid row is reported
    let mut nan = attn.clone();
    nan[[0, 0, 3, 0]] = f32::NAN;
    assert!(attention_share(nan.view(), labels.view(), valid.view(), &cfg).is_ok());
    nan[[0, 0, 2, 3]] = f32::NAN;
    assert!(matches!(
        attention_share(nan.view(), labels.view(), valid.view(), &cfg),
        Err(AttentionShareError::NonFinite {
            sample: 0,
            head: 0,
            query: 2,
            key: 3,
            ..
        })
    ));
}

#[test]
fn ib_share_by_hand() {
    // 2 IB tokens then 3 sequence positions (last is padding); one head
    #[rustfmt::skip]
    let p: Vec<f32> = vec![
        0.5, 0.5, 0.0, 0.0, 0.0,   // IB rows: never query rows
        0.5, 0.5, 0.0, 0.0, 0.0,
        0.3, 0.1, 0.6, 0.0, 0.0,   // seq 0: 0.4 on IB
        0.0, 0.2, 0.3, 0.5, 0.0,   // seq 1: 0.2 on IB
        0.9, 0.1, 0.0, 0.0, 0.0,   // padding: excluded
    ];
    let attn = Array4::from_shape_vec((1, 1, 5, 5), p).unwrap();
    let s = ib_share(attn.view(), 2, array![[true, true, false]].view()).unwrap();
    assert!(close(s.raw[[0, 0]], 0.6));
    assert!(close(s.norm[[0, 0]], 0.3));
    assert_eq!(s.valid_rows[0], 2);
    // all-padding sample
    let s = ib_share(attn.view(), 2, array![[false, false, false]].view()).unwrap();
    assert_eq!((s.raw[[0, 0]], s.norm[[0, 0]]), (0.0, 0.0));
    assert_eq!(
        ib_share(attn.view(), 6, array![[true]].view()).unwrap_err(),
        AttentionShareError::TooManyIbTokens { n_ib: 6, len: 5 }
    );
}

/// Real sequences (food-kitchen-mini, the repo's slice of ABXI's food-kitchen): under uniform
/// causal attention, row i's cross share is (#other-domain items among 0..=i) / (i + 1), which
/// the test counts directly from the item ids.
#[test]
fn uniform_causal_attention_on_food_kitchen_mini() {
    use cdsr_lab::data::{abxi, repo_data_dir};
    use cdsr_lab::model::attention_share::domain_labels;
    let ds = abxi::load(&repo_data_dir().join("food-kitchen-mini")).unwrap();
    let len = 50;
    let users = &ds.users[..64];
    // left-padded rows of the last `len` items
    let mut items = Array2::<u32>::zeros((users.len(), len));
    for (b, u) in users.iter().enumerate() {
        let tail = &u.items[u.items.len().saturating_sub(len)..];
        for (k, &it) in tail.iter().enumerate() {
            items[[b, len - tail.len() + k]] = it;
        }
    }
    let (labels, valid) = domain_labels(&ds, items.view());
    // head 0: uniform over valid keys j <= i; head 1: attends to itself only
    let mut attn = Array4::<f32>::zeros((users.len(), 2, len, len));
    for b in 0..users.len() {
        for i in 0..len {
            let keys: Vec<usize> = (0..=i).filter(|&j| valid[[b, j]]).collect();
            for &j in &keys {
                attn[[b, 0, i, j]] = 1.0 / keys.len() as f32;
            }
            attn[[b, 1, i, i]] = 1.0;
        }
    }
    let s = attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap();
    let n_a = ds.n_items[0] as u32;
    for (b, u) in users.iter().enumerate() {
        let tail = &u.items[u.items.len().saturating_sub(len)..];
        let mut want = 0.0f64;
        for i in 0..tail.len() {
            let other = tail[..=i]
                .iter()
                .filter(|&&x| (x <= n_a) != (tail[i] <= n_a))
                .count();
            want += other as f64 / (i + 1) as f64;
        }
        assert!(
            (s.raw[[b, 0]] - want).abs() < 1e-4,
            "user {b}: {} vs {want}",
            s.raw[[b, 0]]
        );
        assert!((s.norm[[b, 0]] - want / tail.len() as f64).abs() < 1e-6);
        assert_eq!(s.raw[[b, 1]], 0.0);
        assert_eq!(s.valid_rows[b], tail.len());
        // every food-kitchen user has both domains: the uniform share is strictly positive
        assert!(s.norm[[b, 0]] > 0.0);
    }

    // one domain only (the A subsequence of the same users): share 0
    let a_only = items.mapv(|x| if x <= n_a { x } else { 0 });
    let (labels, valid) = domain_labels(&ds, a_only.view());
    let s = attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap();
    assert!(s.raw.iter().all(|&x| x == 0.0));

    // an id outside the item space is reported with its sample and position
    let mut bad = items.clone();
    bad[[3, 49]] = (ds.n_items[0] + ds.n_items[1] + 7) as u32;
    let (labels, valid) = domain_labels(&ds, bad.view());
    let err = attention_share(
        attn.view(),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AttentionShareError::UnknownDomain {
            sample: 3,
            position: 49,
            label: -1,
            ..
        }
    ));
}
