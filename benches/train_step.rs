//! Training-step throughput of the ABXI(+GCA) model on a pinned real batch: forward, InfoNCE
//! loss, backward and AdamW, the work `train::train` does per step. Run through
//! `scripts/bench_train_step.sh`, which runs the PyTorch port (`scripts/python/train_step_torch.py`)
//! right after on the same batch and threads and prints the ratio.
//!
//! The batch: rows 0..256 of food-kitchen's training layout (checked against the pinned
//! `data/fixtures/train_step_batch.npz`) with the npz's negatives (one draw per row, repeated
//! at each target position as the trainer does for either sharing mode's amount of work).
//!
//! Settings from the environment: `TRAIN_STEP_CONFIG` (configs/abxi-cpu.toml),
//! `TRAIN_STEP_GCA_POSITIONS` ('' = the config's, 'none', '0', '0,1'), `TRAIN_STEP_THREADS` (2),
//! `TRAIN_STEP_WARMUP` (3), `TRAIN_STEP_STEPS` (20), `TRAIN_STEP_BATCH` (the npz).
//! Prints one JSON line with the median step time.
use std::path::PathBuf;
use std::time::Instant;

use cdsr_lab::data::{self, LayoutConfig, Split, TrainLayout};
use cdsr_lab::train::{batch_loss_with_negatives, build_model, RunConfig};
use ndarray::Array2;
use ndarray_npy::NpzReader;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config_path = env("TRAIN_STEP_CONFIG", "configs/abxi-cpu.toml");
    let mut cfg = RunConfig::from_file(&root.join(&config_path))?;
    match env("TRAIN_STEP_GCA_POSITIONS", "").as_str() {
        "" => {}
        "none" => cfg.gca.positions.clear(),
        list => {
            cfg.gca.positions = list
                .split(',')
                .map(|p| p.trim().parse())
                .collect::<Result<_, _>>()?
        }
    }
    let threads: usize = env("TRAIN_STEP_THREADS", "2").parse()?;
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let warmup: usize = env("TRAIN_STEP_WARMUP", "3").parse()?;
    let steps: usize = env("TRAIN_STEP_STEPS", "20").parse()?;
    let npz_path = root.join(env(
        "TRAIN_STEP_BATCH",
        "data/fixtures/train_step_batch.npz",
    ));

    let data_dir = data::shared_data_dir()
        .ok_or_else(|| anyhow::anyhow!("../shared/data not found (set CDSR_SHARED_DATA)"))?
        .join("food-kitchen");
    let ds = data::load(&data_dir)?.dataset;
    let split = Split::leave_one_out(&ds);
    let layout = TrainLayout::build(
        &ds,
        &split,
        LayoutConfig {
            max_len: cfg.model.max_len,
            ..Default::default()
        },
    );
    let rows: Vec<usize> = (0..256).collect();
    let batch = layout.gather(&rows);
    let mut npz = NpzReader::new(std::fs::File::open(&npz_path)?)?;
    let x: Array2<i64> = npz.by_name("x")?;
    anyhow::ensure!(
        x.iter().map(|&v| v as u32).eq(batch.x.iter().copied()),
        "{}: x differs from food-kitchen's training layout rows 0..256",
        npz_path.display()
    );
    let negatives: Array2<i64> = npz.by_name("negatives")?;
    let n = cfg.train.negatives_per_domain;
    anyhow::ensure!(
        negatives.ncols() >= 2 * n && n <= 128,
        "{}: needs {} negatives per row",
        npz_path.display(),
        2 * n
    );
    let l = batch.max_len;
    let w = 2 * n;
    let mut negs = vec![0u32; batch.batch_size() * l * w];
    for r in 0..batch.batch_size() {
        let row = negatives.row(r);
        // the first n of each domain's 128 pinned draws
        let draw: Vec<u32> = row
            .iter()
            .take(n)
            .chain(row.iter().skip(128).take(n))
            .map(|&v| v as u32)
            .collect();
        for t in 0..l {
            if batch.target_domain[r * l + t] != data::layout::TARGET_NONE {
                negs[(r * l + t) * w..(r * l + t + 1) * w].copy_from_slice(&draw);
            }
        }
    }

    let (model, mut opt) = build_model(&cfg, &ds)?;
    // Per step: [forward + loss, backward, AdamW, whole step].
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut losses = Vec::new();
    for step in 0..warmup + steps {
        let t = Instant::now();
        let loss = batch_loss_with_negatives(&model, &batch, &negs, &cfg, step as u64)?;
        losses.push(loss.to_scalar::<f32>()?);
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t_bwd = t.elapsed().as_secs_f64();
        opt.apply(&grads, cfg.optim.lr)?;
        let t_all = t.elapsed().as_secs_f64();
        if step >= warmup {
            for (p, v) in phases
                .iter_mut()
                .zip([t_fwd, t_bwd - t_fwd, t_all - t_bwd, t_all])
            {
                p.push(v);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [fwd, bwd, adamw, times] = &mut phases;
    let (fwd, bwd, adamw) = (median(fwd), median(bwd), median(adamw));
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "impl": "rust",
            "config": config_path,
            "gca_positions": cfg.gca.positions,
            "threads": threads,
            "params": model.params().total_params(),
            "median_step_s": median,
            "median_forward_s": fwd,
            "median_backward_s": bwd,
            "median_adamw_s": adamw,
            "min_step_s": times[0],
            "steps": steps,
            "loss_first": losses[0],
            "loss_last": losses[losses.len() - 1],
        })
    );
    Ok(())
}
