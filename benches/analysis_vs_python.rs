//! Analysis speed against the Python stack, one half of `scripts/bench_analysis.sh`
//! (the other half is `scripts/python/analysis_bench.py`, run on the same inputs).
//!
//! `cargo bench --bench analysis_vs_python -- OUT_DIR` writes OUT_DIR/rust.json with the best
//! of 3 wall times (seconds) of:
//! - `bandwidth_sum`: a parallel sum over a 2 GiB f32 buffer (the machine's read bandwidth),
//! - `abs_cos`: |cos| over 1,000,000 x 256 f32 row pairs (2 GiB read),
//! - `pearson_bootstrap`: Pearson r + 10,000-resample percentile bootstrap over 300 runs,
//! - `load_runs`: loading 2,000 run directories (written with RunWriter into OUT_DIR/runs)
//!   into the runs and epochs frames,
//! - `spearman_bootstrap`: Spearman's rho + 1,000-resample percentile bootstrap of |cos| against
//!   1/rank over the test cases of one setting and domain of the committed intervention study
//!   (`results/orthogonality/runs`, written to OUT_DIR/cases_*.npy for the Python half), as
//!   `analysis::cases` computes it, and `spearman_bootstrap_sorted` the same by sorting every
//!   resample (the generic `bootstrap_interval`).
use std::path::{Path, PathBuf};
use std::time::Instant;

use cdsr_lab::analysis::cases::case_cos_frame;
use cdsr_lab::analysis::orthogonality::{abs_cos_rows, CosOptions};
use cdsr_lab::analysis::stats::{
    bootstrap_interval, bootstrap_pearson, bootstrap_spearman, pearson, spearman,
};
use cdsr_lab::data::Domain;
use cdsr_lab::runs::frames::f64_column;
use cdsr_lab::runs::{
    load_runs, metrics, FinalResults, LoadOptions, ParamCounts, RunIdentity, RunWriter, Split,
};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const ROWS: usize = 1_000_000;
const DIM: usize = 256;
const RUNS: usize = 2_000;

fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn write_runs(root: &Path) {
    if root.join("done").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(root);
    (0..RUNS).into_par_iter().for_each(|i| {
        let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
        let hidden = [64, 128, 256][i % 3];
        let positions: Vec<usize> = match i % 4 { 0 => vec![], 1 => vec![0], 2 => vec![0, 1], _ => vec![1, 2] };
        let config = serde_json::json!({
            "model": { "name": "abxi", "hidden": hidden, "heads": 2, "dropout": 0.5 },
            "gca": { "positions": positions, "gate": if i % 2 == 0 { "sigmoid" } else { "tanh" }, "layer_norm": i % 3 == 0 },
            "train": { "lr": 1e-4, "weight_decay": 0.1, "epochs": 20, "batch_size": 256 },
            "data": { "name": "food-kitchen", "max_len": 50, "negatives": 999 },
        });
        let id = RunIdentity { run_id: format!("run-{i:05}"), model: "abxi".into(), dataset: "food-kitchen".into(), seed: (i % 5) as u64 };
        let mut w = RunWriter::create(root, id, &config).unwrap();
        w.set_params(ParamCounts { total: 2_000_000 + 1000 * i as u64, by_module: [("embedding".to_string(), 1_000_000u64), ("gca.0".to_string(), 500_000u64)].into() }).unwrap();
        for epoch in 1..=20u32 {
            w.log_metrics(epoch, Split::Train, None, [("loss", 6.0 / epoch as f64 + rng.random::<f64>() * 0.01), ("wall_time_s", epoch as f64 * 40.0)]).unwrap();
            for d in Domain::BOTH {
                let v: f64 = 0.1 + 0.003 * epoch as f64 + rng.random::<f64>() * 0.01;
                w.log_metrics(epoch, Split::Valid, Some(d), [("ndcg@10", v), ("hr@10", 2.0 * v), ("mrr", 0.8 * v), ("auc", 0.7 + v / 10.0)]).unwrap();
            }
        }
        let mut test = std::collections::BTreeMap::new();
        for d in Domain::BOTH {
            let v: f64 = 0.15 + rng.random::<f64>() * 0.02;
            test.insert(d, metrics([("ndcg@1", v / 2.5), ("ndcg@10", v), ("hr@10", 2.0 * v), ("mrr", 0.8 * v), ("auc", 0.72)]));
        }
        w.finish(FinalResults { best_epoch: Some(15), epochs_run: 20, wall_time_s: Some(800.0), test, test_full: None, stop_reason: None }).unwrap();
    });
    std::fs::write(root.join("done"), "").unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument is the output directory.
    let out: PathBuf = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-analysis"));
    std::fs::create_dir_all(&out).unwrap();
    let threads = rayon::current_num_threads();
    eprintln!("rayon threads: {threads}");

    // 1. |cos| over 1M x 256 pairs, and the machine's read bandwidth on the same 2 GiB.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::<f32>::from_shape_fn((ROWS, DIM), |_| rng.random_range(-1.0..1.0));
    let y = Array2::<f32>::from_shape_fn((ROWS, DIM), |_| rng.random_range(-1.0..1.0));
    let bytes = 2.0 * (ROWS * DIM * 4) as f64;
    let (t_bw, s) = best_of(3, || {
        let a = x
            .as_slice()
            .unwrap()
            .par_chunks(1 << 16)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .sum::<f64>();
        let b = y
            .as_slice()
            .unwrap()
            .par_chunks(1 << 16)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .sum::<f64>();
        a + b
    });
    // A sum with f32 lanes: what the hardware can stream when the loop vectorises fully.
    let (t_bw32, s32) = best_of(3, || {
        let f = |c: &[f32]| {
            let mut acc = [0f32; 16];
            for ch in c.chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += ch[k];
                }
            }
            acc.iter().map(|&v| v as f64).sum::<f64>()
        };
        x.as_slice()
            .unwrap()
            .par_chunks(1 << 16)
            .map(f)
            .sum::<f64>()
            + y.as_slice()
                .unwrap()
                .par_chunks(1 << 16)
                .map(f)
                .sum::<f64>()
    });
    let (t_cos, stats) = best_of(3, || {
        abs_cos_rows(x.view(), y.view(), CosOptions::default()).unwrap()
    });
    eprintln!(
        "bandwidth (f32-lane sum) {:.2} GB/s [{s32:.1}], (f64 sum) {:.2} GB/s [{s:.1}]; |cos| {:.3}s = {:.2} GB/s, mean {:.6}",
        bytes / t_bw32 / 1e9,
        bytes / t_bw / 1e9,
        t_cos,
        bytes / t_cos / 1e9,
        stats.mean_abs_cos
    );
    drop((x, y));

    // 2. Pearson + 10,000-resample bootstrap over 300 runs.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let cos: Vec<f64> = (0..300).map(|_| rng.random_range(0.05..0.4)).collect();
    let ndcg: Vec<f64> = cos
        .iter()
        .map(|c| 0.2 - 0.1 * c + rng.random_range(-0.02..0.02))
        .collect();
    let (t_boot, (r, boot)) = best_of(3, || {
        let r = pearson(&cos, &ndcg).unwrap();
        let b = bootstrap_pearson(&cos, &ndcg, 10_000, 0.95, 7).unwrap();
        (r, b)
    });
    eprintln!(
        "pearson r {:.4} p {:.3e}; bootstrap [{:.4}, {:.4}] in {:.4}s",
        r.r, r.p_value, boot.interval.low, boot.interval.high, t_boot
    );

    // 3. Loading 2,000 run directories.
    let runs_root = out.join("runs");
    let t = Instant::now();
    write_runs(&runs_root);
    eprintln!("wrote {RUNS} runs in {:.1}s", t.elapsed().as_secs_f64());
    let (t_load, (h1, h2)) = best_of(3, || {
        let set = load_runs(&runs_root, LoadOptions::default()).unwrap();
        assert!(set.report.is_clean());
        let runs = set.runs_frame().unwrap();
        let epochs = set.epochs_frame().unwrap();
        (runs.height(), epochs.height())
    });
    eprintln!("loaded {h1} runs, {h2} epoch rows in {t_load:.3}s");

    // 4. The per-case rank bootstrap on the committed study's test cases.
    let study = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/orthogonality/runs");
    let set = load_runs(&study, LoadOptions::default()).unwrap();
    let (cases, _) = case_cos_frame(&set).unwrap();
    let text = |name: &str| cases.column(name).unwrap().str().unwrap().clone();
    let (setting, domain) = (text("setting"), text("domain"));
    let first = setting.get(0).unwrap().to_string();
    let rows: Vec<usize> = (0..cases.height())
        .filter(|&i| setting.get(i) == Some(first.as_str()) && domain.get(i) == Some("B"))
        .collect();
    let (cos_col, rr_col) = (
        f64_column(&cases, "abs_cos").unwrap(),
        f64_column(&cases, "rr").unwrap(),
    );
    let case_cos: Vec<f64> = rows.iter().map(|&i| cos_col[i].unwrap()).collect();
    let case_rr: Vec<f64> = rows.iter().map(|&i| rr_col[i].unwrap()).collect();
    ndarray_npy::write_npy(
        out.join("cases_abs_cos.npy"),
        &Array1::from(case_cos.clone()),
    )
    .unwrap();
    ndarray_npy::write_npy(out.join("cases_rr.npy"), &Array1::from(case_rr.clone())).unwrap();
    let (t_rank, (rho, rank_boot)) = best_of(3, || {
        let rho = spearman(&case_cos, &case_rr).unwrap();
        let b = bootstrap_spearman(&case_cos, &case_rr, 1_000, 0.95, 7).unwrap();
        (rho, b)
    });
    let (t_rank_sorted, _) = best_of(3, || {
        bootstrap_interval(
            &case_cos,
            &case_rr,
            |a, b| spearman(a, b).ok().map(|c| c.r),
            1_000,
            0.95,
            7,
        )
        .unwrap()
    });
    eprintln!(
        "{} cases ({first}, B): spearman {:.4}; bootstrap [{:.4}, {:.4}] in {t_rank:.3}s \
         ({t_rank_sorted:.3}s sorting every resample)",
        rows.len(),
        rho.r,
        rank_boot.interval.low,
        rank_boot.interval.high
    );

    let json = serde_json::json!({
        "threads": threads,
        "bandwidth_sum_s": t_bw32,
        "bandwidth_sum_f64_s": t_bw,
        "bytes": bytes,
        "abs_cos_s": t_cos,
        "abs_cos_mean": stats.mean_abs_cos,
        "pearson_bootstrap_s": t_boot,
        "bootstrap_low": boot.interval.low,
        "bootstrap_high": boot.interval.high,
        "load_runs_s": t_load,
        "runs_rows": h1,
        "epochs_rows": h2,
        "cases": rows.len(),
        "spearman_bootstrap_s": t_rank,
        "spearman_bootstrap_sorted_s": t_rank_sorted,
        "spearman_rho": rho.r,
        "spearman_low": rank_boot.interval.low,
        "spearman_high": rank_boot.interval.high,
    });
    std::fs::write(
        out.join("rust.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&json).unwrap());
}
