//! Cross-domain sequential recommenders: ABXI ([`abxi`]), a SASRec-style merged-sequence
//! baseline ([`sasrec`]), gated cross-attention ([`gca`]) insertable into both, the training
//! loss (sampled-softmax InfoNCE) and evaluation scoring.
//!
//! Everything is written against [`nn`], the project's thin layer over the tensor engine.

pub mod abxi;
pub mod attention_share;
pub mod autocdsr;
pub mod gca;
pub mod input;
pub mod nn;
pub mod sasrec;

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use autocdsr::IbConfig;
pub use gca::{GateActivation, GcaConfig, KvSource, Projection};
pub use input::{SeqBatch, StreamInput};
use nn::{Ctx, DType, Embedding, ParamStore, Result, Tensor};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Abxi,
    Sasrec,
    /// The SASRec model on each domain's own subsequence (streams a and b, shared weights, no
    /// cross-domain attention): the single-domain reference of AutoCDSR's diagnostic.
    #[serde(rename = "sasrec-single")]
    SasrecSingle,
    /// BERT4Rec-style: the SASRec blocks with bidirectional attention, trained to recover
    /// masked items and evaluated on a masked last position ([`crate::data::cloze`]); the
    /// model AutoCDSR uses on KuaiRand-1K, and the one AutoCDSR+'s IB tokens run on.
    Bert4rec,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Abxi => "abxi",
            ModelKind::Sasrec => "sasrec",
            ModelKind::SasrecSingle => "sasrec-single",
            ModelKind::Bert4rec => "bert4rec",
        }
    }

    /// Whether the model reads masked sequences ([`crate::data::cloze`]) instead of predicting
    /// the next item.
    pub fn is_masked(self) -> bool {
        self == ModelKind::Bert4rec
    }
}

/// Model shape (`[model]` in the run config). Defaults are ABXI's published values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Embedding / hidden width d (ABXI: 256).
    pub d_model: usize,
    /// Self-attention heads (ABXI: 2).
    pub heads: usize,
    /// SwiGLU hidden width (ABXI: 680).
    pub ffn_hidden: usize,
    /// Encoder blocks (ABXI: 1). GCA positions go from 0 to `layers`.
    pub layers: usize,
    /// dLoRA rank (ABXI `rd`: 8).
    pub rank_domain: usize,
    /// iLoRA rank (ABXI `ri`: 8).
    pub rank_invariant: usize,
    /// Dropout rate (ABXI: 0.5).
    pub dropout: f64,
    /// Longest input kept, most recent items (ABXI keeps 47 = 50 - 3 positions; 50 here
    /// keeps every item of food-kitchen's sequences).
    pub max_len: usize,
    /// `bert4rec` only: the share of training items hidden behind a mask token (default
    /// [`crate::data::cloze::DEFAULT_MASK_PROB`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_prob: Option<f64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Abxi,
            d_model: 256,
            heads: 2,
            ffn_hidden: 680,
            layers: 1,
            rank_domain: 8,
            rank_invariant: 8,
            dropout: 0.5,
            max_len: 50,
            mask_prob: None,
        }
    }
}

/// A model option that breaks one of [`check_options`]' rules: each case names the config
/// field(s) ([`OptionsError::field`]) and the rule, in the style of linfa's checked
/// hyper-parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    /// A size that must be at least 1.
    #[error("{field} must be at least 1, got 0")]
    Zero { field: &'static str },
    #[error("model.d_model ({d_model}) must be a positive multiple of model.heads ({heads})")]
    HeadsDoNotDivide { d_model: usize, heads: usize },
    #[error("model.dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("model.mask_prob is for model.kind = \"bert4rec\", not \"{}\"", .0.as_str())]
    MaskProbWithoutMasking(ModelKind),
    #[error("model.mask_prob must be in (0, 1), got {0}")]
    MaskProb(f64),
    #[error(
        "gca.positions must be empty for model.kind = \"{}\" (GCA runs on the causal streams \
         of \"abxi\" and \"sasrec\")",
        .0.as_str()
    )]
    GcaOnKind(ModelKind),
    #[error("gca.heads ({heads}) must divide model.d_model ({d_model})")]
    GcaHeadsDoNotDivide { heads: usize, d_model: usize },
    #[error(
        "gca.positions contains {position}, but the model has {layers} block(s): positions go \
         from 0 to {layers}"
    )]
    GcaPositionBeyondBlocks { position: usize, layers: usize },
    #[error(
        "autocdsr.ib (AutoCDSR+) needs model.kind = \"bert4rec\", not \"{}\": IB tokens read a \
         domain's whole sequence, which would show a causal next-item model the future",
        .0.as_str()
    )]
    IbOnKind(ModelKind),
    #[error(
        "gca.project = \"{}\" and gca.cos_penalty = {cos_penalty} act on GCA modules, but \
         gca.positions is empty",
        .project.as_str()
    )]
    InterventionWithoutGca {
        project: Projection,
        cos_penalty: f64,
    },
    #[error("gca.cos_penalty must be a finite number, got {0}")]
    CosPenaltyNotFinite(f64),
    #[error(
        "gca.cos_penalty = {cos_penalty} with gca.project = \"{}\": the projection fixes \
         |cos(X, X')|, so the penalty could not move it",
        .project.as_str()
    )]
    CosPenaltyWithProjection {
        cos_penalty: f64,
        project: Projection,
    },
}

