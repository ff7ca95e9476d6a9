//! What a user sees when a command is given bad input: one clear message (no backtrace, even
//! with `RUST_BACKTRACE` set), warnings for a diagnostic given mixed-up runs, and a sweep
//! folder that a second `sweep run` does not enter.

mod common;

use cdsr_lab::sweep::lock::Lock;
use cdsr_lab::sweep::plan::SweepDir;

#[test]
fn a_user_error_is_one_line_even_with_rust_backtrace_set() {
    let out = common::cdsr_lab()
        .args(["data", "stats", "/no/such/dataset"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "error: /no/such/dataset: no such file or directory\n");
}

/// A reader that stops early (`cdsr-lab sweep plan FILE | head -1`) ends the command quietly,
/// as with other command-line tools: no panic message about the closed pipe.
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let mut child = common::cdsr_lab()
        .args(["sweep", "plan", "sweeps/study.toml"])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the command has written (it reads the sweep file first), so
    // its first write finds the pipe closed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(
        out.status.code().is_none() || out.status.code() == Some(0),
        "{:?}",
        out.status
    );
}

/// The committed d 256 run as both runs of the diagnostic, and as the single-domain run
/// although it is an `abxi` model: both mistakes are said before anything is read.
#[test]
fn diagnose_warns_about_the_same_run_twice_and_a_cross_domain_single() {
    let run = common::project_root().join("results/abxi-cpu/2026-11-23-d256");
    let warnings = cdsr_lab::analysis::attention::pair_warnings(&run, &run);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with(
        "the single-domain and the cross-domain run are the same run (`abxi-s1-778b1e52`)"
    ));
    assert!(warnings[1].contains("is a `abxi` model, which reads both domains"));
    let other = common::project_root().join("results/abxi-cpu/2026-11-24-d256-seed2");
    assert_eq!(
        cdsr_lab::analysis::attention::pair_warnings(&run, &other).len(),
        1
    );
    let out = common::cdsr_lab()
        .arg("diagnose")
        .arg("--single")
        .arg(&run)
        .arg("--cross")
        .arg(&run)
        .arg("--print-only")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("warning: ").count(), 2, "{err}");
}

/// While one process holds a sweep folder, `sweep run` on it stops at once, naming the holder.
#[test]
fn a_second_sweep_run_on_one_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = common::smoke_sweep(tmp.path(), &[1]);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let held = Lock::acquire(&SweepDir::new(&out_dir).lock(), "test").unwrap();
    let out = common::cdsr_lab()
        .args(["sweep", "run"])
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "sweep folder {} is in use by another process (pid {}",
            out_dir.display(),
            std::process::id()
        )),
        "{err}"
    );
    assert!(!out_dir.join("runs").join("x").exists());
    assert!(!out_dir.join("plan.json").exists(), "{err}");
    drop(held);
}

use cdsr_lab::train::{train, RunConfig, TrainOptions};
use common::quiet;

/// configs/smoke.toml on the repository's 300-user slice.
fn smoke() -> RunConfig {
    let mut cfg = RunConfig::from_file(&common::project_root().join("configs/smoke.toml")).unwrap();
    cfg.data.path = cdsr_lab::data::repo_data_dir().join("food-kitchen-mini");
    cfg
}

type Mutation = fn(&mut RunConfig);

/// Every rule of the run config is a case of `ConfigError` naming its field: the values the
/// probe found accepted (a negative learning rate or weight decay, zero epochs, zero
/// evaluation or training negatives, a zero dLoRA rank, zero users) and the others. Training
/// such a config writes nothing.
#[test]
fn every_config_rule_names_its_field() {
    let cases: [(&str, Mutation, &str); 26] = [
        (
            "optim.lr",
            |c| c.optim.lr = -1e-3,
            "optim.lr must be a finite number above 0, got -0.001",
        ),
        ("optim.lr", |c| c.optim.lr = f64::NAN, "got NaN"),
        (
            "optim.weight_decay",
            |c| c.optim.weight_decay = -5.0,
            "must be a finite number of at least 0, got -5",
        ),
        (
            "optim.beta1",
            |c| c.optim.beta1 = 1.0,
            "optim.beta1 must be in [0, 1), got 1",
        ),
        ("optim.beta2", |c| c.optim.beta2 = -0.1, "[0, 1)"),
        ("optim.eps", |c| c.optim.eps = 0.0, "above 0"),
        (
            "optim.plateau_factor",
            |c| c.optim.plateau_factor = 1.5,
            "(0, 1], got 1.5",
        ),
        (
            "train.epochs",
            |c| c.train.epochs = 0,
            "train.epochs must be at least 1, got 0",
        ),
        (
            "train.eval_negatives",
            |c| c.train.eval_negatives = 0,
            "at least 1",
        ),
        (
            "train.negatives_per_domain",
            |c| c.train.negatives_per_domain = 0,
            "at least 1",
        ),
        ("train.batch_size", |c| c.train.batch_size = 0, "at least 1"),
        (
            "train.eval_batch_size",
            |c| c.train.eval_batch_size = 0,
            "at least 1",
        ),
        ("train.threads", |c| c.train.threads = Some(0), "at least 1"),
        (
            "train.temperature",
            |c| c.train.temperature = 0.0,
            "above 0",
        ),
        (
            "data.max_users",
            |c| c.data.max_users = Some(0),
            "data.max_users must be at least 1",
        ),
        (
            "model.rank_domain",
            |c| c.model.rank_domain = 0,
            "model.rank_domain must be at least 1, got 0",
        ),
        (
            "model.rank_invariant",
            |c| c.model.rank_invariant = 0,
            "at least 1",
        ),
        ("model.ffn_hidden", |c| c.model.ffn_hidden = 0, "at least 1"),
        ("model.max_len", |c| c.model.max_len = 0, "at least 1"),
        ("model.d_model", |c| c.model.d_model = 0, "at least 1"),
        (
            "model.heads",
            |c| c.model.heads = 3,
            "model.d_model (16) must be a positive multiple of model.heads (3)",
        ),
        (
            "model.dropout",
            |c| c.model.dropout = 1.0,
            "model.dropout must be in [0, 1), got 1",
        ),
        (
            "model.mask_prob",
            |c| c.model.mask_prob = Some(0.2),
            "is for model.kind = \"bert4rec\"",
        ),
        (
            "gca.heads",
            |c| c.gca.heads = 3,
            "gca.heads (3) must divide model.d_model (16)",
        ),
        (
            "gca.positions",
            |c| c.gca.positions = vec![0, 5],
            "gca.positions contains 5",
        ),
        (
            "autocdsr.layers",
            |c| {
                c.autocdsr = Some(cdsr_lab::train::AutoCdsrConfig {
                    layers: vec![1],
                    ..Default::default()
                })
            },
            "autocdsr.layers contains 1, but the model has 1",
        ),
    ];
    let root = tempfile::tempdir().unwrap();
    for (field, mutate, says) in cases {
        let mut cfg = smoke();
        mutate(&mut cfg);
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.field(), field, "{e}");
        let text = e.to_string();
        assert!(text.contains(field) && text.contains(says), "{text}");
        let dir = root.path().join(field);
        let err = train(&cfg, &dir, quiet()).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert!(
            !dir.exists(),
            "{field}: a refused config wrote {}",
            dir.display()
        );
    }
    smoke().validate().unwrap();
}

