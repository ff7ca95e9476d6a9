//! The training loop: [`train`] runs one [`RunConfig`] into a run directory (format v1, see
//! `docs/run-format.md`), resumable after a kill.
//!
//! Per epoch: shuffled batches ([`crate::data::TrainLayout::batches`]), ABXI's negatives
//! ([`crate::data::sample_train_negatives`]), sampled-softmax InfoNCE, AdamW; then validation
//! (sampled negatives, [`crate::eval`]), ABXI's schedule (warm-up, plateau, early stop), and at
//! each new best validation MRR_A + MRR_B the test metrics (sampled and full ranking) and the
//! GCA capture. A checkpoint is written atomically after every epoch.
//!
//! Deterministic on CPU for a fixed seed and thread count: every random draw is seeded from
//! `(seed, epoch)` or `(seed, step)`.

pub mod autocdsr;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod optim;
pub mod pareto;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use config::{DataConfig, OptimConfig, RunConfig, TrainConfig};
use optim::{AdamW, EpochOutcome, Schedule};

use crate::data::{
    self, sample_train_negatives, Dataset, Domain, EvalBatch, EvalLayout, LayoutConfig,
    NegativeSharing, Part, Split, TrainBatch, TrainLayout,
};
use crate::eval::{evaluate_full, evaluate_sampled_ranks, Candidates, EvalReport};
use crate::model::attention_share::{attention_share, domain_labels, ShareConfig};
use crate::model::nn::{Ctx, DType, Device, Tensor};
use crate::model::{info_nce, score_candidates, Model, ModelKind, Negatives, SeqBatch};
use crate::runs::{self, FinalResults, ParamCounts, RunIdentity, RunWriter, TensorSet};
use checkpoint::LoopState;

/// Options of one call that are not part of the run's identity.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `run_dir/checkpoint` instead of starting fresh.
    pub resume: bool,
    /// Show a progress bar (loss, ETA) on stderr.
    pub progress: bool,
    /// Stop after this many epochs *in this call* (tests use it to simulate a kill).
    pub stop_after_epochs: Option<usize>,
}

/// What a finished (or stopped) run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    /// Test metrics at the best epoch (sampled negatives).
    pub test: Option<EvalReport>,
    /// Test metrics at the best epoch (full ranking), when enabled.
    pub test_full: Option<EvalReport>,
    pub params_total: usize,
    pub wall_time_s: f64,
    /// False when the call stopped early on `stop_after_epochs`.
    pub complete: bool,
}

/// What `cdsr-lab train` prints: the run directory, its size and time, the test metrics.
impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "run: {}", self.run_dir.display())?;
        writeln!(
            f,
            "params: {}  epochs: {}  best epoch: {:?}  wall time: {:.1}s",
            self.params_total, self.epochs_run, self.best_epoch, self.wall_time_s
        )?;
        for (what, report) in [("", &self.test), (" full-ranking", &self.test_full)] {
            let Some(t) = report else { continue };
            for d in Domain::BOTH {
                let m = t.domain(d);
                writeln!(
                    f,
                    "test{what} {d}: NDCG@10 {:.4}  HR@10 {:.4}  MRR {:.4}  AUC {:.4}",
                    m.ndcg_10, m.hr_10, m.mrr, m.auc
                )?;
            }
        }
        Ok(())
    }
}

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