impl OptionsError {
    /// The config field the rule is about (the first, for rules that tie two fields).
    pub fn field(&self) -> &'static str {
        match self {
            OptionsError::Zero { field } => field,
            OptionsError::HeadsDoNotDivide { .. } => "model.heads",
            OptionsError::Dropout(_) => "model.dropout",
            OptionsError::MaskProbWithoutMasking(_) | OptionsError::MaskProb(_) => {
                "model.mask_prob"
            }
            OptionsError::GcaOnKind(_) | OptionsError::GcaPositionBeyondBlocks { .. } => {
                "gca.positions"
            }
            OptionsError::GcaHeadsDoNotDivide { .. } => "gca.heads",
            OptionsError::IbOnKind(_) => "autocdsr.ib",
            OptionsError::InterventionWithoutGca { .. } => "gca.positions",
            OptionsError::CosPenaltyNotFinite(_)
            | OptionsError::CosPenaltyWithProjection { .. } => "gca.cos_penalty",
        }
    }
}

/// The rules of the model's options: sizes at least 1, heads dividing the width, dropout and
/// mask rate in range, and what ties the model's kind and size to its GCA and AutoCDSR+
/// options. The one place they live: [`crate::train::RunConfig::validate`] calls it (so
/// `sweep plan` rejects a bad run before anything trains) and so does [`Model::new`] (for
/// models built without a run config).
pub fn check_options(
    cfg: &ModelConfig,
    gca: &GcaConfig,
    ib: Option<&IbConfig>,
) -> std::result::Result<(), OptionsError> {
    let mut sizes = vec![
        ("model.d_model", cfg.d_model),
        ("model.heads", cfg.heads),
        ("model.ffn_hidden", cfg.ffn_hidden),
        ("model.max_len", cfg.max_len),
    ];
    if cfg.kind == ModelKind::Abxi {
        // ABXI's dLoRA and iLoRA adapters: a rank of 0 is no adapter at all.
        sizes.extend([
            ("model.rank_domain", cfg.rank_domain),
            ("model.rank_invariant", cfg.rank_invariant),
        ]);
    }
    if let Some(&(field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        return Err(OptionsError::Zero { field });
    }
    if cfg.d_model % cfg.heads != 0 {
        return Err(OptionsError::HeadsDoNotDivide {
            d_model: cfg.d_model,
            heads: cfg.heads,
        });
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(OptionsError::Dropout(cfg.dropout));
    }
    if let Some(p) = cfg.mask_prob {
        if !cfg.kind.is_masked() {
            return Err(OptionsError::MaskProbWithoutMasking(cfg.kind));
        }
        if !(p > 0.0 && p < 1.0) {
            return Err(OptionsError::MaskProb(p));
        }
    }
    if !gca.positions.is_empty() {
        if !matches!(cfg.kind, ModelKind::Abxi | ModelKind::Sasrec) {
            return Err(OptionsError::GcaOnKind(cfg.kind));
        }
        if gca.heads == 0 || cfg.d_model % gca.heads != 0 {
            return Err(OptionsError::GcaHeadsDoNotDivide {
                heads: gca.heads,
                d_model: cfg.d_model,
            });
        }
        if let Some(&position) = gca.positions.iter().find(|&&p| p > cfg.layers) {
            return Err(OptionsError::GcaPositionBeyondBlocks {
                position,
                layers: cfg.layers,
            });
        }
    }
    let intervenes = !gca.project.is_none() || gca.cos_penalty != 0.0;
    if intervenes && gca.positions.is_empty() {
        return Err(OptionsError::InterventionWithoutGca {
            project: gca.project,
            cos_penalty: gca.cos_penalty,
        });
    }
    if !gca.cos_penalty.is_finite() {
        return Err(OptionsError::CosPenaltyNotFinite(gca.cos_penalty));
    }
    if gca.cos_penalty != 0.0 && !gca.project.is_none() {
        return Err(OptionsError::CosPenaltyWithProjection {
            cos_penalty: gca.cos_penalty,
            project: gca.project,
        });
    }
    if ib.is_some() && cfg.kind != ModelKind::Bert4rec {
        return Err(OptionsError::IbOnKind(cfg.kind));
    }
    Ok(())
}

/// A built model with its parameters. (One model lives per run, so the size difference of
/// the variants does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Abxi(abxi::Abxi),
    SasRec(sasrec::SasRec),
}

