//! Evaluation during training: sampled-negative and full-ranking metrics of a layout, per case
//! the merged stream's `a_cd` (or an AutoCDSR+ model's IB share) as [`TestCase`] rows, and the
//! GCA capture of the fixed test batch.

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::loss::{rows_of, Captured};
use crate::data::{self, Dataset, EvalBatch, EvalLayout};
use crate::eval::{evaluate_full, evaluate_sampled_ranks, Candidates, EvalReport};
use crate::model::attention_share::{attention_share, domain_labels, ShareConfig};
use crate::model::nn::{AttentionMap, AttentionStream, Ctx, DType, Device, Tensor};
use crate::model::{score_candidates, Model, ModelKind, SeqBatch};
use crate::runs::{RunWriter, TensorSet, TestCase};

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
fn eval_input(
    x: &[Vec<data::ItemId>],
    b: &EvalBatch,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<SeqBatch> {
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
        device,
    )?)
}

/// What an evaluation forward pass returns.
struct EvalForward {
    /// The last position's representation `[b, d]`.
    h_last: Tensor,
    /// GCA inputs and outputs, when asked for.
    capture: Option<Captured>,
    /// Self-attention maps, when asked for.
    attn: Option<Vec<AttentionMap>>,
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
    let input = eval_input(&x, b, DType::F32, model.params().device())?;
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
pub(crate) type AcdByDomain = [Option<f64>; 2];

/// Per case of an evaluation batch: the merged stream's `a_cd` per layer (normalised per
/// valid query row, mean over heads; [`crate::model::attention_share`]), or for an AutoCDSR+
/// model the share onto the IB tokens ([`crate::model::autocdsr::ib_case_share`]); `None` for
/// a case without valid tokens or a model without a merged stream.
fn case_acd(
    ds: &Dataset,
    x: &[Vec<data::ItemId>],
    attn: &[AttentionMap],
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
    for m in attn.iter().filter(|m| m.stream == AttentionStream::Merged) {
        let map = host_map(&m.probs)?;
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
    attn: &[AttentionMap],
    k: usize,
) -> anyhow::Result<Vec<Option<Vec<f64>>>> {
    let streams = crate::model::autocdsr::ib_streams(ds, items)?;
    let host = |layer: usize, stream: AttentionStream| -> anyhow::Result<ndarray::Array4<f32>> {
        let m = attn
            .iter()
            .find(|m| m.layer == layer && m.stream == stream)
            .with_context(|| {
                format!("no attention map of layer {layer} stream {stream} was recorded")
            })?;
        host_map(&m.probs)
    };
    let n_layers = attn
        .iter()
        .filter(|m| m.stream == AttentionStream::A)
        .count();
    let mut layers = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let (a, b) = (host(l, AttentionStream::A)?, host(l, AttentionStream::B)?);
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

/// |cos(X, X')| of one case per GCA position, at the scored (last) position, in the module of
/// the case's target domain; `None` where undefined (padding, a zero row).
use crate::runs::CaseCos;

/// [`CaseCos`] of every case of an evaluation batch from its capture (`gca.P.D.{x,x_prime,mask}`,
/// [`crate::model::nn::Ctx::capture`]); `domains` are the cases' target domains.
fn case_abs_cos(
    capture: &[(String, Tensor)],
    domains: &[crate::data::Domain],
) -> anyhow::Result<Vec<CaseCos>> {
    use crate::analysis::orthogonality::abs_cos_at;
    let mut out = vec![CaseCos::new(); domains.len()];
    let find = |name: String| -> anyhow::Result<&Tensor> {
        capture
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
            .with_context(|| format!("no tensor {name} was captured"))
    };
    let positions: std::collections::BTreeSet<usize> = capture
        .iter()
        .filter_map(|(n, _)| {
            let parts: Vec<&str> = n.split('.').collect();
            match parts[..] {
                ["gca", p, _, "x"] => p.parse().ok(),
                _ => None,
            }
        })
        .collect();
    let host = |t: &Tensor| -> anyhow::Result<ndarray::Array3<f32>> {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(ndarray::Array3::from_shape_vec(t.dims3()?, v)?)
    };
    for p in positions {
        for d in crate::data::Domain::BOTH {
            let x = host(find(format!("gca.{p}.{d}.x"))?)?;
            let xp = host(find(format!("gca.{p}.{d}.x_prime"))?)?;
            let mask = find(format!("gca.{p}.{d}.mask"))?;
            let mask = ndarray::Array2::from_shape_vec(
                mask.dims2()?,
                mask.flatten_all()?.to_vec1::<u8>()?,
            )?;
            let last = x.dim().1.saturating_sub(1);
            let cos = abs_cos_at(x.view(), xp.view(), Some(mask.view()), last)?;
            for (i, c) in cos.into_iter().enumerate() {
                if domains[i] == d {
                    out[i].insert(p, c);
                }
            }
        }
    }
    Ok(out)
}

/// Sampled-negative evaluation: the metrics of `layout`, the merged stream's mean `a_cd` per
/// domain and every case's record (in the layout's order), with per-case |cos(X, X')| when
/// `case_cos` (a model with GCA, on the test cases).
pub(super) fn evaluate(
    model: &Model,
    ds: &Dataset,
    layout: &EvalLayout,
    cand: &Candidates,
    batch: usize,
    case_cos: bool,
) -> anyhow::Result<(EvalReport, AcdByDomain, Vec<TestCase>)> {
    let mut err = None;
    // (domain, a_cd) per case in the layout's order; the ranks come from the evaluator.
    let mut shares = Vec::with_capacity(layout.len());
    let mut cosines = Vec::with_capacity(layout.len());
    let (report, ranks) = evaluate_sampled_ranks(layout, cand, batch, |b, items| {
        let mut run = || -> anyhow::Result<Vec<f32>> {
            let out = eval_repr(model, ds, b, case_cos, true)?;
            let per_case = case_acd(
                ds,
                &out.x,
                out.attn.as_deref().unwrap_or_default(),
                model.ib_tokens(),
            )?;
            shares.extend(b.target_domain.iter().copied().zip(per_case));
            match &out.capture {
                Some(cap) => cosines.extend(case_abs_cos(cap, b.target_domain)?),
                None => cosines.extend(vec![CaseCos::new(); b.batch_size()]),
            }
            let ids = Tensor::from_vec(
                items.to_vec(),
                (b.batch_size(), cand.width()),
                model.params().device(),
            )?;
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
    let cases: Vec<TestCase> = shares
        .into_iter()
        .zip(ranks)
        .zip(cosines)
        .map(|(((domain, a_cd), rank), abs_cos)| {
            TestCase::new(domain, rank, a_cd).with_abs_cos(abs_cos)
        })
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

pub(super) fn evaluate_full_ranking(
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

/// Writes the capture tensors of the fixed batch `capture` (nothing when the model has no GCA).
pub(super) fn write_capture(
    model: &Model,
    ds: &Dataset,
    capture: &EvalLayout,
    writer: &RunWriter,
) -> anyhow::Result<()> {
    let Some(b) = capture.batches(capture.len().max(1)).next() else {
        return Ok(());
    };
    let cap = eval_repr(model, ds, &b, true, false)?
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
