//! The per-test-case analysis of orthogonality (`analysis::cases`) on runs trained on the real
//! 300-user food-kitchen slice: the trainer's per-case |cos| equals the one computed from the
//! captured tensors, the association frame holds what the statistics give, the grouped
//! logistic fit maximises its likelihood, and the figure is drawn.

use std::path::Path;

use cdsr_lab::analysis::cases::{
    case_cos_association, case_cos_by_group, case_cos_frame, logistic_with_group_intercepts,
    ABS_COS_PREFIX,
};
use cdsr_lab::analysis::orthogonality::abs_cos_at;
use cdsr_lab::analysis::stats::{bootstrap_interval, bootstrap_spearman, spearman};
use cdsr_lab::runs::frames::{bool_column, f64_column};
use cdsr_lab::runs::{load_runs, LoadOptions, MappedTensors};
use cdsr_lab::train::{train, RunConfig, TrainOptions};

/// Two GCA_stack runs (seeds 1 and 2) of the smoke configuration on the slice.
fn trained_runs(root: &Path) {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    for seed in [1, 2] {
        let mut cfg = RunConfig::from_file(&project.join("configs/smoke.toml")).unwrap();
        cfg.data.path = project.join("data/food-kitchen-mini");
        cfg.train.seed = seed;
        cfg.train.epochs = 2;
        train(&cfg, &root.join(cfg.run_id()), TrainOptions::default()).unwrap();
    }
}

/// The log-likelihood of `logit p = alpha_g + slope x` with each group's intercept at its
/// maximum for this slope (one-dimensional Newton per group).
fn profile_log_lik(x: &[f64], y: &[bool], g: &[usize], slope: f64) -> f64 {
    let groups = g.iter().max().map_or(0, |m| m + 1);
    let mut total = 0.0;
    for k in 0..groups {
        let rows: Vec<usize> = (0..x.len()).filter(|&i| g[i] == k).collect();
        let hits = rows.iter().filter(|&&i| y[i]).count();
        if hits == 0 || hits == rows.len() {
            continue;
        }
        let mut a = 0.0;
        for _ in 0..100 {
            let (mut grad, mut info) = (0.0, 0.0);
            for &i in &rows {
                let p = 1.0 / (1.0 + (-(a + slope * x[i])).exp());
                grad += y[i] as u8 as f64 - p;
                info += p * (1.0 - p);
            }
            a += grad / info;
        }
        total += rows
            .iter()
            .map(|&i| {
                let eta = a + slope * x[i];
                (if y[i] { eta } else { 0.0 }) - (1.0 + eta.exp()).ln()
            })
            .sum::<f64>();
    }
    total
}