impl Model {
    /// Builds the model on `device`; the seed fixes every initial weight (drawn on the host, the
    /// same on every device).
    /// `vocab` is the dataset's [`crate::data::Dataset::vocab_size`] (a masked model adds its
    /// two mask tokens); `ib` gives a `bert4rec` model AutoCDSR+'s information-bottleneck
    /// tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &ModelConfig,
        gca: &GcaConfig,
        ib: Option<&IbConfig>,
        vocab: usize,
        n_items_a: usize,
        seed: u64,
        dtype: DType,
        device: &nn::Device,
    ) -> Result<Self> {
        check_options(cfg, gca, ib).map_err(|e| nn::Error::msg(e.to_string()))?;
        let store = ParamStore::new(dtype, device.clone(), ChaCha8Rng::seed_from_u64(seed));
        Ok(match cfg.kind {
            ModelKind::Abxi => Model::Abxi(abxi::Abxi::new(cfg, gca, vocab, store)?),
            ModelKind::Sasrec | ModelKind::SasrecSingle | ModelKind::Bert4rec => {
                Model::SasRec(sasrec::SasRec::new(cfg, gca, ib, vocab, n_items_a, store)?)
            }
        })
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Abxi(_) => ModelKind::Abxi,
            Model::SasRec(m) => m.kind(),
        }
    }

    /// AutoCDSR+'s IB token count; `None` for a model without IB tokens.
    pub fn ib_tokens(&self) -> Option<usize> {
        match self {
            Model::Abxi(_) => None,
            Model::SasRec(m) => m.ib_tokens(),
        }
    }

    pub fn params(&self) -> &ParamStore {
        match self {
            Model::Abxi(m) => &m.store,
            Model::SasRec(m) => &m.store,
        }
    }

    /// Parameter count per module key (`embedding`, `attention`, `ffn`, `dlora`, `norm`,
    /// `projector`, `ilora`, `head`, `gca.P`).
    pub fn param_count(&self) -> BTreeMap<String, usize> {
        self.params().param_count()
    }

    pub fn item_embedding(&self) -> &Embedding {
        match self {
            Model::Abxi(m) => m.item_embedding(),
            Model::SasRec(m) => m.item_embedding(),
        }
    }

    /// Representation per position `[b, l, d]` (already routed by target domain).
    pub fn forward(&self, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Model::Abxi(m) => m.forward(batch, ctx),
            Model::SasRec(m) => m.forward(batch, ctx),
        }
    }
}

/// Training targets for sampled-softmax InfoNCE.
pub enum Negatives {
    /// `[n, k]` u32: k negatives for each of the n scored positions (ABXI's exact scheme).
    PerPosition(Tensor),
    /// `[b, k]` u32: k negatives per sequence, shared by its positions (cheaper on CPU).
    PerSequence(Tensor),
}

/// Sampled-softmax InfoNCE (ABXI's `cal_rec_loss`).
///
/// `h: [b, l, d]`; `positions`: the n flat indices `b*l + t` that have a target; `targets`:
/// `[n]` u32; `weights`: `[n]` (ABXI: per domain, 1 / (#target positions of that domain in the
/// sequence) / batch, so loss = loss_A + loss_B).
pub fn info_nce(
    h: &Tensor,
    item: &Embedding,
    positions: &Tensor,
    targets: &Tensor,
    negatives: &Negatives,
    weights: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let (b, l, d) = h.dims3()?;
    let flat = h.reshape((b * l, d))?;
    let hv = flat.index_select(positions, 0)?; // [n, d]
    let pos_logit = (&hv * item.forward(targets)?)?.sum(1)?; // [n]
    let nll = match negatives {
        Negatives::PerPosition(ids) => {
            let e = item.forward(ids)?; // [n, k, d]
            let neg = nn::bmm(&hv.unsqueeze(1)?, &e.transpose(1, 2)?)?.squeeze(1)?; // [n, k]
            nn::sampled_softmax_nll(&pos_logit, &neg, None, temperature)?
        }
        Negatives::PerSequence(ids) => {
            let e = item.forward(ids)?; // [b, k, d]
            let all = nn::bmm(h, &e.transpose(1, 2)?)?; // [b, l, k]
            let k = all.dim(2)?;
            // Row `positions[i]` of the flat scores: no gather into a copy.
            nn::sampled_softmax_nll(
                &pos_logit,
                &all.reshape((b * l, k))?,
                Some(positions),
                temperature,
            )?
        }
    };
    (nll * weights)?.sum_all()
}

