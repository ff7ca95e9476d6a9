//! `analysis::stats` against scipy/statsmodels values in tests/fixtures/analysis_stats.json
//! (made by scripts/python/analysis_fixtures.py from real Food-Kitchen per-user counts).
use cdsr_lab::analysis::param_match::LogLinearFit;
use cdsr_lab::analysis::stats::*;
use polars::prelude::*;

fn fixture() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/analysis_stats.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn vecf(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
}

#[test]
fn pearson_and_spearman_match_scipy() {
    let f = fixture();
    let (x, y, z) = (vecf(&f["x"]), vecf(&f["y"]), vecf(&f["z"]));
    let c = pearson(&x, &z).unwrap();
    close(c.r, f["pearson_xz"]["r"].as_f64().unwrap(), 1e-12);
    close(c.p_value, f["pearson_xz"]["p"].as_f64().unwrap(), 1e-9);
    close(
        c.ci95.low,
        f["pearson_xz"]["ci_low"].as_f64().unwrap(),
        1e-9,
    );
    close(
        c.ci95.high,
        f["pearson_xz"]["ci_high"].as_f64().unwrap(),
        1e-9,
    );
    let ci90 = fisher_z_interval(c.r, c.n, 0.90).unwrap();
    close(
        ci90.low,
        f["pearson_xz_ci90"]["low"].as_f64().unwrap(),
        1e-9,
    );
    close(
        ci90.high,
        f["pearson_xz_ci90"]["high"].as_f64().unwrap(),
        1e-9,
    );
    let c = pearson(&x, &y).unwrap();
    close(c.r, f["pearson_xy"]["r"].as_f64().unwrap(), 1e-12);
    close(c.p_value, f["pearson_xy"]["p"].as_f64().unwrap(), 1e-9);

    assert_eq!(average_ranks(&x), vecf(&f["ranks_x"]));
    for (key, other) in [("spearman_xy", &y), ("spearman_xz", &z)] {
        let s = spearman(&x, other).unwrap();
        close(s.r, f[key]["r"].as_f64().unwrap(), 1e-12);
        close(s.p_value, f[key]["p"].as_f64().unwrap(), 1e-9);
    }
}

#[test]
fn t_tests_match_scipy() {
    let f = fixture();
    let (x, y) = (vecf(&f["x"]), vecf(&f["y"]));
    let w = welch_t(&x[..30], &x[30..]).unwrap();
    close(w.t, f["welch"]["t"].as_f64().unwrap(), 1e-12);
    close(w.df, f["welch"]["df"].as_f64().unwrap(), 1e-12);
    close(w.p_value, f["welch"]["p"].as_f64().unwrap(), 1e-9);
    let p = paired_t(&x, &y).unwrap();
    close(p.t, f["paired"]["t"].as_f64().unwrap(), 1e-12);
    assert_eq!(p.df, 59.0);
    close(p.p_value, f["paired"]["p"].as_f64().unwrap(), 1e-9);
}

#[test]
fn holm_and_bh_match_statsmodels() {
    let f = fixture();
    let p = vecf(&f["pvals"]);
    for (a, b) in holm(&p).iter().zip(vecf(&f["holm"])) {
        close(*a, b, 1e-12);
    }
    for (a, b) in benjamini_hochberg(&p).iter().zip(vecf(&f["bh"])) {
        close(*a, b, 1e-12);
    }
    // Hand-computed: m = 3, sorted p = .01 .02 .04 -> Holm .03 .04 .04; BH .03 .03 .04.
    assert_eq!(holm(&[0.04, 0.01, 0.02]), vec![0.04, 0.03, 0.04]);
    let bh = benjamini_hochberg(&[0.04, 0.01, 0.02]);
    for (a, b) in bh.iter().zip([0.04, 0.03, 0.03]) {
        close(*a, b, 1e-15);
    }
}

