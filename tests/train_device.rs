//! `train.device`: the CPU stays the default and keeps every run id; CUDA is one clear error in
//! a build without the `cuda` feature; `cdsr-lab step` times training steps on the pinned real
//! batch and reports every loss. With the `cuda` feature and a GPU (`cargo test --features cuda
//! --test train_device -- --ignored`): the CUDA forward pass and one training step equal the
//! CPU's within a tolerance.

mod common;

use cdsr_lab::data;
use cdsr_lab::train::{build_model, ComputeDevice, RunConfig};
use common::{cdsr_lab, project_root, stdout_of};

fn config(path: &str) -> RunConfig {
    RunConfig::from_file(&project_root().join(path)).unwrap()
}

fn config_with(path: &str, train_line: &str) -> anyhow::Result<RunConfig> {
    let text = std::fs::read_to_string(project_root().join(path))?;
    let text = text.replacen("[train]\n", &format!("[train]\n{train_line}\n"), 1);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("config.toml");
    std::fs::write(&file, text)?;
    RunConfig::from_file(&file)
}

#[test]
fn cpu_is_the_default_device_and_leaves_run_ids_unchanged() {
    let plain = config("configs/abxi.toml");
    assert_eq!(plain.train.device, ComputeDevice::Cpu);
    let cpu = config_with("configs/abxi.toml", "device = \"cpu\"").unwrap();
    assert_eq!(cpu.run_id(), plain.run_id());
    let table = toml::Table::try_from(&cpu).unwrap();
    assert!(!table["train"].as_table().unwrap().contains_key("device"));
    let cuda = config_with("configs/abxi.toml", "device = \"cuda\"").unwrap();
    assert_eq!(cuda.train.device, ComputeDevice::Cuda);
    assert_ne!(cuda.run_id(), plain.run_id());
    let err = config_with("configs/abxi.toml", "device = \"tpu\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tpu") && err.contains("cuda"), "{err}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_build_without_the_feature_is_a_clear_error() {
    let mut cfg = config("configs/smoke.toml");
    cfg.train.device = ComputeDevice::Cuda;
    let ds = data::load(&project_root().join("data/food-kitchen-mini"))
        .unwrap()
        .dataset;
    let err = build_model(&cfg, &ds).err().expect("no CUDA in this build");
    assert!(
        err.to_string()
            .contains("built without CUDA support: build it with `--features cuda`"),
        "{err}"
    );
}

/// Two steps of the CPU-sized ABXI on the pinned food-kitchen batch: finite losses, the second
/// after one AdamW update, and the epoch size of the whole training layout.
#[test]
fn step_times_training_steps_on_the_pinned_batch() {
    let Some(shared) = data::shared_data_dir() else {
        eprintln!("skipped: ../shared/data not found");
        return;
    };
    let fk = shared.join("food-kitchen");
    let out = stdout_of(cdsr_lab().current_dir(project_root()).args([
        "step",
        "--config",
        "configs/abxi-cpu.toml",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--steps",
        "2",
        "--data",
        fk.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["impl"], "rust");
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["steps"], 2);
    let losses: Vec<f64> = v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 2);
    // The loss adds both domains' mean InfoNCE over 1 + 2 x 128 candidates: near-uniform
    // scores at the start give about 2 ln 257.
    let uniform = 2.0 * 257f64.ln();
    assert!(
        losses.iter().all(|l| (l - uniform).abs() < 0.5),
        "{losses:?}, expected about {uniform}"
    );
    assert_ne!(losses[0], losses[1], "the update changed nothing");
    let cfg = config("configs/abxi-cpu.toml");
    let ds = data::load(&fk).unwrap().dataset;
    let pinned = cdsr_lab::train::step_bench::PinnedBatch::load(
        &project_root().join("data/fixtures/train_step_batch.npz"),
        &ds,
        &cfg,
    )
    .unwrap();
    assert_eq!(
        v["batches_per_epoch"].as_u64().unwrap() as usize,
        pinned.layout_rows.div_ceil(cfg.train.batch_size)
    );
    assert!(v["median_step_s"].as_f64().unwrap() > 0.0);
}

