//! The loop of [`train`]: data prepared once, a fresh or resumed start, then per epoch the
//! training batches, validation, ABXI's schedule, the test at each new best epoch and a
//! checkpoint.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::autocdsr::{self, AcdEpoch};
use super::checkpoint::{self, LoopState};
use super::evaluate::{evaluate, evaluate_full_ranking, write_capture, AcdByDomain};
use super::loss::batch_loss;
use super::optim::{AdamW, EpochOutcome, Schedule};
use super::stopping;
use super::{RunConfig, RunSummary, TrainOptions};
use crate::data::{self, Dataset, Domain, EvalLayout, LayoutConfig, Part, Split, TrainLayout};
use crate::eval::names;
use crate::eval::{Candidates, EvalReport};
use crate::model::nn::{DType, Tensor};
use crate::model::Model;
use crate::runs::{self, FinalResults, ParamCounts, RunIdentity, RunWriter};

/// Everything data-side a run needs, built once.
struct Prepared {
    ds: Dataset,
    train: TrainLayout,
    valid: EvalLayout,
    test: EvalLayout,
    valid_cand: Candidates,
    test_cand: Candidates,
    capture: EvalLayout,
}

/// The seed of training step `step` (0-based over the whole run) of a run seeded `seed`: it
/// seeds the step's masking, negatives and dropout.
pub(super) fn step_seed(seed: u64, step: u64) -> u64 {
    data::layout::mix(seed, step + 1)
}

/// The dataset of `cfg` (its first `data.max_users` users), its split and its training layout.
pub(super) fn training_data(cfg: &RunConfig) -> anyhow::Result<(Dataset, Split, TrainLayout)> {
    let loaded = data::load(&cfg.data.path)
        .with_context(|| format!("loading data.path {}", cfg.data.path.display()))?;
    let mut ds = loaded.dataset;
    if let Some(n) = cfg.data.max_users {
        ds.users.truncate(n);
    }
    let split = match &loaded.file_sets {
        Some(fs) if cfg.data.max_users.is_none() => Split::by_file_sets(&ds, fs),
        Some(_) => anyhow::bail!("data.max_users is only supported for leave-one-out datasets"),
        None => Split::leave_one_out(&ds),
    };
    let train = TrainLayout::build(
        &ds,
        &split,
        LayoutConfig {
            max_len: cfg.model.max_len,
            ..Default::default()
        },
    );
    Ok((ds, split, train))
}

fn prepare(cfg: &RunConfig) -> anyhow::Result<Prepared> {
    let (ds, split, train) = training_data(cfg)?;
    let l = cfg.model.max_len;
    let valid = EvalLayout::build(&ds, &split, Part::Valid, l);
    let test = EvalLayout::build(&ds, &split, Part::Test, l);
    // A run over nothing would end `complete` with every metric 0 over 0 cases.
    for (part, n) in [
        ("training sequence", train.len()),
        ("validation case", valid.len()),
        ("test case", test.len()),
    ] {
        anyhow::ensure!(
            n > 0,
            "data.path {}: no {part} among its {} users ({} left out: leave-one-out needs 3 \
             interactions per user)",
            cfg.data.path.display(),
            ds.users.len(),
            split.skipped_users
        );
    }
    data::check_train_negatives(&ds, &train, cfg.train.negatives_per_domain)
        .context("train.negatives_per_domain")?;
    let seed = cfg.train.seed;
    let n = cfg.train.eval_negatives;
    let valid_cand = Candidates::sample(&ds, &valid.cases, Part::Valid, n, seed)?;
    let test_cand = Candidates::sample(&ds, &test.cases, Part::Test, n, seed)?;
    let k = cfg.train.capture_batch_size.min(test.len());
    let capture = EvalLayout::from_cases(&ds, &test.cases[..k], Part::Test, l);
    Ok(Prepared {
        ds,
        train,
        valid,
        test,
        valid_cand,
        test_cand,
        capture,
    })
}