fn prepare(cfg: &RunConfig) -> anyhow::Result<Prepared> {
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
    let l = cfg.model.max_len;
    let train = TrainLayout::build(
        &ds,
        &split,
        LayoutConfig {
            max_len: l,
            ..Default::default()
        },
    );
    data::check_train_negatives(&ds, &train, cfg.train.negatives_per_domain)
        .context("train.negatives_per_domain")?;
    let valid = EvalLayout::build(&ds, &split, Part::Valid, l);
    let test = EvalLayout::build(&ds, &split, Part::Test, l);
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

fn rows_of<T: Copy>(flat: &[T], l: usize) -> Vec<Vec<T>> {
    flat.chunks(l).map(|c| c.to_vec()).collect()
}

/// Model input of a training batch.
fn train_input(b: &TrainBatch, dtype: DType) -> anyhow::Result<SeqBatch> {
    let l = b.max_len;
    let td: Vec<Vec<Option<usize>>> = b
        .target_domain
        .chunks(l)
        .map(|r| {
            r.iter()
                .map(|&c| match c {
                    data::layout::TARGET_A => Some(0),
                    data::layout::TARGET_B => Some(1),
                    _ => None,
                })
                .collect()
        })
        .collect();
    Ok(SeqBatch::new(
        &rows_of(&b.x, l),
        &rows_of(&b.a, l),
        &rows_of(&b.b, l),
        &td,
        l,
        dtype,
    )?)
}

/// The merged input rows a model reads for an evaluation batch: the history, or for a masked
/// model the history followed by the target domain's mask token ([`data::cloze`]).
fn eval_rows(ds: &Dataset, kind: ModelKind, b: &EvalBatch) -> Vec<Vec<data::ItemId>> {
    let rows = rows_of(b.x, b.max_len);
    if !kind.is_masked() {
        return rows;
    }
    rows.iter()
        .zip(b.target_domain)
        .map(|(r, &d)| data::cloze::masked_last(ds, r, d))
        .collect()
}

/// Model input of an evaluation batch: every position carries the case's target domain.
fn eval_input(x: &[Vec<data::ItemId>], b: &EvalBatch, dtype: DType) -> anyhow::Result<SeqBatch> {
    let l = b.max_len;
    let td: Vec<Vec<Option<usize>>> = b
        .target_domain
        .iter()
        .map(|d| vec![Some(d.index()); l])
        .collect();
    Ok(SeqBatch::new(
        x,
        &rows_of(b.a, l),
        &rows_of(b.b, l),
        &td,
        l,
        dtype,
    )?)
}

/// Named tensors recorded during a forward pass (GCA inputs and outputs, attention maps).
pub type Captured = Vec<(String, Tensor)>;

/// What an evaluation forward pass returns.
struct EvalForward {
    /// The last position's representation `[b, d]`.
    h_last: Tensor,
    /// GCA inputs and outputs, when asked for.
    capture: Option<Captured>,
    /// Self-attention maps (`attn.L.S`), when asked for.
    attn: Option<Captured>,
    /// The merged input rows the model read.
    x: Vec<Vec<data::ItemId>>,
}

/// The forward pass of an evaluation batch (no dropout).
fn eval_repr(
    model: &Model,
    ds: &Dataset,
    b: &EvalBatch,
    capture: bool,
    attention: bool,
) -> anyhow::Result<EvalForward> {
    let x = eval_rows(ds, model.kind(), b);
    let input = eval_input(&x, b, DType::F32)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut ctx = Ctx::new(false, &mut rng);
    ctx.last_only = true;
    if capture {
        ctx.capture = Some(Vec::new());
    }
    if attention {
        ctx.attn_probs = Some(Vec::new());
    }
    let h = model.forward(&input, &mut ctx)?;
    let l = h.dim(1)?;
    Ok(EvalForward {
        h_last: h.narrow(1, l - 1, 1)?.squeeze(1)?.contiguous()?,
        capture: ctx.capture,
        attn: ctx.attn_probs,
        x,
    })
}

/// Mean `a_cd` of the merged stream per target domain (A, B) over the evaluated cases that
/// have a valid token; `None` for a domain without such cases.
pub type AcdByDomain = [Option<f64>; 2];

/// Per case of an evaluation batch: the merged stream's `a_cd` per layer (normalised per
/// valid query row, mean over heads; [`crate::model::attention_share`]), or for an AutoCDSR+
/// model the share onto the IB tokens ([`crate::model::autocdsr::ib_case_share`]); `None` for
/// a case without valid tokens or a model without a merged stream.
fn case_acd(
    ds: &Dataset,
    x: &[Vec<data::ItemId>],
    attn: &[(String, Tensor)],
    ib_tokens: Option<usize>,
) -> anyhow::Result<Vec<Option<Vec<f64>>>> {
    let flat: Vec<data::ItemId> = x.iter().flatten().copied().collect();
    let len = x.first().map_or(0, |r| r.len());
    let items = ndarray::ArrayView2::from_shape((x.len(), len), &flat)?;
    if let Some(k) = ib_tokens {
        return case_ib_share(ds, items, attn, k);
    }
    let (labels, valid) = domain_labels(ds, items);
    let mut layers = Vec::new();
    let mut rows = None;
    for (_, p) in attn.iter().filter(|(name, _)| name.ends_with(".x")) {
        let map = host_map(p)?;
        let share = attention_share(
            map.view(),
            labels.view(),
            valid.view(),
            &ShareConfig::two_domains(),
        )?;
        layers.push(share.norm_head_mean());
        rows = Some(share.valid_rows);
    }
    let Some(rows) = rows else {
        return Ok(vec![None; x.len()]);
    };
    Ok((0..x.len())
        .map(|i| (rows[i] > 0).then(|| layers.iter().map(|l| l[i]).collect()))
        .collect())
}

/// A recorded attention map `[batch, heads, q, k]` as a host array.
fn host_map(p: &Tensor) -> anyhow::Result<ndarray::Array4<f32>> {
    let v = p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(ndarray::Array4::from_shape_vec(p.dims4()?, v)?)
}

/// [`case_acd`] of an AutoCDSR+ model: per case and layer, the share onto the IB tokens.
fn case_ib_share(
    ds: &Dataset,
    items: ndarray::ArrayView2<data::ItemId>,
    attn: &[(String, Tensor)],
    k: usize,
) -> anyhow::Result<Vec<Option<Vec<f64>>>> {
    let streams = crate::model::autocdsr::ib_streams(ds, items)?;
    let host = |name: String| -> anyhow::Result<ndarray::Array4<f32>> {
        let p = attn
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p)
            .with_context(|| format!("no attention map {name} was recorded"))?;
        host_map(p)
    };
    let n_layers = attn.iter().filter(|(n, _)| n.ends_with(".a")).count();
    let mut layers = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let (a, b) = (host(format!("attn.{l}.a"))?, host(format!("attn.{l}.b"))?);
        layers.push(crate::model::autocdsr::ib_case_share(
            [a.view(), b.view()],
            k,
            &streams,
        )?);
    }
    Ok((0..items.nrows())
        .map(|i| layers.iter().map(|l| l[i]).collect::<Option<Vec<f64>>>())
        .collect())
}

