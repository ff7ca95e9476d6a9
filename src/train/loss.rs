//! The training loss: a batch as model input, the forward pass in training mode (dropout
//! seeded per step) and ABXI's sampled-softmax InfoNCE over the target positions.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::RunConfig;
use crate::data::{
    self, sample_train_negatives, Dataset, NegativeSharing, TrainBatch, TrainLayout,
};
use crate::model::nn::{AttentionMap, Ctx, DType, Device, LookupLeaf, Tensor};
use crate::model::{info_nce, Model, Negatives, SeqBatch};

pub(super) fn rows_of<T: Copy>(flat: &[T], l: usize) -> Vec<Vec<T>> {
    flat.chunks(l).map(|c| c.to_vec()).collect()
}

/// Model input of a training batch.
fn train_input(b: &TrainBatch, dtype: DType, device: &Device) -> anyhow::Result<SeqBatch> {
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
        device,
    )?)
}

/// Named tensors recorded during a forward pass: GCA inputs and outputs under their run-format
/// names (`gca.P.D.x`, ...; [`crate::model::nn::Ctx::capture`]).
pub(crate) type Captured = Vec<(String, Tensor)>;

/// What [`batch_loss`] computed for one training batch.
pub(crate) struct BatchLoss<'a> {
    pub loss: Tensor,
    /// For an AutoCDSR run (`cfg.autocdsr`), the self-attention maps of the forward pass (not
    /// detached: the a_cd objective is put on them); empty otherwise.
    pub attention: Vec<AttentionMap>,
    /// The batch as the model read it: the layout's batch, or its masked copy for a masked
    /// model ([`data::cloze::mask_train_batch`]).
    pub input: std::borrow::Cow<'a, TrainBatch>,
    /// For an AutoCDSR step whose merged stream's item lookup is a leaf of the graph
    /// ([`super::autocdsr::leaf_item_lookup`]), that leaf.
    pub item_lookup_leaf: Option<LookupLeaf>,
}

/// The loss of one training batch (`train` mode; items masked, negatives drawn and dropout
/// seeded by `step_seed`).
pub(crate) fn batch_loss<'a>(
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
    batch_loss_of_input(model, input, &negs, cfg, step_seed)
}

/// The loss of one batch as the model reads it (`input`, already masked for a masked model)
/// with given negatives, and with `[autocdsr]` what its step needs: the attention maps and,
/// where [`super::autocdsr::leaf_item_lookup`] says so, the item lookup's leaf. The trainer's
/// [`batch_loss`] after drawing the negatives, and the training-step benchmark's step.
pub(crate) fn batch_loss_of_input<'a>(
    model: &Model,
    input: std::borrow::Cow<'a, TrainBatch>,
    negs: &[data::ItemId],
    cfg: &RunConfig,
    step_seed: u64,
) -> anyhow::Result<BatchLoss<'a>> {
    let item_lookup_leaf = super::autocdsr::leaf_item_lookup(cfg).then(LookupLeaf::default);
    let recording = cfg.autocdsr.is_some().then_some(item_lookup_leaf.as_ref());
    let (loss, attention) = forward_loss(model, &input, negs, cfg, step_seed, recording)?;
    Ok(BatchLoss {
        loss,
        attention,
        input,
        item_lookup_leaf,
    })
}

/// The loss of one training batch with given negatives (`[batch, max_len, 2 n]` row-major as
/// [`sample_train_negatives`] returns them): what the trainer's `batch_loss` computes after
/// drawing them, and what the training-step benchmark times on pinned inputs.
pub fn batch_loss_with_negatives(
    model: &Model,
    batch: &TrainBatch,
    negs: &[data::ItemId],
    cfg: &RunConfig,
    step_seed: u64,
) -> anyhow::Result<Tensor> {
    Ok(forward_loss(model, batch, negs, cfg, step_seed, None)?.0)
}