/// The CUDA forward pass (the initial loss), every parameter's gradient and the loss after one
/// AdamW step equal the CPU's, from the same seed on the pinned food-kitchen batch. Needs a
/// GPU, hence ignored: `cargo test --features cuda --test train_device -- --ignored`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_forward_and_one_training_step_equal_the_cpu() {
    use cdsr_lab::train::batch_loss_with_negatives;
    use cdsr_lab::train::step_bench::PinnedBatch;

    let fk = data::shared_data_dir()
        .expect("../shared/data (set CDSR_SHARED_DATA)")
        .join("food-kitchen");
    let ds = data::load(&fk).unwrap().dataset;
    let mut cfg = config("configs/abxi-cpu.toml");
    let pinned = PinnedBatch::load(
        &project_root().join("data/fixtures/train_step_batch.npz"),
        &ds,
        &cfg,
    )
    .unwrap();
    // [loss before, loss after one step], gradients per parameter (host copies)
    let mut run = |device: ComputeDevice| {
        cfg.train.device = device;
        let (model, mut opt) = build_model(&cfg, &ds).unwrap();
        let step = |seed: u64| {
            batch_loss_with_negatives(&model, &pinned.batch, &pinned.negatives, &cfg, seed).unwrap()
        };
        let loss = step(0);
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<f32>> = model
            .params()
            .params()
            .iter()
            .map(|p| {
                grads
                    .get(&p.var)
                    .expect("every parameter gets a gradient")
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        opt.apply(&grads, cfg.optim.lr).unwrap();
        let after = step(1);
        (
            [
                loss.to_scalar::<f32>().unwrap(),
                after.to_scalar::<f32>().unwrap(),
            ],
            g,
        )
    };
    let (cpu_loss, cpu_grads) = run(ComputeDevice::Cpu);
    let (gpu_loss, gpu_grads) = run(ComputeDevice::Cuda);
    for (i, (a, b)) in cpu_loss.iter().zip(&gpu_loss).enumerate() {
        let rel = ((a - b) / a).abs();
        assert!(rel < 1e-4, "loss {i}: cpu {a}, cuda {b} (relative {rel:e})");
    }
    for (i, (a, b)) in cpu_grads.iter().zip(&gpu_grads).enumerate() {
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        assert!(
            diff <= 1e-3 * norm + 1e-7,
            "gradient of parameter {i}: |cpu - cuda| = {diff:e}, |cpu| = {norm:e}"
        );
    }
}

/// The paper-scale GPU sweeps resolve to valid configs of ABXI's published size on CUDA: 9
/// runs (baseline, GCA_early, GCA_stack x 3 seeds) and 24 (positions x gate x LayerNorm x 3).
#[test]
fn the_paper_sweeps_plan_abxi_sized_cuda_runs() {
    use cdsr_lab::sweep::engine::check_run_config;
    use cdsr_lab::sweep::spec::SweepSpec;
    for (file, runs, gca_runs) in [
        ("sweeps/paper-fk.toml", 9, 6),
        ("sweeps/paper-gca-variants.toml", 24, 24),
    ] {
        let spec = SweepSpec::from_path(&project_root().join(file)).unwrap();
        let plan = spec.resolve(check_run_config).unwrap();
        assert_eq!(plan.runs.len(), runs, "{file}");
        let configs: Vec<RunConfig> = plan
            .runs
            .iter()
            .map(|r| toml::Value::Table(r.config.clone()).try_into().unwrap())
            .collect();
        assert!(configs.iter().all(|c| c.train.device == ComputeDevice::Cuda
            && c.model.d_model == 256
            && c.train.negatives_per_domain == 128));
        let with_gca = configs
            .iter()
            .filter(|c| !c.gca.positions.is_empty())
            .count();
        assert_eq!(with_gca, gca_runs, "{file}");
    }
}