pub(super) fn set_threads(n: Option<usize>) {
    if let Some(n) = n {
        // candle's matmul reads RAYON_NUM_THREADS; rayon's global pool is built once.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

/// The model of `cfg` for dataset `ds` (f32, weights fixed by the seed) on `train.device`, and
/// its optimiser.
pub fn build_model(cfg: &RunConfig, ds: &Dataset) -> anyhow::Result<(Model, AdamW)> {
    crate::model::nn::keep_freed_memory();
    let model = Model::new(
        &cfg.model,
        &cfg.gca,
        cfg.autocdsr.as_ref().and_then(|a| a.ib.as_ref()),
        ds.vocab_size(),
        ds.n_items[0],
        cfg.train.seed,
        DType::F32,
        &cfg.train.device.open()?,
    )?;
    let opt = AdamW::new(model.params().vars(), &cfg.optim)?;
    Ok((model, opt))
}

/// A fresh start (a new run directory, or the same configuration's directory killed before
/// its first checkpoint) or, with `opts.resume` and a checkpoint, the model, optimiser and
/// loop state of the last finished epoch.
fn start_or_resume(
    cfg: &RunConfig,
    run_dir: &Path,
    opts: &TrainOptions,
    ds: &Dataset,
    model: &Model,
    opt: &mut AdamW,
) -> anyhow::Result<(RunWriter, LoopState)> {
    let ckpt = checkpoint::path(run_dir);
    if opts.resume && ckpt.exists() {
        let (tensors, state) = checkpoint::load(run_dir, DType::F32)?;
        model.params().load_named(&tensors)?;
        let names: Vec<String> = model
            .params()
            .params()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let get = |prefix: &str| -> anyhow::Result<Vec<Tensor>> {
            names
                .iter()
                .map(|n| {
                    let t = tensors
                        .get(&format!("{prefix}{n}"))
                        .with_context(|| format!("checkpoint lacks {prefix}{n}"))?;
                    Ok(t.to_device(model.params().device())?)
                })
                .collect()
        };
        opt.restore(get("adam.m.")?, get("adam.v.")?, state.step)?;
        return Ok((RunWriter::resume(run_dir, state.epoch as u32)?, state));
    }
    if opts.resume && opts.progress {
        // Resuming a run that never started is normal (notebooks, sweeps): say it only
        // where a person watches.
        eprintln!("no checkpoint at {}: starting fresh", ckpt.display());
    }
    let run_id = run_dir
        .file_name()
        .with_context(|| format!("run directory {} has no name", run_dir.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = run_dir.parent().unwrap_or(Path::new("."));
    let identity = RunIdentity {
        run_id,
        model: cfg.model.kind.as_str().to_owned(),
        dataset: ds.name.clone(),
        seed: cfg.train.seed,
    };
    let started = run_dir.join(runs::RUN_JSON);
    let mut w = if opts.resume && started.exists() {
        // Killed before its first checkpoint: no epoch to keep, so the run starts over in
        // its own directory (the same configuration only).
        let found = runs::read_manifest(run_dir)?;
        anyhow::ensure!(
            found.config == serde_json::to_value(cfg)?,
            "{} holds a run of another configuration and no checkpoint; not resuming into it",
            started.display()
        );
        RunWriter::resume(run_dir, 0)?
    } else {
        RunWriter::create(parent, identity, cfg)?
    };
    w.set_params(ParamCounts {
        total: model.params().total_params() as u64,
        by_module: model
            .param_count()
            .iter()
            .map(|(k, &v)| (k.clone(), v as u64))
            .collect(),
    })?;
    let state = LoopState {
        epoch: 0,
        step: 0,
        schedule: Schedule::new(&cfg.optim),
        best_epoch: None,
        best_test: None,
        best_test_full: None,
        wall_time_s: 0.0,
        stopped: false,
        stop_reason: None,
    };
    Ok((w, state))
}

/// What one epoch of training batches did.
struct TrainedEpoch {
    /// Mean loss per sequence.
    loss: f64,
    /// AutoCDSR's per-step means (empty without `[autocdsr]`).
    acd: AcdEpoch,
}

/// The loss became NaN or infinite: the run fails with this reason.
struct Diverged(String);

/// The training batches of `epoch`: loss, backward and AdamW (or AutoCDSR's step) per batch.
fn train_epoch(
    cfg: &RunConfig,
    prep: &Prepared,
    model: &Model,
    opt: &mut AdamW,
    state: &mut LoopState,
    epoch: usize,
    progress: bool,
) -> anyhow::Result<Result<TrainedEpoch, Diverged>> {
    let ds = &prep.ds;
    let bs = cfg.train.batch_size;
    let n_batches = prep.train.len().div_ceil(bs);
    let pb = if progress {
        let pb = indicatif::ProgressBar::new(n_batches as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        pb.set_prefix(format!("{epoch}/{}", cfg.train.epochs));
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut loss_sum = 0.0;
    let mut loss_n = 0usize;
    let mut acd_epoch = AcdEpoch::default();
    // Pareto-MTL's recomputation steps count from each epoch's first.
    let mut schedule = None;
    for batch in prep.train.batches(bs, cfg.train.seed, epoch as u64) {
        let step_seed = step_seed(cfg.train.seed, state.step);
        let batch_loss = batch_loss(model, ds, &prep.train, &batch, cfg, step_seed)?;
        let lv = batch_loss.loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Ok(Err(Diverged(format!(
                "loss became {lv} at epoch {epoch}, step {}",
                state.step + 1
            ))));
        }
        match &cfg.autocdsr {
            None => opt.backward_step(&batch_loss.loss, state.schedule.lr)?,
            Some(auto) => {
                let pareto = schedule.get_or_insert_with(|| autocdsr::ParetoSchedule::new(auto));
                let step = autocdsr::batch_step(
                    opt,
                    model,
                    ds,
                    &batch_loss,
                    auto,
                    state.schedule.lr,
                    pareto,
                    None,
                )?;
                acd_epoch.add(&step);
            }
        }
        state.step += 1;
        loss_sum += lv * batch.batch_size() as f64;
        loss_n += batch.batch_size();
        pb.inc(1);
        pb.set_message(format!("loss {:.4}", loss_sum / loss_n as f64));
    }
    pb.finish_and_clear();
    Ok(Ok(TrainedEpoch {
        loss: loss_sum / loss_n.max(1) as f64,
        acd: acd_epoch,
    }))
}

/// One `metrics.jsonl` row per domain of an evaluation: its metrics and the merged stream's
/// mean `a_cd` (when the model has one).
fn log_evaluation(
    writer: &mut RunWriter,
    epoch: usize,
    split: runs::Split,
    report: &EvalReport,
    acd: &AcdByDomain,
) -> anyhow::Result<()> {
    for d in Domain::BOTH {
        writer.log_metrics(
            epoch as u32,
            split,
            Some(d),
            report
                .domain(d)
                .iter()
                .chain(acd[d.index()].map(|v| (names::A_CD, v))),
        )?;
    }
    Ok(())
}

/// At a new best epoch: the test metrics (sampled, and full ranking when enabled) into the
/// log and the loop state, the capture tensors and the test cases.
fn record_best(
    cfg: &RunConfig,
    prep: &Prepared,
    model: &Model,
    writer: &mut RunWriter,
    state: &mut LoopState,
    epoch: usize,
) -> anyhow::Result<()> {
    let ds = &prep.ds;
    let (test, test_acd, test_cases) = evaluate(
        model,
        ds,
        &prep.test,
        &prep.test_cand,
        cfg.train.eval_batch_size,
        !cfg.gca.positions.is_empty(),
    )?;
    log_evaluation(writer, epoch, runs::Split::Test, &test, &test_acd)?;
    state.best_epoch = Some(epoch);
    state.best_test = Some(test);
    state.best_test_full = if cfg.train.full_ranking {
        Some(evaluate_full_ranking(
            model,
            ds,
            &prep.test,
            cfg.train.eval_batch_size,
        )?)
    } else {
        None
    };
    write_capture(model, ds, &prep.capture, writer)?;
    writer.write_test_cases(&mut runs::test_cases_frame(&test_cases)?)?;
    Ok(())
}

/// Model parameters, AdamW moments and the loop state, written atomically.
fn save_checkpoint(
    run_dir: &Path,
    model: &Model,
    opt: &AdamW,
    state: &LoopState,
) -> anyhow::Result<()> {
    let mut tensors = model.params().named_tensors();
    let (m, v) = opt.moments();
    for (i, p) in model.params().params().iter().enumerate() {
        tensors.push((format!("adam.m.{}", p.name), m[i].clone()));
        tensors.push((format!("adam.v.{}", p.name), v[i].clone()));
    }
    checkpoint::save(run_dir, &tensors, state)
}

fn domain_metrics(r: &EvalReport) -> runs::DomainMetrics {
    Domain::BOTH
        .iter()
        .map(|&d| (d, runs::metrics(r.domain(d).iter())))
        .collect()
}

/// The summary of a run whose `run.json` already says `complete`, read without writing
/// anything: resuming a complete run is a no-op (rewriting `run.json` would change it, e.g.
/// its wall time). `None` for any other run directory.
fn complete_summary(cfg: &RunConfig, run_dir: &Path) -> anyhow::Result<Option<RunSummary>> {
    let Ok(m) = runs::read_manifest(run_dir) else {
        return Ok(None);
    };
    if m.status != runs::RunStatus::Complete {
        return Ok(None);
    }
    anyhow::ensure!(
        m.config == serde_json::to_value(cfg)?,
        "{} holds a complete run of another configuration",
        run_dir.join(runs::RUN_JSON).display()
    );
    // The checkpoint keeps the best epoch's reports in the trainer's own form.
    let state = if checkpoint::path(run_dir).exists() {
        Some(checkpoint::load(run_dir, DType::F32)?.1)
    } else {
        None
    };
    Ok(Some(RunSummary {
        run_dir: run_dir.to_path_buf(),
        best_epoch: m.best_epoch.map(|e| e as usize),
        epochs_run: m.epochs_run as usize,
        test: state.as_ref().and_then(|s| s.best_test),
        test_full: state.and_then(|s| s.best_test_full),
        params_total: m.params.total as usize,
        wall_time_s: m.wall_time_s.unwrap_or_default(),
        complete: true,
        stop_reason: m.stopped_by(),
    }))
}

/// Trains `cfg` into `run_dir` (created; its parent must exist or be creatable). With
/// `opts.resume`, a run already complete is left as it is and its summary returned.
///
/// Every failure after the run directory is this call's (created, or named for resuming)
/// leaves it `failed` with the reason in `run.json`, an error or a panic alike, never
/// `running`: only a process killed outright leaves `running`, and resuming continues it.
pub fn train(cfg: &RunConfig, run_dir: &Path, opts: TrainOptions) -> anyhow::Result<RunSummary> {
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("run config: {e}"))?;
    if opts.resume {
        if let Some(done) = complete_summary(cfg, run_dir)? {
            return Ok(done);
        }
    }
    let mut owned = opts.resume;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_into(cfg, run_dir, &opts, &mut owned)
    }));
    let failure = match &result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(format!("panic: {}", panic_text(panic.as_ref()))),
    };
    if let (Some(reason), true) = (failure, owned) {
        if let Err(e) = mark_failed(cfg, run_dir, &reason) {
            eprintln!(
                "{}: could not mark the run failed: {e:#}",
                run_dir.display()
            );
        }
    }
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Marks the run of `cfg` in `run_dir` `failed` with `reason`, when its `run.json` says it is
/// running (a run this call never opened, or of another configuration, is left alone).
fn mark_failed(cfg: &RunConfig, run_dir: &Path, reason: &str) -> anyhow::Result<()> {
    let Ok(m) = runs::read_manifest(run_dir) else {
        return Ok(());
    };
    if m.status == runs::RunStatus::Running && m.config == serde_json::to_value(cfg)? {
        RunWriter::mark_failed(run_dir, reason)?;
    }
    Ok(())
}

/// [`train`] after the config checks; sets `owned` once the run directory is this call's.
fn train_into(
    cfg: &RunConfig,
    run_dir: &Path,
    opts: &TrainOptions,
    owned: &mut bool,
) -> anyhow::Result<RunSummary> {
    set_threads(cfg.train.threads);
    let started = Instant::now();
    let prep = prepare(cfg)?;
    let ds = &prep.ds;
    let (model, mut opt) = build_model(cfg, ds)?;
    let params_total = model.params().total_params();
    let (mut writer, mut state) = start_or_resume(cfg, run_dir, opts, ds, &model, &mut opt)?;
    *owned = true;
    let wall_before = state.wall_time_s;
    let mut epochs_this_call = 0usize;
    let budget = stopping::Budget {
        epochs: cfg.train.epochs,
        wall_time_s: cfg.train.max_wall_time_s,
    };
    // A run that has stopped (early, or at a cap already spent) never trains further.
    let recorded = state
        .stop_reason
        .or(state.stopped.then_some(stopping::StopReason::EarlyStop));
    let mut stop = stopping::stopped_before(recorded, state.epoch, state.wall_time_s, &budget);
    while stop.is_none() {
        if opts
            .stop_after_epochs
            .is_some_and(|k| epochs_this_call >= k)
        {
            break;
        }
        let epoch = state.epoch + 1;
        let trained = match train_epoch(
            cfg,
            &prep,
            &model,
            &mut opt,
            &mut state,
            epoch,
            opts.progress,
        )? {
            Ok(trained) => trained,
            Err(Diverged(reason)) => {
                writer.fail(&reason)?;
                anyhow::bail!(reason);
            }
        };
        let wall = wall_before + started.elapsed().as_secs_f64();
        let lr_used = state.schedule.lr;
        writer.log_metrics(
            epoch as u32,
            runs::Split::Train,
            None,
            [
                (names::LOSS, trained.loss),
                (names::LR, lr_used),
                (names::WALL_TIME_S, wall),
            ]
            .into_iter()
            .chain(
                cfg.autocdsr
                    .as_ref()
                    .map_or(vec![], |_| trained.acd.metrics().to_vec()),
            ),
        )?;
        let (valid, valid_acd, _) = evaluate(
            &model,
            ds,
            &prep.valid,
            &prep.valid_cand,
            cfg.train.eval_batch_size,
            false,
        )?;
        log_evaluation(&mut writer, epoch, runs::Split::Valid, &valid, &valid_acd)?;
        let outcome = state
            .schedule
            .end_epoch(&cfg.optim, epoch, valid.selection_score());
        stop = stopping::stop_after_epoch(
            outcome,
            epoch,
            wall_before + started.elapsed().as_secs_f64(),
            &budget,
        );
        // A run that stops before any epoch improved (still in warm-up at a cap) selects its
        // last epoch, so it always ends with a model and test metrics.
        let take_best =
            outcome == EpochOutcome::Improved || (stop.is_some() && state.best_epoch.is_none());
        if take_best {
            record_best(cfg, &prep, &model, &mut writer, &mut state, epoch)?;
        }
        state.stopped = stop == Some(stopping::StopReason::EarlyStop);
        state.stop_reason = stop;
        state.epoch = epoch;
        state.wall_time_s = wall_before + started.elapsed().as_secs_f64();
        if opts.progress {
            eprintln!(
                "epoch {epoch}: loss {:.4} valid MRR A {:.4} B {:.4} {}",
                trained.loss,
                valid.a.mrr,
                valid.b.mrr,
                if take_best { "(best)" } else { "" }
            );
        }
        save_checkpoint(run_dir, &model, &opt, &state)?;
        epochs_this_call += 1;
    }
    let complete = stop.is_some();
    let test = state.best_test;
    let test_full = state.best_test_full;
    let wall = state.wall_time_s;
    if complete {
        writer.finish(FinalResults {
            best_epoch: state.best_epoch.map(|e| e as u32),
            epochs_run: state.epoch as u32,
            wall_time_s: Some(wall),
            test: test.as_ref().map(domain_metrics).unwrap_or_default(),
            test_full: test_full.as_ref().map(domain_metrics),
            stop_reason: stop,
        })?;
    }
    Ok(RunSummary {
        run_dir: run_dir.to_path_buf(),
        best_epoch: state.best_epoch,
        epochs_run: state.epoch,
        test,
        test_full,
        params_total,
        wall_time_s: wall,
        complete,
        stop_reason: stop,
    })
}