/// [`batch_loss_with_negatives`] plus, when `recording` is given, the self-attention maps of
/// the forward pass (not detached: AutoCDSR puts its objective on them), the merged stream's
/// item lookup made a leaf of the graph in the [`LookupLeaf`] it holds, if any.
fn forward_loss(
    model: &Model,
    batch: &TrainBatch,
    negs: &[data::ItemId],
    cfg: &RunConfig,
    step_seed: u64,
    recording: Option<Option<&LookupLeaf>>,
) -> anyhow::Result<(Tensor, Vec<AttentionMap>)> {
    let (dtype, dev) = (model.params().dtype(), model.params().device());
    let input = train_input(batch, dtype, dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(step_seed);
    let mut ctx = Ctx::new(true, &mut rng);
    if let Some(leaf) = recording {
        ctx.attn_probs = Some(Vec::new());
        ctx.item_lookup_leaf = leaf.cloned();
    }
    if cfg.gca.cos_penalty != 0.0 {
        ctx.gca_cos = Some(Vec::new());
    }
    let h = model.forward(&input, &mut ctx)?;
    let attn = ctx.attn_probs.take().unwrap_or_default();
    let cos_sums = ctx.gca_cos.take().unwrap_or_default();
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
    let positions = Tensor::from_vec(positions, n_pos, dev)?;
    let targets = Tensor::from_vec(targets, n_pos, dev)?;
    let weights = Tensor::from_vec(weights, n_pos, dev)?.to_dtype(dtype)?;
    let negatives = match cfg.train.negative_sharing {
        NegativeSharing::PerPosition => {
            Negatives::PerPosition(Tensor::from_vec(per_pos, (n_pos, w), dev)?)
        }
        NegativeSharing::PerRow => {
            Negatives::PerSequence(Tensor::from_vec(per_row, (bsz, w), dev)?)
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
    // `gca.cos_penalty = w`: w * mean |cos(X, X')| over the valid query rows of every module.
    let loss = match crate::model::gca::cos_penalty(&cos_sums, cfg.gca.cos_penalty)? {
        Some(penalty) => (loss + penalty)?,
        None => loss,
    };
    Ok((loss, attn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Schedule;
    use crate::train::train_loop::training_data;
    use crate::train::{autocdsr, build_model};

    /// `kind` on a repository data slice, with dropout, as the step test trains it.
    fn config(extra: &str, slice: &str) -> RunConfig {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(slice);
        let text = format!(
            "[data]\npath = \"{}\"\n[train]\nbatch_size = 64\nnegatives_per_domain = 8\nthreads = 1\n{extra}",
            data.display()
        );
        toml::from_str(&text).unwrap()
    }

    /// The weights after one training step (the first batch of the first epoch) on a rayon
    /// pool of `threads` threads, as bits.
    fn weights_after_one_step(cfg: &RunConfig, threads: usize) -> Vec<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (ds, _, layout) = training_data(cfg).unwrap();
            let (model, mut opt) = build_model(cfg, &ds).unwrap();
            let batch = layout.batches(64, cfg.train.seed, 1).next().unwrap();
            let lr = Schedule::new(&cfg.optim).lr;
            let loss = batch_loss(&model, &ds, &layout, &batch, cfg, 11).unwrap();
            match &cfg.autocdsr {
                None => opt.backward_step(&loss.loss, lr).unwrap(),
                Some(auto) => {
                    let mut schedule = autocdsr::ParetoSchedule::new(auto);
                    autocdsr::batch_step(
                        &mut opt,
                        &model,
                        &ds,
                        &loss,
                        auto,
                        lr,
                        &mut schedule,
                        None,
                    )
                    .unwrap();
                }
            }
            opt.vars()
                .iter()
                .map(|v| {
                    let t = v.as_tensor().flatten_all().unwrap();
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                })
                .collect()
        })
    }

    /// A training step gives the same weights, bit for bit, on one thread and on three: the
    /// negatives, dropout masks, masking and every kernel's sums do not depend on how the work
    /// is split. ABXI with GCA and per-position negatives, SASRec with AutoCDSR (Pareto-MTL)
    /// and per-row negatives on food-kitchen; BERT4Rec on KuaiRand-1K.
    #[test]
    fn a_training_step_does_not_depend_on_the_thread_count() {
        let abxi = "[model]\nkind = \"abxi\"\nd_model = 16\nheads = 2\nffn_hidden = 32\n\
            layers = 1\nrank_domain = 4\nrank_invariant = 4\ndropout = 0.2\nmax_len = 20\n\
            [gca]\npositions = [0, 1]\nheads = 4\n";
        let sasrec = "[model]\nkind = \"sasrec\"\nd_model = 32\nheads = 2\nffn_hidden = 85\n\
            layers = 2\ndropout = 0.3\nmax_len = 20\n[autocdsr]\nweighting = { kind = \"pareto\" }\n";
        let bert = "[model]\nkind = \"bert4rec\"\nd_model = 16\nheads = 2\nffn_hidden = 32\n\
            layers = 1\ndropout = 0.2\nmax_len = 20\n";
        for (extra, slice) in [
            (
                format!("negative_sharing = \"per_position\"\n{abxi}"),
                "data/food-kitchen-mini",
            ),
            (
                format!("negative_sharing = \"per_row\"\n{sasrec}"),
                "data/food-kitchen-mini",
            ),
            (bert.to_string(), "data/kuairand-1k-mini"),
        ] {
            let cfg = config(&extra, slice);
            let one = weights_after_one_step(&cfg, 1);
            assert_eq!(one, weights_after_one_step(&cfg, 3), "{:?}", cfg.model.kind);
        }
    }
}