/// Scores of candidate items for the last position of each sample: `h_last: [b, d]`,
/// `candidates: [b, c]` u32 → `[b, c]`.
pub fn score_candidates(h_last: &Tensor, item: &Embedding, candidates: &Tensor) -> Result<Tensor> {
    let e = item.forward(candidates)?; // [b, c, d]
    nn::bmm(&h_last.unsqueeze(1)?, &e.transpose(1, 2)?)?.squeeze(1)
}

/// Scores of every item in `range` (inclusive ids) for each sample: `[b, n_range]`.
pub fn score_range(h_last: &Tensor, item: &Embedding, first: u32, count: usize) -> Result<Tensor> {
    let e = item.weight.narrow(0, first as usize, count)?;
    h_last.matmul(&e.t()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule of [`check_options`] refuses bad input with a message naming the fields.
    #[test]
    fn check_options_names_the_field_of_each_rule() {
        let abxi = ModelConfig {
            kind: ModelKind::Abxi,
            d_model: 64,
            layers: 1,
            ..ModelConfig::default()
        };
        let gca = |positions: Vec<usize>, heads: usize| GcaConfig {
            positions,
            heads,
            ..GcaConfig::default()
        };
        assert_eq!(check_options(&abxi, &gca(vec![0, 1], 4), None), Ok(()));
        assert_eq!(
            check_options(&abxi, &gca(vec![], 3), None),
            Ok(()),
            "no GCA: heads unused"
        );
        let err = |cfg: &ModelConfig, g: &GcaConfig, ib: Option<&IbConfig>| {
            check_options(cfg, g, ib).unwrap_err()
        };
        let e = err(&abxi, &gca(vec![0], 3), None).to_string();
        assert!(
            e.contains("gca.heads (3) must divide model.d_model (64)"),
            "{e}"
        );
        let e = err(&abxi, &gca(vec![2], 4), None).to_string();
        assert!(
            e.contains("gca.positions contains 2") && e.contains("1 block(s)"),
            "{e}"
        );
        let single = ModelConfig {
            kind: ModelKind::SasrecSingle,
            ..abxi.clone()
        };
        let e = err(&single, &gca(vec![0], 4), None).to_string();
        assert!(
            e.contains("gca.positions must be empty") && e.contains("sasrec-single"),
            "{e}"
        );
        let with = |positions: Vec<usize>, project: Projection, cos_penalty: f64| GcaConfig {
            positions,
            project,
            cos_penalty,
            ..GcaConfig::default()
        };
        assert_eq!(
            check_options(&abxi, &with(vec![0], Projection::Orthogonal, 0.0), None),
            Ok(())
        );
        assert_eq!(
            check_options(&abxi, &with(vec![0], Projection::None, -0.5), None),
            Ok(())
        );
        let e = err(&abxi, &with(vec![], Projection::Parallel, 0.0), None).to_string();
        assert!(
            e.contains("gca.project = \"parallel\"") && e.contains("gca.positions is empty"),
            "{e}"
        );
        let e = err(&abxi, &with(vec![0], Projection::None, f64::NAN), None).to_string();
        assert!(e.contains("gca.cos_penalty must be a finite number"), "{e}");
        let e = err(&abxi, &with(vec![0], Projection::Orthogonal, 0.1), None).to_string();
        assert!(
            e.contains("gca.cos_penalty = 0.1 with gca.project = \"orthogonal\""),
            "{e}"
        );
        let e = err(&abxi, &gca(vec![], 4), Some(&IbConfig::default()));
        assert_eq!(e, OptionsError::IbOnKind(ModelKind::Abxi));
        let e = e.to_string();
        assert!(e.contains("autocdsr.ib") && e.contains("\"abxi\""), "{e}");
    }

    /// The size rules: a zero rank of ABXI's adapters is refused naming the field (it used to
    /// fail inside the linear layer); SASRec has no adapters, so its ranks are not checked.
    #[test]
    fn zero_sizes_are_refused_naming_the_field() {
        let none = GcaConfig::default();
        let zero_rank = ModelConfig {
            rank_domain: 0,
            ..ModelConfig::default()
        };
        let e = check_options(&zero_rank, &none, None).unwrap_err();
        assert_eq!(
            e,
            OptionsError::Zero {
                field: "model.rank_domain"
            }
        );
        assert_eq!(e.field(), "model.rank_domain");
        assert_eq!(e.to_string(), "model.rank_domain must be at least 1, got 0");
        let sasrec = ModelConfig {
            kind: ModelKind::Sasrec,
            ..zero_rank
        };
        assert_eq!(check_options(&sasrec, &none, None), Ok(()));
        let no_width = ModelConfig {
            d_model: 0,
            ..ModelConfig::default()
        };
        assert_eq!(
            check_options(&no_width, &none, None).unwrap_err().field(),
            "model.d_model"
        );
    }
}
