//! [`RunConfig`]: everything one training run needs, read from TOML (`configs/*.toml`).
//! Every field has a documented default (ABXI's published hyper-parameters), so a config file
//! only names what it changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::NegativeSharing;
use crate::model::autocdsr::AutoCdsrConfig;
use crate::model::{GcaConfig, ModelConfig, ModelKind};

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run name; the run id is `NAME-sSEED-HASH8` ([`RunConfig::run_id`]). Default:
    /// `MODEL[-gcaP..]`.
    #[serde(default)]
    pub name: Option<String>,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub gca: GcaConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub train: TrainConfig,
    /// AutoCDSR: `a_cd` as a second objective (absent = plain training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autocdsr: Option<AutoCdsrConfig>,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset directory (ABXI files or KuaiRand), relative to the current directory.
    pub path: PathBuf,
    /// Keep only the first N users (fast tests and smoke runs). Default: all.
    #[serde(default)]
    pub max_users: Option<usize>,
}

/// `[optim]`: AdamW with ABXI's warm-up then reduce-on-plateau schedule and early stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate (ABXI: 1e-4).
    pub lr: f64,
    /// AdamW decoupled weight decay (ABXI `l2`: 5.0, applied as lr * wd per step).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Warm-up epochs: lr ramps linearly from 1e-5 * lr (ABXI: 1). No selection during them.
    pub warmup_epochs: usize,
    /// Plateau: multiply lr by this factor (ABXI: 0.3162) …
    pub plateau_factor: f64,
    /// … after more than this many epochs without improvement (ABXI: 30).
    pub plateau_patience: usize,
    /// Stop after more than this many epochs without improvement (ABXI: (30+1)*2-1 = 61).
    pub early_stop_patience: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 5.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_epochs: 1,
            plateau_factor: 0.3162,
            plateau_patience: 30,
            early_stop_patience: 61,
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum epochs (ABXI: 500, early stop usually ends sooner).
    pub epochs: usize,
    /// Sequences per batch (ABXI: 256).
    pub batch_size: usize,
    pub seed: u64,
    /// Training negatives per domain and position (ABXI: 128 from A and 128 from B).
    pub negatives_per_domain: usize,
    /// `per_position` (ABXI) or `per_row` (one draw per sequence, shared by its positions:
    /// far cheaper on CPU).
    pub negative_sharing: NegativeSharing,
    /// InfoNCE temperature (ABXI: 0.75).
    pub temperature: f64,
    /// Sampled negatives per evaluation case (ABXI: 999).
    pub eval_negatives: usize,
    /// Cases per evaluation batch (ABXI: 4 * batch size).
    pub eval_batch_size: usize,
    /// Also rank every item of the target domain on the test set.
    pub full_ranking: bool,
    /// Test cases in the fixed capture batch (`tensors.safetensors`).
    pub capture_batch_size: usize,
    /// Worker threads (rayon and the matmul kernels). Default: all cores.
    pub threads: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 500,
            batch_size: 256,
            seed: 3407,
            negatives_per_domain: 128,
            negative_sharing: NegativeSharing::PerPosition,
            temperature: 0.75,
            eval_negatives: 999,
            eval_batch_size: 256,
            full_ranking: true,
            capture_batch_size: 64,
            threads: None,
        }
    }
}

impl RunConfig {
    /// Reads and checks a TOML config; errors name the file and the field.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let cfg: RunConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        if m.d_model == 0 || m.heads == 0 || m.d_model % m.heads != 0 {
            return Err(format!(
                "model.d_model ({}) must be a positive multiple of model.heads ({})",
                m.d_model, m.heads
            ));
        }
        crate::model::check_options(
            m,
            &self.gca,
            self.autocdsr.as_ref().and_then(|a| a.ib.as_ref()),
        )?;
        if !(0.0..1.0).contains(&m.dropout) {
            return Err(format!(
                "model.dropout must be in [0, 1), got {}",
                m.dropout
            ));
        }
        let t = &self.train;
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            return Err("train.batch_size and train.eval_batch_size must be positive".into());
        }
        if t.temperature <= 0.0 {
            return Err(format!(
                "train.temperature must be positive, got {}",
                t.temperature
            ));
        }
        if m.max_len == 0 {
            return Err("model.max_len must be positive".into());
        }
        if let Some(p) = m.mask_prob {
            if m.kind != ModelKind::Bert4rec {
                return Err(format!(
                    "model.mask_prob is for model.kind = \"bert4rec\", not \"{}\"",
                    m.kind.as_str()
                ));
            }
            if !(p > 0.0 && p < 1.0) {
                return Err(format!("model.mask_prob must be in (0, 1), got {p}"));
            }
        }
        if let Some(auto) = &self.autocdsr {
            auto.validate(m.layers)?;
        }
        Ok(())
    }

    /// The run id: `NAME-sSEED-HASH8` (letters, digits, `-`, `_`, `.`).
    pub fn run_id(&self) -> String {
        let name = self.name.clone().unwrap_or_else(|| {
            let mut n = self.model.kind.as_str().to_string();
            if !self.gca.positions.is_empty() {
                n.push_str("-gca");
                for p in &self.gca.positions {
                    n.push_str(&p.to_string());
                }
            }
            n
        });
        // Readable name, seed, then the first 8 hex digits of the canonical config's hash
        // (the sweep's hash): two configs that differ anywhere get different ids.
        let table = toml::Table::try_from(self).expect("a RunConfig serialises to a TOML table");
        let hash = crate::sweep::spec::config_hash(&table);
        format!("{name}-s{}-{}", self.train.seed, &hash[..8])
    }
}
