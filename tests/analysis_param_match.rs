//! `analysis::param_match` on closed-form cases and on a runs frame written by RunWriter.
#[path = "fixtures/food_kitchen_runs.rs"]
mod fk;

use cdsr_lab::analysis::param_match::*;
use cdsr_lab::runs::{load_runs, LoadOptions};
use polars::prelude::*;

fn pt(id: &str, params: f64, acc: f64) -> ParamPoint {
    ParamPoint {
        run_id: id.into(),
        params,
        accuracy: acc,
    }
}

#[test]
fn exact_log_linear_family_gives_closed_form_ratios() {
    // acc = 0.02 ln(p) - 0.1 exactly.
    let f = |p: f64| 0.02 * p.ln() - 0.1;
    let base: Vec<ParamPoint> = [1e6, 1.5e6, 2e6, 3e6, 4e6]
        .iter()
        .map(|&p| pt(&format!("b{p}"), p, f(p)))
        .collect();
    let fit = LogLinearFit::fit(
        &base
            .iter()
            .map(|b| (b.params, b.accuracy))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!((fit.slope - 0.02).abs() < 1e-12 && (fit.intercept + 0.1).abs() < 1e-10);
    assert!(fit.residual_se < 1e-12 && (fit.r_squared - 1.0).abs() < 1e-12);
    // A 2.5M GCA run as accurate as a 3.5M baseline: ratio 1.4 (the paper's claim).
    let gca = [pt("g", 2.5e6, f(3.5e6)), pt("worse", 2.5e6, f(2.0e6))];
    let m = param_match(&gca, &base, 0.95).unwrap();
    assert!((m[0].efficiency_ratio.unwrap() - 1.4).abs() < 1e-9);
    assert!((m[0].params_needed.unwrap() - 3.5e6).abs() < 1e-3);
    assert_eq!(
        m[0].nearest_baseline.params, 3e6,
        "|ln(3/2.5)| = 0.182 < |ln(2/2.5)| = 0.223"
    );
    assert!((m[0].accuracy_gain - (f(3.5e6) - f(3e6))).abs() < 1e-12);
    // An exact fit has a zero-width band: the interval collapses onto the ratio.
    let i = m[0].ratio_interval.unwrap();
    assert!(
        (i.low - 1.4).abs() < 1e-6 && (i.high - 1.4).abs() < 1e-6,
        "{i:?}"
    );
    assert!(
        (m[1].efficiency_ratio.unwrap() - 0.8).abs() < 1e-9,
        "below 1: GCA loses"
    );
}

#[test]
fn seeds_of_the_nearest_size_are_averaged_and_a_falling_family_gives_no_ratio() {
    // Three seeds at 1M and 2M, one at 4M; acc = 0.02 ln(p) - 0.1 plus a seed offset.
    let f = |p: f64| 0.02 * p.ln() - 0.1;
    let mut base = Vec::new();
    for (p, offsets) in [
        (1e6, &[0.0, 0.01, -0.01][..]),
        (2e6, &[0.003, 0.006, 0.0]),
        (4e6, &[0.0]),
    ] {
        for (s, o) in offsets.iter().enumerate() {
            base.push(pt(&format!("b{p}-s{s}"), p, f(p) + o));
        }
    }
    let gca = [pt("g", 2.1e6, f(2e6) + 0.01)];
    let m = param_match(&gca, &base, 0.95).unwrap();
    // Against the mean of the 2M seeds (f(2M) + 0.003), not against whichever seed came first.
    assert_eq!(
        (m[0].nearest_baseline.params, m[0].nearest_baseline_runs),
        (2e6, 3)
    );
    assert!((m[0].nearest_baseline.accuracy - (f(2e6) + 0.003)).abs() < 1e-12);
    assert!((m[0].accuracy_gain - 0.007).abs() < 1e-12);
    assert!(m[0].efficiency_ratio.unwrap() > 1.0);

    // Baselines that get worse with size (a small slice's noise) define no efficiency: no
    // ratio and no interval, instead of an extrapolated 1e59.
    let falling: Vec<ParamPoint> = [(1e6, 0.050), (1.5e6, 0.046), (2e6, 0.044)]
        .iter()
        .map(|&(p, a)| pt("b", p, a))
        .collect();
    let m = param_match(&[pt("g", 1.6e6, 0.030)], &falling, 0.95).unwrap();
    assert_eq!(m[0].params_needed, None);
    assert_eq!(m[0].efficiency_ratio, None);
    assert_eq!(m[0].ratio_interval, None);
    assert!((m[0].accuracy_gain - (0.030 - 0.046)).abs() < 1e-12);
}

#[test]
fn noisy_fit_interval_contains_the_ratio_and_matches_hand_computation() {
    // Points at ln p = 0, 1, 2, 3 with residuals +e, -e, -e, +e around acc = 0.1 + 0.05 ln p.
    let e = 0.01;
    let lp = [0.0f64, 1.0, 2.0, 3.0];
    let res = [e, -e, -e, e];
    let pts: Vec<(f64, f64)> = lp
        .iter()
        .zip(res)
        .map(|(l, r)| (l.exp(), 0.1 + 0.05 * l + r))
        .collect();
    let fit = LogLinearFit::fit(&pts).unwrap();
    // Symmetric residuals: slope and intercept are unchanged; s² = 4e²/2.
    assert!((fit.slope - 0.05).abs() < 1e-12 && (fit.intercept - 0.1).abs() < 1e-12);
    assert!((fit.residual_se - (2.0f64).sqrt() * e).abs() < 1e-12);
    // Band at the mean ln p (1.5): t_{0.975,2} s / sqrt(4).
    let band = fit.predict_interval(1.5f64.exp(), 0.95);
    let half = 4.302652729911275 * (2.0f64).sqrt() * e / 2.0;
    assert!((band.high - band.low - 2.0 * half).abs() < 1e-9);
    let base: Vec<ParamPoint> = pts.iter().map(|&(p, a)| pt("b", p, a)).collect();
    let m = param_match(&[pt("g", 1.0f64.exp(), 0.1 + 0.05 * 1.5)], &base, 0.95).unwrap();
    let r = m[0].efficiency_ratio.unwrap();
    assert!((r - 0.5f64.exp()).abs() < 1e-9);
    let i = m[0].ratio_interval.unwrap();
    assert!(i.low < r && r < i.high, "{i:?}");
}

#[test]
fn param_match_over_a_runs_frame() {
    let seqs = fk::sequences();
    let emb = fk::embeddings(&seqs, 8);
    let root = tempfile::tempdir().unwrap();
    let f = |p: f64| 0.02 * p.ln() - 0.1;
    for (i, p) in [1e6, 2e6, 3e6, 4e6].iter().enumerate() {
        let spec = fk::RunSpec {
            run_id: format!("base{i}"),
            model: "abxi".into(),
            seed: 1,
            hidden: 64 * (i + 1),
            positions: vec![],
            scale: 0.3,
            params: *p as u64,
            ndcg10: [f(*p), 0.1],
        };
        fk::write_run(root.path(), &spec, &seqs, &emb);
    }
    let spec = fk::RunSpec {
        run_id: "gca".into(),
        model: "abxi".into(),
        seed: 1,
        hidden: 64,
        positions: vec![0],
        scale: 0.3,
        params: 2_500_000,
        ndcg10: [f(3.5e6), 0.1],
    };
    fk::write_run(root.path(), &spec, &seqs, &emb);
    let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    let mut runs = set.runs_frame().unwrap();
    let has_gca = runs
        .column("config.gca.positions")
        .unwrap()
        .str()
        .unwrap()
        .not_equal("[]");
    runs.with_column(has_gca.with_name("has_gca".into()).into_column())
        .unwrap();
    let out = param_match_frame(
        &runs,
        &["dataset"],
        "has_gca",
        "params.total",
        "test.A.ndcg@10",
        0.95,
    )
    .unwrap();
    assert_eq!(out.height(), 1);
    assert_eq!(
        out.column("run_id").unwrap().str().unwrap().get(0),
        Some("gca")
    );
    assert_eq!(
        out.column("baseline_run_id").unwrap().str().unwrap().get(0),
        Some("base2"),
        "3M is nearer to 2.5M than 2M in log parameters"
    );
    let ratio = out
        .column("efficiency_ratio")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!((ratio - 1.4).abs() < 1e-9, "{ratio}");
    assert_eq!(
        out.column("n_baselines").unwrap().i64().unwrap().get(0),
        Some(4)
    );
}