/// The rules hold for every committed configuration and sweep.
#[test]
fn committed_configs_and_sweeps_pass_the_rules() {
    let root = common::project_root();
    for dir in ["configs", "sweeps"] {
        for f in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = f.unwrap().path();
            if dir == "configs" {
                RunConfig::from_file(&path).unwrap_or_else(|e| panic!("{e:#}"));
            } else {
                common::stdout_of(
                    common::cdsr_lab()
                        .args(["sweep", "plan"])
                        .arg(&path)
                        .current_dir(&root),
                );
            }
        }
    }
}

/// `cdsr-lab train` on a config with a negative learning rate: one line naming the file and
/// the field, and no run directory.
#[test]
fn cli_train_refuses_a_bad_config_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::project_root().join("configs/smoke.toml"))
        .unwrap()
        .replace("lr = 1e-3", "lr = -1e-3");
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, text).unwrap();
    let out = common::cdsr_lab()
        .args(["train", "--quiet", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .current_dir(common::project_root())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: config {}: optim.lr must be a finite number above 0, got -0.001\n",
            config.display()
        )
    );
    assert!(!tmp.path().join("runs").exists());
}

/// A run killed after an epoch whose data no longer loads when it is resumed: the run is
/// marked `failed` with the loader's error (it stayed `running`), and once the data is back,
/// resuming completes it.
#[test]
fn a_failed_resume_leaves_the_run_failed_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("food-kitchen-mini");
    std::fs::create_dir(&data).unwrap();
    let src = cdsr_lab::data::repo_data_dir().join("food-kitchen-mini");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let mut cfg = smoke();
    cfg.data.path = data.clone();
    let dir = tmp.path().join("run");
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
    assert_eq!(common::run_json_status(&dir).as_deref(), Some("running"));
    let map = data.join("map_user_mini.txt");
    let kept = std::fs::read(&map).unwrap();
    std::fs::remove_file(&map).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet()
    };
    let err = format!("{:#}", train(&cfg, &dir, resume.clone()).unwrap_err());
    assert!(err.contains("map_user"), "{err}");
    let manifest = cdsr_lab::runs::read_manifest(&dir).unwrap();
    assert_eq!(manifest.status, cdsr_lab::runs::RunStatus::Failed);
    assert_eq!(manifest.failure.as_deref(), Some(err.as_str()));
    std::fs::write(&map, kept).unwrap();
    assert!(train(&cfg, &dir, resume).unwrap().complete);
    assert_eq!(common::run_json_status(&dir).as_deref(), Some("complete"));
}

/// Data where leave-one-out keeps no user (every user has 2 interactions) is refused before
/// a run directory exists: it ran to `complete` with every metric 0 over 0 test cases.
#[test]
fn data_without_test_cases_is_refused_before_a_run_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("two-each.csv");
    std::fs::write(
        &table,
        "user,item,domain,timestamp\nu1,i1,a,1\nu1,j1,b,2\nu2,i2,a,1\nu2,j2,b,2\n",
    )
    .unwrap();
    let mut cfg = smoke();
    cfg.data.path = table;
    cfg.train.negatives_per_domain = 1;
    let dir = tmp.path().join("run");
    let err = format!("{:#}", train(&cfg, &dir, quiet()).unwrap_err());
    assert!(
        err.contains("no training sequence among its 2 users (2 left out"),
        "{err}"
    );
    assert!(!dir.exists());
}
