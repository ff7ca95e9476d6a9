//! Stopping rules on the real 300-user food-kitchen slice: a run records why it stopped
//! (`early_stop`, `epoch_cap`, `time_cap`) and its best epoch in `run.json`; a resumed run that
//! had stopped trains no further; the analysis marks capped runs as not converged. Also the
//! GCA interventions' training side: the |cos| penalty moves |cos(X, X')| the way its sign says,
//! and configs without an intervention keep their run ids.

use std::path::Path;

use cdsr_lab::runs::{read_manifest, StopReason};
use cdsr_lab::train::{train, RunConfig, TrainOptions};

fn smoke() -> RunConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = RunConfig::from_file(&root.join("configs/smoke.toml")).unwrap();
    cfg.data.path = root.join("data/food-kitchen-mini");
    cfg
}

fn resume() -> TrainOptions {
    TrainOptions {
        resume: true,
        ..TrainOptions::default()
    }
}

/// Everything a resumed call could change: the metrics log, the checkpoint, the test cases and
/// the manifest's results.
fn snapshot(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, serde_json::Value) {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&read("run.json")).unwrap();
    (
        read("metrics.jsonl"),
        read("checkpoint/state.safetensors"),
        read("test_cases.parquet"),
        serde_json::json!({
            "stop_reason": m["stop_reason"], "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"], "test": m["test"], "wall_time_s": m["wall_time_s"],
        }),
    )
}

#[test]
fn early_stop_is_recorded_and_a_resumed_run_trains_no_further() {
    let mut cfg = smoke();
    cfg.train.epochs = 60;
    cfg.optim.warmup_epochs = 0;
    cfg.optim.lr = 1e-2;
    cfg.optim.plateau_patience = 0;
    cfg.optim.early_stop_patience = 1;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let s = train(&cfg, &run_dir, TrainOptions::default()).unwrap();
    assert!(s.complete);
    let m = read_manifest(&run_dir).unwrap();
    assert_eq!(m.stop_reason, Some(StopReason::EarlyStop), "{m:?}");
    assert_eq!(m.converged(), Some(true));
    let best = m.best_epoch.expect("a best epoch") as usize;
    // Stopped after more than `early_stop_patience` epochs without improvement.
    assert_eq!(s.epochs_run, best + cfg.optim.early_stop_patience + 1);
    assert!(s.epochs_run < cfg.train.epochs);
    let before = snapshot(&run_dir);
    let again = train(&cfg, &run_dir, resume()).unwrap();
    assert!(again.complete);
    assert_eq!(again.epochs_run, s.epochs_run);
    assert_eq!(
        snapshot(&run_dir),
        before,
        "a resumed early-stopped run changed"
    );
}

#[test]
fn epoch_and_time_caps_are_recorded_as_not_converged() {
    let dir = tempfile::tempdir().unwrap();
    // Epoch cap: two epochs with a patience that cannot run out in two.
    let mut cfg = smoke();
    cfg.train.epochs = 2;
    let run_dir = dir.path().join("epochs");
    let s = train(&cfg, &run_dir, TrainOptions::default()).unwrap();
    let m = read_manifest(&run_dir).unwrap();
    assert_eq!(
        (m.stop_reason, m.converged(), s.epochs_run),
        (Some(StopReason::EpochCap), Some(false), 2)
    );
    assert!(m.best_epoch.is_some());
    // Time cap: reached by the end of the first epoch, which is then also the best one (it
    // is still in warm-up, but a run must end with a selected model).
    let mut cfg = smoke();
    cfg.train.max_wall_time_s = Some(1e-3);
    let run_dir = dir.path().join("time");
    let s = train(&cfg, &run_dir, TrainOptions::default()).unwrap();
    let m = read_manifest(&run_dir).unwrap();
    assert_eq!(
        (m.stop_reason, m.converged(), s.epochs_run, m.best_epoch),
        (Some(StopReason::TimeCap), Some(false), 1, Some(1))
    );
    let before = snapshot(&run_dir);
    train(&cfg, &run_dir, resume()).unwrap();
    assert_eq!(
        snapshot(&run_dir),
        before,
        "a resumed time-capped run changed"
    );
    // `cdsr-lab runs` shows both as not converged.
    let set = cdsr_lab::runs::load_runs(dir.path(), Default::default()).unwrap();
    let table = set.results_frame(&["ndcg@10"], false).unwrap();
    let reasons: Vec<&str> = table
        .column("stop_reason")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.contains(&"epoch_cap") && reasons.contains(&"time_cap"));
    let converged = table.column("converged").unwrap().bool().unwrap();
    assert!(converged.iter().all(|c| c == Some(false)));
}

#[test]
fn the_cos_penalty_moves_orthogonality_by_its_sign() {
    let dir = tempfile::tempdir().unwrap();
    let mut mean_cos = Vec::new();
    for w in [5.0, -5.0] {
        let mut cfg = smoke();
        cfg.gca.cos_penalty = w;
        let run_dir = dir.path().join(format!("w{w}"));
        train(&cfg, &run_dir, TrainOptions::default()).unwrap();
        let run = cdsr_lab::runs::load_run(&run_dir).unwrap();
        let t = cdsr_lab::runs::MappedTensors::open(&run.tensors_path()).unwrap();
        let stats =
            cdsr_lab::analysis::gca_tensors::gca_tensor_stats(&t, &run_dir, Default::default())
                .unwrap();
        let m = stats.iter().map(|s| s.x_xprime.mean_abs_cos).sum::<f64>() / stats.len() as f64;
        mean_cos.push(m);
    }
    assert!(
        mean_cos[0] < mean_cos[1],
        "|cos(X, X')| with w = +5: {}, with w = -5: {}",
        mean_cos[0],
        mean_cos[1]
    );
}

#[test]
fn configs_without_an_intervention_keep_their_run_id() {
    let cfg = smoke();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml"))
            .unwrap()
            .replace("[gca]\n", "[gca]\nproject = \"none\"\ncos_penalty = 0.0\n");
    let explicit: RunConfig = toml::from_str(&text).unwrap();
    let mut explicit = explicit;
    explicit.data.path = cfg.data.path.clone();
    assert_eq!(explicit, cfg);
    assert_eq!(explicit.run_id(), cfg.run_id());
    let mut projected = cfg.clone();
    projected.gca.project = cdsr_lab::model::Projection::Orthogonal;
    assert_ne!(projected.run_id(), cfg.run_id());
}
