//! Every figure function writes a PNG and an SVG that are non-blank, of the expected size,
//! and carry their axis labels and statistics as SVG text.
use std::path::Path;

use cdsr_lab::plot::{self, Plot, PlotError};
use cdsr_lab::runs::LoadOptions;
use polars::prelude::*;

/// Saves `plot` into `dir` and checks both files: PNG decodes to `size` with real pixel
/// variation (not a blank canvas), SVG has the same size and contains every `texts` item
/// inside a `<text>` element.
fn check_written(plot: &Plot, dir: &Path, size: (u32, u32), texts: &[&str]) {
    let [png, svg] = plot.save(dir).expect("figure saves");
    assert_eq!(png, dir.join(format!("{}.png", plot.name())));
    assert_eq!(svg, dir.join(format!("{}.svg", plot.name())));
    assert!(!dir.join(format!("{}.png.tmp", plot.name())).exists());

    let img = image::open(&png).expect("PNG decodes").to_rgb8();
    assert_eq!(img.dimensions(), size, "{} PNG size", plot.name());
    let lum: Vec<f64> = img
        .pixels()
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let var = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    let inked = lum.iter().filter(|&&l| l < 200.0).count() as f64 / lum.len() as f64;
    assert!(
        var > 100.0,
        "{} PNG looks blank: variance {var}",
        plot.name()
    );
    assert!(
        inked > 0.005,
        "{} PNG has almost no ink: {inked}",
        plot.name()
    );

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{} SVG header", plot.name());
    assert!(
        text.contains(&format!("width=\"{}\" height=\"{}\"", size.0, size.1)),
        "{} SVG size",
        plot.name()
    );
    let texts_in_svg: Vec<String> = svg_texts(&text);
    for t in texts {
        assert!(
            texts_in_svg.iter().any(|s| s == t),
            "{}: no <text> element `{t}`; texts: {texts_in_svg:?}",
            plot.name()
        );
    }
}

/// The content of every `<text>` element, with XML escapes undone.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|chunk| {
            let body = chunk.split_once('>')?.1;
            let content = body.split_once("</text>")?.0;
            Some(
                content
                    .replace("&apos;", "'")
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn orthogonality_scatter_shows_pearson_from_analysis() {
    // x = 0.1..0.4, y = 0.1 + 0.01 * [2, 1, 4, 3]: r = 0.6 exactly (sxy = 3, sxx = syy = 5
    // in the unscaled units) and with n - 2 = 2 degrees of freedom the two-sided p-value is
    // 1 - t / sqrt(2 + t^2) with t^2 = 0.36 * 2 / 0.64, i.e. exactly 0.4.
    // Domain B has y reversed in order: r = -0.6, p = 0.4.
    let df = df!(
        "model" => ["abxi"; 8],
        "domain" => ["A", "A", "A", "A", "B", "B", "B", "B"],
        "cos_x_xprime" => [0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4],
        "ndcg@10" => [0.12, 0.11, 0.14, 0.13, 0.13, 0.14, 0.11, 0.12],
    )
    .unwrap();
    let fig = plot::orthogonality_vs_ndcg(&df).unwrap();
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (1120, 480),
        &[
            "|cos(X, X')|",
            "NDCG@10",
            "abxi · domain A",
            "abxi · domain B",
            "fit: r = 0.600, p = 0.400, n = 4",
            "fit: r = -0.600, p = 0.400, n = 4",
            "runs (4)",
        ],
    );
}

#[test]
fn orthogonality_scatter_with_two_points_draws_no_fit() {
    let df = df!(
        "model" => ["abxi", "abxi"],
        "domain" => ["A", "A"],
        "cos_x_xprime" => [0.1, 0.2],
        "ndcg@10" => [0.12, 0.11],
    )
    .unwrap();
    let fig = plot::orthogonality_vs_ndcg(&df).unwrap();
    let texts = svg_texts(fig.svg());
    assert!(texts.iter().any(|t| t == "runs (2)"));
    assert!(!texts.iter().any(|t| t.starts_with("fit:")));
}