#[test]
fn per_case_cos_from_the_trainer_matches_the_capture_and_the_statistics_hold() {
    let dir = tempfile::tempdir().unwrap();
    trained_runs(dir.path());
    let set = load_runs(dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 2);
    let (cases, report) = case_cos_frame(&set).unwrap();
    assert!(report.is_clean(), "{report:?}");
    // The capture batch is the first test cases, at the same (best) epoch: the trainer's
    // `abs_cos@P` of those cases is the |cos| of the captured X and X' at the last position of
    // the module of the case's domain.
    for run in &set.runs {
        let tc = cdsr_lab::analysis::attention::read_test_cases(&run.dir).unwrap();
        let domains = cdsr_lab::analysis::stats::column_keys(&tc, "domain").unwrap();
        let t = MappedTensors::open(&run.tensors_path()).unwrap();
        let mut compared = 0;
        for p in [0, 1] {
            let col = f64_column(&tc, &format!("{ABS_COS_PREFIX}{p}")).unwrap();
            for d in ["A", "B"] {
                let x = t.f32(&format!("gca.{p}.{d}.x")).unwrap();
                let xp = t.f32(&format!("gca.{p}.{d}.x_prime")).unwrap();
                let mask = t.u8(&format!("gca.{p}.{d}.mask")).unwrap();
                let x = x.into_dimensionality::<ndarray::Ix3>().unwrap();
                let xp = xp.into_dimensionality::<ndarray::Ix3>().unwrap();
                let mask = mask.into_dimensionality::<ndarray::Ix2>().unwrap();
                let last = x.dim().1 - 1;
                for (i, c) in abs_cos_at(x, xp, Some(mask), last)
                    .unwrap()
                    .into_iter()
                    .enumerate()
                {
                    if domains[i] != d {
                        continue;
                    }
                    match c {
                        Some(c) => {
                            let written = col[i].unwrap();
                            assert!(
                                (c - written).abs() < 1e-6,
                                "case {i} gca.{p}: {c} vs {written}"
                            );
                            compared += 1;
                        }
                        None => {
                            assert!(
                                col[i].is_none(),
                                "case {i} gca.{p}: undefined |cos| written"
                            )
                        }
                    }
                }
            }
        }
        assert!(compared >= 8, "only {compared} captured cases compared");
    }
    // Association per domain, on every case of both runs and both positions.
    let by = case_cos_by_group(&cases, &["domain"], 200, 7).unwrap();
    assert_eq!(by.height(), 2);
    let a_rows: Vec<usize> = (0..cases.height())
        .filter(|&i| cases.column("domain").unwrap().str().unwrap().get(i) == Some("A"))
        .collect();
    let col = |name: &str| f64_column(&cases, name).unwrap();
    let (cos, rr) = (col("abs_cos"), col("rr"));
    let hit = bool_column(&cases, "hit@10").unwrap();
    let runs = cdsr_lab::analysis::stats::column_keys(&cases, "run_id").unwrap();
    let x: Vec<f64> = a_rows.iter().map(|&i| cos[i].unwrap()).collect();
    let y: Vec<bool> = a_rows.iter().map(|&i| hit[i].unwrap()).collect();
    let r: Vec<f64> = a_rows.iter().map(|&i| rr[i].unwrap()).collect();
    let g: Vec<usize> = a_rows
        .iter()
        .map(|&i| (runs[i] != runs[a_rows[0]]) as usize)
        .collect();
    let assoc = case_cos_association(&x, &y, &r, &g, 200, 7).unwrap();
    // The rank bootstrap ranks each resample from the full sample's order, without sorting it:
    // the same resamples and interval as sorting every resample, also against a 0/1 variable
    // (two tie groups).
    let h: Vec<f64> = y.iter().map(|&b| b as u8 as f64).collect();
    for other in [&r, &h] {
        let by_counts = bootstrap_spearman(&x, other, 200, 0.95, 7).unwrap();
        let by_sorting = bootstrap_interval(
            &x,
            other,
            |a, b| spearman(a, b).ok().map(|c| c.r),
            200,
            0.95,
            7,
        )
        .unwrap();
        assert_eq!(by_counts.resamples, by_sorting.resamples);
        assert_eq!(by_counts.estimate, by_sorting.estimate);
        for (a, b) in [
            (by_counts.interval.low, by_sorting.interval.low),
            (by_counts.interval.high, by_sorting.interval.high),
        ] {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
    assert_eq!(
        assoc.rank_bootstrap,
        bootstrap_spearman(&x, &r, 200, 0.95, 7).unwrap()
    );
    let row = (0..2)
        .find(|&k| by.column("domain").unwrap().str().unwrap().get(k) == Some("A"))
        .unwrap();
    let get = |name: &str| by.column(name).unwrap().f64().unwrap().get(row).unwrap();
    assert_eq!(get("r_pb"), assoc.point_biserial.r);
    assert_eq!(get("rho_rr"), assoc.rank.r);
    assert_eq!(get("logit_slope"), assoc.logistic.slope);
    let b = assoc.point_biserial_bootstrap.interval;
    assert!(b.low <= assoc.point_biserial.r && assoc.point_biserial.r <= b.high);
    // The grouped logistic fit is the maximum of the profile likelihood.
    let fit = logistic_with_group_intercepts(&x, &y, &g).unwrap();
    let at = |s: f64| profile_log_lik(&x, &y, &g, s);
    let best = at(fit.slope);
    for step in [1e-3, -1e-3, 0.05, -0.05] {
        assert!(
            at(fit.slope + step) <= best + 1e-9,
            "slope {} + {step} fits better",
            fit.slope
        );
    }
    // Its standard error is the curvature of that profile.
    let h = 1e-3;
    let curvature = -(at(fit.slope + h) - 2.0 * best + at(fit.slope - h)) / (h * h);
    assert!(
        (fit.se - 1.0 / curvature.sqrt()).abs() < 1e-3 * fit.se,
        "se {} vs {}",
        fit.se,
        1.0 / curvature.sqrt()
    );
    // The figure of these cases.
    let plot = cdsr_lab::plot::case_cos_vs_hit(&cases).unwrap();
    assert!(plot.svg().contains("HR@10") && plot.svg().contains("domain A"));
}

/// `cdsr-lab cases` prints one line per group of the committed GCA study's test cases, the same
/// statistics as `case_cos_by_group` with every column shown, and writes the table as CSV; a
/// folder without GCA runs is an error naming it.
#[test]
fn cli_cases_prints_the_per_case_statistics_of_a_run_tree() {
    let root = common::project_root();
    let runs = root.join("results/study/runs");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cases.csv");
    let text = common::stdout_of(
        common::cdsr_lab()
            .arg("cases")
            .arg(&runs)
            .args(["--by", "setting,domain", "--resamples", "50", "--csv"])
            .arg(&csv),
    );
    let written = std::fs::read_to_string(&csv).unwrap();
    assert!(
        written.starts_with("setting,domain,n,runs,r_pb,"),
        "{written}"
    );
    assert_eq!(written.lines().count(), 1 + 16);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("setting"), "{text}");
    // 8 GCA settings x 2 domains, each with 6 runs.
    assert_eq!(lines.len(), 1 + 16, "{text}");
    let set = load_runs(&runs, LoadOptions::default()).unwrap();
    let (frame, _) = cdsr_lab::analysis::cases::case_cos_frame(&set).unwrap();
    let expected =
        cdsr_lab::analysis::cases::case_cos_by_group(&frame, &["setting", "domain"], 50, 1)
            .unwrap();
    let first = lines[1];
    let r_pb = f64_column(&expected, "r_pb").unwrap()[0].unwrap();
    assert!(
        first.contains(&format!("{r_pb:+.3}")),
        "{first} vs r_pb {r_pb}"
    );
    assert!(first.contains("/6"), "{first}");
    let out = common::cdsr_lab()
        .arg("cases")
        .arg(root.join("results/autocdsr"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("results/autocdsr"));
}

mod common;