#[test]
fn bootstrap_is_seeded_and_agrees_with_scipy_percentile() {
    let f = fixture();
    let (x, z) = (vecf(&f["x"]), vecf(&f["z"]));
    let a = bootstrap_pearson(&x, &z, 10_000, 0.95, 7).unwrap();
    let b = bootstrap_pearson(&x, &z, 10_000, 0.95, 7).unwrap();
    assert_eq!(a, b, "same seed, same interval");
    assert_eq!(a.resamples + a.dropped, 10_000);
    // Different RNGs: the percentile endpoints agree within Monte-Carlo error (~0.01).
    close(
        a.interval.low,
        f["bootstrap_pearson_xz"]["low"].as_f64().unwrap(),
        0.02,
    );
    close(
        a.interval.high,
        f["bootstrap_pearson_xz"]["high"].as_f64().unwrap(),
        0.02,
    );
    // Closed form: perfectly linear data gives r = 1 on every non-constant resample.
    let lin: Vec<f64> = (0..20).map(|i| i as f64).collect();
    let lin2: Vec<f64> = lin.iter().map(|v| 3.0 * v - 1.0).collect();
    let c = bootstrap_pearson(&lin, &lin2, 2000, 0.95, 1).unwrap();
    close(c.interval.low, 1.0, 1e-12);
    close(c.interval.high, 1.0, 1e-12);
}

#[test]
fn bad_input_is_an_error_not_nan() {
    assert_eq!(
        pearson(&[1.0, 2.0], &[1.0, 2.0]).unwrap_err(),
        StatsError::TooFew { need: 3, got: 2 }
    );
    assert_eq!(
        pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap_err(),
        StatsError::Constant("x")
    );
    assert_eq!(
        pearson(&[1.0, f64::NAN, 1.0], &[1.0, 2.0, 3.0]).unwrap_err(),
        StatsError::NonFinite("x")
    );
    assert_eq!(
        spearman(&[1.0, 2.0, 3.0], &[1.0, 2.0]).unwrap_err(),
        StatsError::Length(3, 2)
    );
    assert!(paired_t(&[1.0, 2.0], &[0.0, 1.0]).is_err());
}

#[test]
fn loglinear_fit_matches_scipy_linregress() {
    let f = fixture();
    let size = vecf(&f["loglinear"]["size"]);
    let z = vecf(&f["z"]);
    let pts: Vec<(f64, f64)> = size.iter().copied().zip(z.iter().copied()).collect();
    let fit = LogLinearFit::fit(&pts).unwrap();
    close(fit.slope, f["loglinear"]["slope"].as_f64().unwrap(), 1e-10);
    close(
        fit.intercept,
        f["loglinear"]["intercept"].as_f64().unwrap(),
        1e-10,
    );
    close(fit.r_squared, f["loglinear"]["r2"].as_f64().unwrap(), 1e-10);
}

#[test]
fn correlation_by_group_over_a_frame() {
    let f = fixture();
    let (x, z) = (vecf(&f["x"]), vecf(&f["z"]));
    // Two groups: the same data as model "m1", and a NaN row added to model "m2".
    let mut model = vec!["m1"; 60];
    model.extend(vec!["m2"; 61]);
    let mut xs = x.clone();
    xs.extend(&x);
    xs.push(f64::NAN);
    let mut zs = z.clone();
    zs.extend(&z);
    zs.push(1.0);
    let df = DataFrame::new(
        121,
        vec![
            Column::new("model".into(), model),
            Column::new("cos".into(), xs),
            Column::new("ndcg".into(), zs),
        ],
    )
    .unwrap();
    let out = correlation_by_group(&df, &["model"], "cos", "ndcg", Method::Pearson).unwrap();
    assert_eq!(out.height(), 2);
    let r = out.column("r").unwrap().f64().unwrap();
    close(
        r.get(0).unwrap(),
        f["pearson_xz"]["r"].as_f64().unwrap(),
        1e-12,
    );
    close(
        r.get(1).unwrap(),
        f["pearson_xz"]["r"].as_f64().unwrap(),
        1e-12,
    );
    let dropped = out.column("n_dropped").unwrap().i64().unwrap();
    assert_eq!((dropped.get(0), dropped.get(1)), (Some(0), Some(1)));
    let p = f["pearson_xz"]["p"].as_f64().unwrap();
    // Holm over two equal p-values: both become 2p.
    close(
        out.column("p_holm").unwrap().f64().unwrap().get(0).unwrap(),
        2.0 * p,
        1e-9,
    );
}