#[test]
fn missing_column_is_named_in_the_error() {
    let df = df!("model" => ["abxi"], "domain" => ["A"], "ndcg@10" => [0.1]).unwrap();
    let err = plot::orthogonality_vs_ndcg(&df).unwrap_err();
    assert!(matches!(err, PlotError::Frame { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("orthogonality_vs_ndcg") && msg.contains("`cos_x_xprime`"),
        "{msg}"
    );
    let wrong_type = df!("model" => ["abxi"], "domain" => ["A"], "cos_x_xprime" => ["high"],
        "ndcg@10" => [0.1])
    .unwrap();
    let msg = plot::orthogonality_vs_ndcg(&wrong_type)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`cos_x_xprime` has type str, expected a number"),
        "{msg}"
    );
}

#[test]
fn cos_boxplots_print_means_and_counts() {
    // Means: cos_x_y 0.4 and cos_x_xprime 0.1 for abxi; 0.3 and 0.2 for sasrec.
    let df = df!(
        "model" => ["abxi", "abxi", "abxi", "sasrec", "sasrec", "sasrec"],
        "cos_x_y" => [0.3, 0.4, 0.5, 0.25, 0.3, 0.35],
        "cos_x_xprime" => [0.05, 0.1, 0.15, 0.1, 0.2, 0.3],
    )
    .unwrap();
    let fig = plot::cos_boxplots(&df).unwrap();
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (600, 620),
        &[
            "|cos|",
            "model",
            "abxi",
            "sasrec",
            "0.400 (n=3)",
            "0.100 (n=3)",
            "0.300 (n=3)",
            "0.200 (n=3)",
            "|cos(X, Y)|",
            "|cos(X, X')|",
        ],
    );
}

#[test]
fn ndcg_vs_params_labels_variants_with_run_counts() {
    let df = df!(
        "variant" => ["baseline", "baseline", "baseline", "+GCA_early", "+GCA_early", "+GCA_stack"],
        "domain" => ["A"; 6],
        "params" => [2_000_000i64, 2_000_000, 2_500_000, 2_500_000, 2_500_000, 3_000_000],
        "ndcg@10" => [0.150, 0.156, 0.160, 0.17, 0.18, 0.185],
    )
    .unwrap();
    let fig = plot::ndcg_vs_params(&df).unwrap();
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (620, 520),
        &[
            "parameters (millions)",
            "NDCG@10",
            "domain A",
            "baseline (3 runs)",
            "+GCA_early (2 runs)",
            "+GCA_stack (1 runs)",
        ],
    );
}

#[test]
fn gca_position_sets_are_ordered_by_size_then_text() {
    let positions: Vec<Series> = [vec![0i64, 1], vec![], vec![1], vec![0], vec![0, 1], vec![0]]
        .into_iter()
        .map(|v| Series::new("".into(), v))
        .collect();
    let df = DataFrame::new(
        6,
        vec![
            Column::new("positions".into(), positions),
            Column::new("domain".into(), ["A", "A", "A", "A", "A", "B"]),
            Column::new("ndcg@10".into(), [0.18, 0.15, 0.16, 0.17, 0.19, 0.13]),
        ],
    )
    .unwrap();
    let fig = plot::metrics_by_gca_positions(&df, &["ndcg@10"]).unwrap();
    let texts = svg_texts(fig.svg());
    let order: Vec<&String> = texts
        .iter()
        .filter(|t| ["none", "[0]", "[1]", "[0, 1]"].contains(&t.as_str()))
        .collect();
    assert_eq!(order, ["none", "[0]", "[1]", "[0, 1]"]);
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (640, 480),
        &["GCA positions", "NDCG@10", "domain A", "domain B"],
    );
}