/// One evaluated case: its domain, the rank of its target among the candidates and the
/// merged stream's `a_cd` per layer.
#[derive(Debug, Clone)]
struct CaseRecord {
    domain: Domain,
    rank: usize,
    a_cd: Option<Vec<f64>>,
}

/// Sampled-negative evaluation: the metrics of `layout`, the merged stream's mean `a_cd` per
/// domain and every case's record (in the layout's order).
fn evaluate(
    model: &Model,
    ds: &Dataset,
    layout: &EvalLayout,
    cand: &Candidates,
    batch: usize,
) -> anyhow::Result<(EvalReport, AcdByDomain, Vec<CaseRecord>)> {
    let mut err = None;
    // (domain, a_cd) per case in the layout's order; the ranks come from the evaluator.
    let mut shares = Vec::with_capacity(layout.len());
    let (report, ranks) = evaluate_sampled_ranks(layout, cand, batch, |b, items| {
        let mut run = || -> anyhow::Result<Vec<f32>> {
            let out = eval_repr(model, ds, b, false, true)?;
            let per_case = case_acd(
                ds,
                &out.x,
                out.attn.as_deref().unwrap_or_default(),
                model.ib_tokens(),
            )?;
            shares.extend(b.target_domain.iter().copied().zip(per_case));
            let ids =
                Tensor::from_vec(items.to_vec(), (b.batch_size(), cand.width()), &Device::Cpu)?;
            Ok(score_candidates(&out.h_last, model.item_embedding(), &ids)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        run().unwrap_or_else(|e| {
            err.get_or_insert(e);
            vec![f32::NAN; b.batch_size() * cand.width()]
        })
    });
    if let Some(e) = err {
        return Err(e);
    }
    let cases: Vec<CaseRecord> = shares
        .into_iter()
        .zip(ranks)
        .map(|((domain, a_cd), rank)| CaseRecord { domain, rank, a_cd })
        .collect();
    let mut acd = [(0.0f64, 0usize); 2];
    for c in &cases {
        if let Some(v) = &c.a_cd {
            acd[c.domain.index()].0 += v.iter().sum::<f64>();
            acd[c.domain.index()].1 += 1;
        }
    }
    Ok((
        report,
        acd.map(|(s, n)| (n > 0).then(|| s / n as f64)),
        cases,
    ))
}

/// `test_cases.parquet`: one row per test case (`sample` = its index in the test layout,
/// `domain`, `rank`, `hit@10`, `a_cd` summed over layers and `a_cd@L` per layer; null without
/// a merged stream), so runs can be compared case by case (AutoCDSR's diagnostic).
fn test_cases_frame(cases: &[CaseRecord]) -> anyhow::Result<polars::prelude::DataFrame> {
    use polars::prelude::{Column, DataFrame};
    let n = cases.len();
    let layers = cases
        .iter()
        .filter_map(|c| c.a_cd.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut columns = vec![
        Column::new("sample".into(), (0..n as i64).collect::<Vec<_>>()),
        Column::new(
            "domain".into(),
            cases
                .iter()
                .map(|c| c.domain.to_string())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "rank".into(),
            cases.iter().map(|c| c.rank as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "hit@10".into(),
            cases.iter().map(|c| c.rank <= 10).collect::<Vec<_>>(),
        ),
        Column::new(
            "a_cd".into(),
            cases
                .iter()
                .map(|c| c.a_cd.as_ref().map(|v| v.iter().sum::<f64>()))
                .collect::<Vec<_>>(),
        ),
    ];
    for l in 0..layers {
        columns.push(Column::new(
            format!("a_cd@{l}").into(),
            cases
                .iter()
                .map(|c| c.a_cd.as_ref().and_then(|v| v.get(l).copied()))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(DataFrame::new(n, columns)?)
}

fn evaluate_full_ranking(
    model: &Model,
    ds: &Dataset,
    layout: &EvalLayout,
    batch: usize,
) -> anyhow::Result<EvalReport> {
    let mut err = None;
    let v = ds.vocab_size();
    let report = evaluate_full(ds, layout, batch, |b| {
        let run = || -> anyhow::Result<Vec<f32>> {
            let h = eval_repr(model, ds, b, false, false)?.h_last;
            // Items only: a masked model's table also holds its two mask tokens.
            let items = model.item_embedding().weight.narrow(0, 0, v)?;
            Ok(h.matmul(&items.t()?)?.flatten_all()?.to_vec1::<f32>()?)
        };
        run().unwrap_or_else(|e| {
            err.get_or_insert(e);
            vec![f32::NAN; b.batch_size() * v]
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// What [`batch_loss`] computed for one training batch.
pub struct BatchLoss<'a> {
    pub loss: Tensor,
    /// For an AutoCDSR run (`cfg.autocdsr`), the self-attention maps of the forward pass (not
    /// detached: the a_cd objective is put on them); empty otherwise.
    pub attention: Captured,
    /// The batch as the model read it: the layout's batch, or its masked copy for a masked
    /// model ([`data::cloze::mask_train_batch`]).
    pub input: std::borrow::Cow<'a, TrainBatch>,
}

/// The loss of one training batch (`train` mode; items masked, negatives drawn and dropout
/// seeded by `step_seed`).
pub fn batch_loss<'a>(
    model: &Model,
    ds: &Dataset,
    layout: &TrainLayout,
    batch: &'a TrainBatch,
    cfg: &RunConfig,
    step_seed: u64,
) -> anyhow::Result<BatchLoss<'a>> {
    let input = if cfg.model.kind.is_masked() {
        let p = cfg
            .model
            .mask_prob
            .unwrap_or(data::cloze::DEFAULT_MASK_PROB);
        std::borrow::Cow::Owned(data::cloze::mask_train_batch(ds, batch, p, step_seed))
    } else {
        std::borrow::Cow::Borrowed(batch)
    };
    let n = cfg.train.negatives_per_domain;
    let negs = sample_train_negatives(ds, layout, &input, n, cfg.train.negative_sharing, step_seed);
    let (loss, attention) =
        forward_loss(model, &input, &negs, cfg, step_seed, cfg.autocdsr.is_some())?;
    Ok(BatchLoss {
        loss,
        attention,
        input,
    })
}

/// The loss of one training batch with given negatives (`[batch, max_len, 2 n]` row-major as
/// [`sample_train_negatives`] returns them): what [`batch_loss`] computes after drawing them,
/// and what the training-step benchmark times on pinned inputs.
pub fn batch_loss_with_negatives(
    model: &Model,
    batch: &TrainBatch,
    negs: &[data::ItemId],
    cfg: &RunConfig,
    step_seed: u64,
) -> anyhow::Result<Tensor> {
    Ok(forward_loss(model, batch, negs, cfg, step_seed, false)?.0)
}

/// [`batch_loss_with_negatives`] plus, when `record_attention`, the self-attention maps of
/// the forward pass (not detached: AutoCDSR puts its objective on them).
fn forward_loss(
    model: &Model,
    batch: &TrainBatch,
    negs: &[data::ItemId],
    cfg: &RunConfig,
    step_seed: u64,
    record_attention: bool,
) -> anyhow::Result<(Tensor, Captured)> {
    let dtype = model.params().dtype();
    let input = train_input(batch, dtype)?;
    let mut rng = ChaCha8Rng::seed_from_u64(step_seed);
    let mut ctx = Ctx::new(true, &mut rng);
    if record_attention {
        ctx.attn_probs = Some(Vec::new());
    }
    let h = model.forward(&input, &mut ctx)?;
    let attn = ctx.attn_probs.take().unwrap_or_default();
    let (bsz, l) = (batch.batch_size(), batch.max_len);
    let w = 2 * cfg.train.negatives_per_domain;
    anyhow::ensure!(
        negs.len() == bsz * l * w,
        "negatives: {} values for a batch of {bsz} x {l} positions x {w}",
        negs.len()
    );
    // ABXI: loss_d = mean over sequences of the mean loss over that sequence's d-targets.
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    let mut per_pos = Vec::new();
    let mut per_row = vec![0u32; bsz * w];
    for r in 0..bsz {
        let row = &batch.target_domain[r * l..(r + 1) * l];
        let counts = [
            row.iter().filter(|&&c| c == data::layout::TARGET_A).count(),
            row.iter().filter(|&&c| c == data::layout::TARGET_B).count(),
        ];
        let mut first = true;
        for (t, &c) in row.iter().enumerate() {
            if c == data::layout::TARGET_NONE {
                continue;
            }
            let d = if c == data::layout::TARGET_A { 0 } else { 1 };
            let k = r * l + t;
            positions.push(k as u32);
            targets.push(batch.target[k]);
            weights.push(1.0 / (counts[d] as f64 * bsz as f64));
            let negs_here = &negs[k * w..(k + 1) * w];
            match cfg.train.negative_sharing {
                NegativeSharing::PerPosition => per_pos.extend_from_slice(negs_here),
                NegativeSharing::PerRow => {
                    if first {
                        per_row[r * w..(r + 1) * w].copy_from_slice(negs_here);
                    }
                }
            }
            first = false;
        }
    }
    let n_pos = positions.len();
    if n_pos == 0 {
        anyhow::bail!("a training batch has no target position");
    }
    let dev = Device::Cpu;
    let positions = Tensor::from_vec(positions, n_pos, &dev)?;
    let targets = Tensor::from_vec(targets, n_pos, &dev)?;
    let weights = Tensor::from_vec(weights, n_pos, &dev)?.to_dtype(dtype)?;
    let negatives = match cfg.train.negative_sharing {
        NegativeSharing::PerPosition => {
            Negatives::PerPosition(Tensor::from_vec(per_pos, (n_pos, w), &dev)?)
        }
        NegativeSharing::PerRow => {
            Negatives::PerSequence(Tensor::from_vec(per_row, (bsz, w), &dev)?)
        }
    };
    let loss = info_nce(
        &h,
        model.item_embedding(),
        &positions,
        &targets,
        &negatives,
        &weights,
        cfg.train.temperature,
    )?;
    Ok((loss, attn))
}

fn report_json(r: &EvalReport) -> serde_json::Value {
    serde_json::to_value(r).expect("metrics serialise")
}

fn domain_metrics(r: &EvalReport) -> runs::DomainMetrics {
    Domain::BOTH
        .iter()
        .map(|&d| (d, runs::metrics(r.domain(d).iter())))
        .collect()
}

fn report_from_json(v: &serde_json::Value) -> Option<EvalReport> {
    serde_json::from_value(v.clone()).ok()
}

/// Writes the capture tensors of the fixed batch (nothing when the model has no GCA).
fn write_capture(model: &Model, prep: &Prepared, writer: &RunWriter) -> anyhow::Result<()> {
    let Some(b) = prep.capture.batches(prep.capture.len().max(1)).next() else {
        return Ok(());
    };
    let cap = eval_repr(model, &prep.ds, &b, true, false)?
        .capture
        .unwrap_or_default();
    if cap.is_empty() {
        return Ok(());
    }
    let mut set = TensorSet::new();
    for (name, t) in cap {
        let shape = t.dims().to_vec();
        if t.dtype() == DType::U8 {
            set.add_u8(&name, &shape, t.flatten_all()?.to_vec1::<u8>()?)?;
        } else {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            set.add_f32(&name, &shape, v)?;
        }
    }
    writer.write_tensors(&set)?;
    Ok(())
}

fn set_threads(n: Option<usize>) {
    if let Some(n) = n {
        // candle's matmul reads RAYON_NUM_THREADS; rayon's global pool is built once.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

/// The model of `cfg` for dataset `ds` (f32, weights fixed by the seed) and its optimiser.
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
    )?;
    let opt = AdamW::new(model.params().vars(), &cfg.optim)?;
    Ok((model, opt))
}

/// Trains `cfg` into `run_dir` (created; its parent must exist or be creatable).
pub fn train(cfg: &RunConfig, run_dir: &Path, opts: TrainOptions) -> anyhow::Result<RunSummary> {
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("run config: {e}"))?;
    set_threads(cfg.train.threads);
    let started = Instant::now();
    let prep = prepare(cfg)?;
    let ds = &prep.ds;
    let (model, mut opt) = build_model(cfg, ds)?;
    let counts = model.param_count();
    let params_total = model.params().total_params();
    let ckpt = checkpoint::path(run_dir);
    let (mut writer, mut state) = if opts.resume && ckpt.exists() {
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
                    tensors
                        .get(&format!("{prefix}{n}"))
                        .cloned()
                        .with_context(|| format!("checkpoint lacks {prefix}{n}"))
                })
                .collect()
        };
        opt.restore(get("adam.m.")?, get("adam.v.")?, state.step)?;
        (RunWriter::resume(run_dir, state.epoch as u32)?, state)
    } else {
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
            total: params_total as u64,
            by_module: counts.iter().map(|(k, &v)| (k.clone(), v as u64)).collect(),
        })?;
        let s = LoopState {
            epoch: 0,
            step: 0,
            schedule: Schedule::new(&cfg.optim),
            best_epoch: None,
            best_test: None,
            best_test_full: None,
            wall_time_s: 0.0,
            stopped: false,
        };
        (w, s)
    };
    let wall_before = state.wall_time_s;
    let mut epochs_this_call = 0usize;
    let bs = cfg.train.batch_size;
    let n_batches = prep.train.len().div_ceil(bs);
    while state.epoch < cfg.train.epochs && !state.stopped {
        if opts
            .stop_after_epochs
            .is_some_and(|k| epochs_this_call >= k)
        {
            break;
        }
        let epoch = state.epoch + 1;
        let pb = if opts.progress {
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
        let mut acd_epoch = autocdsr::AcdEpoch::default();
        for batch in prep.train.batches(bs, cfg.train.seed, epoch as u64) {
            let step_seed = data::layout::mix(cfg.train.seed, state.step + 1);
            let BatchLoss {
                loss,
                attention: attn,
                input,
            } = batch_loss(&model, ds, &prep.train, &batch, cfg, step_seed)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                let reason = format!("loss became {lv} at epoch {epoch}, step {}", state.step + 1);
                writer.fail(&reason)?;
                anyhow::bail!(reason);
            }
            match &cfg.autocdsr {
                None => opt.backward_step(&loss, state.schedule.lr)?,
                Some(auto) => {
                    let items = ndarray::ArrayView2::from_shape(
                        (input.batch_size(), input.max_len),
                        &input.x,
                    )?;
                    let acd = if auto.ib.is_some() {
                        crate::model::autocdsr::ib_objective(&attn, ds, items, auto)?
                    } else {
                        crate::model::autocdsr::acd_objective(&attn, ds, items, auto)?
                    };
                    let step = autocdsr::autocdsr_step(
                        &mut opt,
                        &model.item_embedding().weight,
                        &loss,
                        &acd,
                        auto,
                        state.schedule.lr,
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
        let wall = wall_before + started.elapsed().as_secs_f64();
        let lr_used = state.schedule.lr;
        writer.log_metrics(
            epoch as u32,
            runs::Split::Train,
            None,
            [
                ("loss", loss_sum / loss_n.max(1) as f64),
                ("lr", lr_used),
                ("wall_time_s", wall),
            ]
            .into_iter()
            .chain(
                cfg.autocdsr
                    .as_ref()
                    .map_or(vec![], |_| acd_epoch.metrics().to_vec()),
            ),
        )?;
        let (valid, valid_acd, _) = evaluate(
            &model,
            ds,
            &prep.valid,
            &prep.valid_cand,
            cfg.train.eval_batch_size,
        )?;
        for d in Domain::BOTH {
            writer.log_metrics(
                epoch as u32,
                runs::Split::Valid,
                Some(d),
                valid
                    .domain(d)
                    .iter()
                    .chain(valid_acd[d.index()].map(|v| ("a_cd", v))),
            )?;
        }
        let outcome = state
            .schedule
            .end_epoch(&cfg.optim, epoch, valid.selection_score());
        // With no warm-up left to wait for, the first epoch after it is the first candidate.
        let take_best = outcome == EpochOutcome::Improved
            || (outcome == EpochOutcome::Warmup && epoch == cfg.train.epochs);
        if take_best {
            let (test, test_acd, test_cases) = evaluate(
                &model,
                ds,
                &prep.test,
                &prep.test_cand,
                cfg.train.eval_batch_size,
            )?;
            for d in Domain::BOTH {
                writer.log_metrics(
                    epoch as u32,
                    runs::Split::Test,
                    Some(d),
                    test.domain(d)
                        .iter()
                        .chain(test_acd[d.index()].map(|v| ("a_cd", v))),
                )?;
            }
            state.best_epoch = Some(epoch);
            state.best_test = Some(report_json(&test));
            state.best_test_full = if cfg.train.full_ranking {
                Some(report_json(&evaluate_full_ranking(
                    &model,
                    ds,
                    &prep.test,
                    cfg.train.eval_batch_size,
                )?))
            } else {
                None
            };
            write_capture(&model, &prep, &writer)?;
            writer.write_test_cases(&mut test_cases_frame(&test_cases)?)?;
        }
        if outcome == EpochOutcome::Stop {
            state.stopped = true;
        }
        state.epoch = epoch;
        state.wall_time_s = wall_before + started.elapsed().as_secs_f64();
        if opts.progress {
            eprintln!(
                "epoch {epoch}: loss {:.4} valid MRR A {:.4} B {:.4} {}",
                loss_sum / loss_n.max(1) as f64,
                valid.a.mrr,
                valid.b.mrr,
                if take_best { "(best)" } else { "" }
            );
        }
        let mut tensors = model.params().named_tensors();
        let (m, v) = opt.moments();
        for (i, p) in model.params().params().iter().enumerate() {
            tensors.push((format!("adam.m.{}", p.name), m[i].clone()));
            tensors.push((format!("adam.v.{}", p.name), v[i].clone()));
        }
        checkpoint::save(run_dir, &tensors, &state)?;
        epochs_this_call += 1;
    }
    let complete = state.epoch >= cfg.train.epochs || state.stopped;
    let test = state.best_test.as_ref().and_then(report_from_json);
    let test_full = state.best_test_full.as_ref().and_then(report_from_json);
    let wall = state.wall_time_s;
    if complete {
        writer.finish(FinalResults {
            best_epoch: state.best_epoch.map(|e| e as u32),
            epochs_run: state.epoch as u32,
            wall_time_s: Some(wall),
            test: test.as_ref().map(domain_metrics).unwrap_or_default(),
            test_full: test_full.as_ref().map(domain_metrics),
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
    })
}