#[test]
fn metric_by_setting_orders_settings_and_marks_capped_runs() {
    // Three settings x 3 seeds at one width, two domains; one run stopped at a cap.
    let settings = [
        "+GCA_early sigmoid LN orthogonal",
        "baseline",
        "+GCA_early sigmoid LN",
    ];
    let mut setting = Vec::new();
    let mut domain = Vec::new();
    let mut ndcg = Vec::new();
    let mut converged = Vec::new();
    for (k, s) in settings.iter().enumerate() {
        for seed in 0..3 {
            for d in ["A", "B"] {
                setting.push(*s);
                domain.push(d);
                ndcg.push(0.2 + 0.01 * k as f64 + 0.002 * seed as f64);
                converged.push(!(k == 0 && seed == 2));
            }
        }
    }
    let n = setting.len();
    let df = df!(
        "setting" => setting,
        "d_model" => vec![16i64; n],
        "domain" => domain,
        "ndcg@10" => ndcg,
        "converged" => converged,
    )
    .unwrap();
    let fig = plot::metric_by_setting(&df, "ndcg@10").unwrap();
    let texts = svg_texts(fig.svg());
    let order: Vec<&String> = texts
        .iter()
        .filter(|t| settings.contains(&t.as_str()))
        .take(3)
        .collect();
    assert_eq!(
        order,
        [
            "baseline",
            "+GCA_early sigmoid LN",
            "+GCA_early sigmoid LN orthogonal"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        // The band under each panel holds the turned setting names: 24 + 8 px per character
        // of the longest (32), in place of the default 150.
        (1120, 480 + 24 + 8 * 32 - 150),
        &[
            "NDCG@10",
            "d 16 · domain A",
            "d 16 · domain B",
            "stopped at a cap, still improving",
            "+GCA_early sigmoid LN orthogonal",
        ],
    );
    // Without the column, or with every run converged, no such legend.
    let all = df.drop("converged").unwrap();
    let texts = svg_texts(plot::metric_by_setting(&all, "ndcg@10").unwrap().svg());
    assert!(!texts.iter().any(|t| t.starts_with("stopped at a cap")));
}

#[test]
fn attention_share_by_cell_and_layer() {
    // Two samples in domain A, two layers each: sample 0 both hit, sample 1 single only.
    let df = df!(
        "sample" => [0i64, 0, 1, 1],
        "domain" => ["A"; 4],
        "hit_single" => [true, true, true, true],
        "hit_cross" => [true, true, false, false],
        "a_cd" => [0.1, 0.2, 0.4, 0.5],
        "layer" => [0i64, 1, 0, 1],
    )
    .unwrap();
    let fig = plot::attention_share(&df).unwrap();
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (1440, 540),
        &[
            "layer",
            "a_cd (cross-domain attention share)",
            "both hit",
            "single hit, cross miss",
            "domain A",
            "n=1",
        ],
    );
    // Without layers: one panel.
    let flat = df!(
        "domain" => ["A", "B"], "hit_single" => [true, false], "hit_cross" => [false, false],
        "a_cd" => [0.3, 0.2],
    )
    .unwrap();
    assert_eq!(plot::attention_share(&flat).unwrap().size(), (820, 540));
}

#[test]
fn attention_share_keeps_runs_apart() {
    // Two runs whose sample 0 is in the same cell: two samples (n=2) of share 0.3 each, not
    // one sample of 0.6 (the loader's frames repeat sample numbers across runs).
    let df = df!(
        "run_id" => ["r1", "r1", "r2", "r2"],
        "sample" => [0i64, 0, 0, 0],
        "domain" => ["A"; 4],
        "hit_single" => [true; 4],
        "hit_cross" => [true; 4],
        "a_cd" => [0.1, 0.2, 0.1, 0.2],
        "layer" => [0i64, 1, 0, 1],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fig = plot::attention_share(&df).unwrap();
    check_written(&fig, dir.path(), (1440, 540), &["n=2"]);
}

#[test]
fn training_curves_from_metrics_rows() {
    let df = df!(
        "run_id" => ["r1", "r1", "r1", "r1", "r2", "r2"],
        "epoch" => [1i64, 2, 1, 2, 1, 2],
        "split" => ["train", "train", "valid", "valid", "train", "train"],
        "domain" => [None, None, Some("A"), Some("A"), None, None],
        "loss" => [Some(2.0), Some(1.5), None, None, Some(2.2), Some(1.7)],
        "ndcg@10" => [None, None, Some(0.10), Some(0.12), None, None],
    )
    .unwrap();
    let fig = plot::training_curves(&df, &["loss", "ndcg@10"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Runs are named by run_id when there is no label column; the domain names the panel.
    check_written(
        &fig,
        dir.path(),
        (1280, 490),
        &[
            "epoch",
            "loss",
            "ndcg@10 · A",
            "r1 · train",
            "r2 · train",
            "r1 · valid",
        ],
    );
    let msg = plot::training_curves(&df, &["mrr"])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing column `mrr`"), "{msg}");
}

#[test]
fn training_curves_give_each_domain_a_panel_and_name_runs_by_label() {
    // Two runs, validation every epoch and test at improving epochs, both domains.
    let mut label = Vec::new();
    let (mut epoch, mut split, mut domain, mut ndcg) = (vec![], vec![], vec![], vec![]);
    for (run, scale) in [("d_model 64", 1.0), ("d_model 256", 1.2)] {
        for e in 1..=4i64 {
            for (s, d) in [("valid", "A"), ("valid", "B"), ("test", "A"), ("test", "B")] {
                if s == "test" && e % 2 == 1 {
                    continue;
                }
                label.push(run);
                epoch.push(e);
                split.push(s);
                domain.push(d);
                ndcg.push(scale * 0.05 * e as f64);
            }
        }
    }
    let n = label.len();
    let df = df!(
        "run_id" => vec!["unused"; n],
        "label" => label,
        "epoch" => epoch,
        "split" => split,
        "domain" => domain,
        "ndcg@10" => ndcg,
    )
    .unwrap();
    let fig = plot::training_curves(&df, &["ndcg@10"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    check_written(
        &fig,
        dir.path(),
        (1280, 490),
        &[
            "ndcg@10 · A",
            "ndcg@10 · B",
            "d_model 64 · valid",
            "d_model 64 · test",
            "d_model 256 · valid",
            "d_model 256 · test",
        ],
    );
    let svg = std::fs::read_to_string(dir.path().join("training_curves.svg")).unwrap();
    assert!(!svg.contains("unused"), "the label column names the runs");
}

#[test]
fn evcxr_display_wraps_the_svg() {
    let df = df!("epoch" => [1i64], "split" => ["train"], "loss" => [1.0]).unwrap();
    let fig = plot::training_curves(&df, &["loss"]).unwrap();
    let shown = fig.evcxr_content();
    assert!(shown.starts_with("EVCXR_BEGIN_CONTENT image/svg+xml\n<svg"));
    assert!(shown.ends_with("</svg>\nEVCXR_END_CONTENT"));
}

#[test]
fn figures_from_an_empty_runs_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures");
    let err = plot::figures_from_runs(dir.path(), &out, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no complete run") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(
        !out.exists(),
        "nothing is written when there is nothing to draw"
    );
    let watching = LoadOptions {
        include_incomplete: true,
        ..LoadOptions::default()
    };
    let err = plot::figures_from_runs(dir.path(), &out, watching)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no run under"), "{err}");
}

/// Every figure that shows runs marks those that stopped at a cap while still improving, on the
/// committed compact runs of the GCA study (4-epoch runs: every one stopped at its epoch cap);
/// the same study frame with every run converged draws no mark.
#[test]
fn every_figure_of_runs_marks_the_runs_stopped_at_a_cap() {
    use cdsr_lab::analysis::study::study_frame;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/study/runs");
    let set = cdsr_lab::runs::load_runs(&root, LoadOptions::default()).unwrap();
    assert!(set.len() >= 10, "{} runs", set.len());
    assert!(set.report.is_clean(), "{}", set.report);
    assert!(set
        .runs
        .iter()
        .all(|r| r.manifest.converged() == Some(false)));
    let dir = tempfile::tempdir().unwrap();
    let report = plot::figures_of_runs(&set, dir.path()).unwrap();
    assert!(report.skipped_runs.is_empty(), "{:?}", report.skipped_runs);
    let texts = |name: &str| {
        svg_texts(&std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap())
    };
    let legend = "stopped at a cap, still improving";
    // Figures that draw each run: a ring per capped run, named in the legend.
    for name in [
        "orthogonality_vs_ndcg",
        "ndcg_vs_params",
        "metrics_by_gca_positions",
        "metric_by_setting",
        "training_curves",
    ] {
        assert!(texts(name).iter().any(|t| t == legend), "{name}");
    }
    // Figures that summarise runs: the title counts them (the box plots show the GCA runs).
    let gca = set
        .runs
        .iter()
        .filter(|r| {
            r.manifest.config["gca"]["positions"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        })
        .count();
    for (name, n) in [("cos_boxplots", gca), ("parallel_coordinates", set.len())] {
        let note = format!("{n} of {n} runs {legend}");
        assert!(
            texts(name).iter().any(|t| t.ends_with(&note)),
            "{name}: no `{note}` in {:?}",
            texts(name)
        );
    }

    let (study, _) = study_frame(&set).unwrap();
    let mut converged = study.clone();
    converged
        .with_column(Column::new("converged".into(), vec![true; study.height()]))
        .unwrap();
    let with_cos = converged
        .filter(&converged.column("cos_x_xprime").unwrap().is_not_null())
        .unwrap();
    for fig in [
        plot::orthogonality_vs_ndcg(&with_cos).unwrap(),
        plot::ndcg_vs_params(&converged).unwrap(),
        plot::metrics_by_gca_positions(&converged, &["ndcg@10"]).unwrap(),
        plot::metric_by_setting(&converged, "ndcg@10").unwrap(),
        plot::cos_boxplots(&with_cos).unwrap(),
    ] {
        let texts = svg_texts(fig.svg());
        assert!(
            !texts.iter().any(|t| t.contains(legend)),
            "{} marks converged runs",
            fig.name()
        );
    }
}
