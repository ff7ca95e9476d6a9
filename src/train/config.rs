//! [`RunConfig`]: everything one training run needs, read from TOML (`configs/*.toml`).
//! Every field has a documented default (ABXI's published hyper-parameters), so a config file
//! only names what it changes. [`config_hash`] identifies a configuration (run ids, sweeps).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::data::NegativeSharing;
use crate::model::{GcaConfig, IbConfig, ModelConfig};
use crate::train::pareto::AcdWeighting;

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
    /// At most this many epochs: a cap, early stopping on the validation score usually ends
    /// sooner (ABXI: 500).
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
    /// Stop once the run's training wall time (summed over resumed calls) reaches this many
    /// seconds (`stop_reason = "time_cap"`). Default: no time cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wall_time_s: Option<f64>,
    /// Where the model trains and evaluates: `cpu` (the fused CPU kernels) or `cuda` (GPU 0,
    /// in a build with the `cuda` feature; docs/gpu.md). Part of the run's identity when not
    /// `cpu` (results differ from the CPU's in the last digits). Default: `cpu`.
    #[serde(skip_serializing_if = "ComputeDevice::is_cpu")]
    pub device: ComputeDevice,
}

/// `train.device`: the device a run's tensors live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDevice {
    #[default]
    Cpu,
    Cuda,
}

/// A device this build or machine cannot give.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "train.device = \"cuda\" but this cdsr-lab was built without CUDA support: build it with \
         `--features cuda` (scripts/build_cuda.sh, docs/gpu.md)"
    )]
    CudaNotBuilt,
    #[error("train.device = \"cuda\": no usable CUDA device 0: {0}")]
    CudaUnavailable(String),
}

impl ComputeDevice {
    pub fn is_cpu(&self) -> bool {
        *self == ComputeDevice::Cpu
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Cuda => "cuda",
        }
    }

    /// The engine's device: the CPU, or CUDA device 0 (an error in a build without the `cuda`
    /// feature, or where no GPU and driver answer).
    pub fn open(self) -> Result<crate::model::nn::Device, DeviceError> {
        match self {
            ComputeDevice::Cpu => Ok(crate::model::nn::Device::Cpu),
            #[cfg(feature = "cuda")]
            ComputeDevice::Cuda => crate::model::nn::Device::new_cuda(0)
                .map_err(|e| DeviceError::CudaUnavailable(e.to_string())),
            #[cfg(not(feature = "cuda"))]
            ComputeDevice::Cuda => Err(DeviceError::CudaNotBuilt),
        }
    }
}

impl std::str::FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(ComputeDevice::Cpu),
            "cuda" => Ok(ComputeDevice::Cuda),
            other => Err(format!("unknown device `{other}` (cpu or cuda)")),
        }
    }
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
            max_wall_time_s: None,
            device: ComputeDevice::Cpu,
        }
    }
}

impl RunConfig {
    /// Reads and checks a TOML config; errors name the file and the field.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        // One line, `config PATH:LINE: message`, rather than the TOML error's source excerpt.
        let cfg: RunConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(String::new(), |s| {
                format!(":{}", 1 + text[..s.start].matches('\n').count())
            });
            anyhow::anyhow!(
                "config {}{line}: {}",
                path.display(),
                e.message().trim_end().replace('\n', " ")
            )
        })?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks every rule serde cannot (each is a case of [`ConfigError`], which names the
    /// field); the first rule broken is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        crate::model::check_options(
            m,
            &self.gca,
            self.autocdsr.as_ref().and_then(|a| a.ib.as_ref()),
        )?;
        if let Some(n) = self.data.max_users {
            at_least_one("data.max_users", n)?;
        }
        let o = &self.optim;
        positive("optim.lr", o.lr)?;
        non_negative("optim.weight_decay", o.weight_decay)?;
        in_unit_interval("optim.beta1", o.beta1, Interval::ClosedOpen)?;
        in_unit_interval("optim.beta2", o.beta2, Interval::ClosedOpen)?;
        positive("optim.eps", o.eps)?;
        in_unit_interval(
            "optim.plateau_factor",
            o.plateau_factor,
            Interval::OpenClosed,
        )?;
        let t = &self.train;
        for (field, n) in [
            ("train.epochs", t.epochs),
            ("train.batch_size", t.batch_size),
            ("train.negatives_per_domain", t.negatives_per_domain),
            ("train.eval_negatives", t.eval_negatives),
            ("train.eval_batch_size", t.eval_batch_size),
        ] {
            at_least_one(field, n)?;
        }
        if let Some(n) = t.threads {
            at_least_one("train.threads", n)?;
        }
        if let Some(seconds) = t.max_wall_time_s {
            positive("train.max_wall_time_s", seconds)?;
        }
        positive("train.temperature", t.temperature)?;
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
        let hash = config_hash(&table);
        format!("{name}-s{}-{}", self.train.seed, &hash[..8])
    }
}

/// Which quantity of the attention maps is the training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcdObjective {
    /// Per layer: the share normalised per valid query row, averaged over heads and over the
    /// batch's samples that have a valid row; summed over the chosen layers. Scale [0, layers].
    #[default]
    RowMean,
    /// The raw share (sum over query rows) averaged over heads and samples; grows with length.
    Raw,
}

/// `[autocdsr]` in the run configuration ([`crate::train::autocdsr`]). Absent = plain
/// training. The defaults follow the public code (snap-research/AutoCDSR): Pareto weighting
/// with preference vectors `[[0,1],[1,0],[.7071,.7071]]` and preferred region 1, gradients
/// l2-normalised over the shared parameters with the item embedding table left out
/// (`ignore_table: true`), 4 IB tokens averaged across domains after layers 0, 1 and 2.
///
/// ```
/// use cdsr_lab::train::config::AutoCdsrConfig;
/// use cdsr_lab::train::pareto::AcdWeighting;
/// // AutoCDSR with the public code's defaults
/// let auto: AutoCdsrConfig = toml::from_str("").unwrap();
/// assert!(matches!(auto.weighting, AcdWeighting::Pareto(ref p) if p.preferred == 1));
/// // AutoCDSR+ with a fixed weight instead of Pareto-MTL, objective on layer 0 only
/// let plus: AutoCdsrConfig = toml::from_str(r#"
///     layers = [0]
///     weighting = { kind = "fixed", weight = 0.1 }
///     [ib]
///     tokens = 4
///     comm_layers = [0]
/// "#).unwrap();
/// assert_eq!(plus.ib.as_ref().unwrap().tokens, 4);
/// assert!(plus.validate(1).is_ok());
/// assert_eq!(
///     plus.validate(0).unwrap_err().to_string(),
///     "autocdsr.layers contains 0, but the model has 0 self-attention layer(s) (0..0)"
/// );
/// // Pareto-MTL with K = 4 circle preferences, preferring the second one
/// let k4: AutoCdsrConfig = toml::from_str(r#"
///     [weighting]
///     kind = "pareto"
///     preferred = 1
///     preferences = [[1.0, 0.0], [0.9239, 0.3827], [0.7071, 0.7071], [0.3827, 0.9239], [0.0, 1.0]]
/// "#).unwrap();
/// assert!(k4.validate(2).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoCdsrConfig {
    /// How `a_cd` enters the loss: `{ kind = "pareto", ... }` or `{ kind = "fixed", weight }`.
    pub weighting: AcdWeighting,
    pub objective: AcdObjective,
    /// Self-attention layers whose share is the objective; empty = all.
    pub layers: Vec<usize>,
    /// Leave the item embedding table out of the gradients given to the solver (public code's
    /// `ignore_table: true`): it dominates the parameter count but the share barely touches it.
    pub ignore_item_embedding: bool,
    /// AutoCDSR+ when set.
    pub ib: Option<IbConfig>,
}

impl Default for AutoCdsrConfig {
    fn default() -> Self {
        AutoCdsrConfig {
            weighting: AcdWeighting::default(),
            objective: AcdObjective::RowMean,
            layers: vec![],
            ignore_item_embedding: true,
            ib: None,
        }
    }
}

impl AutoCdsrConfig {
    /// Whether layer `l` contributes to the objective.
    pub fn uses_layer(&self, l: usize) -> bool {
        self.layers.is_empty() || self.layers.contains(&l)
    }

    /// Checks against the model's layer count; the error names the field.
    pub fn validate(&self, n_layers: usize) -> Result<(), ConfigError> {
        if let Some(&layer) = self.layers.iter().find(|&&l| l >= n_layers) {
            return Err(ConfigError::AcdLayerBeyondModel {
                layer,
                layers: n_layers,
            });
        }
        if let Some(ib) = &self.ib {
            at_least_one("autocdsr.ib.tokens", ib.tokens)?;
            if let Some(&layer) = ib.comm_layers.iter().find(|&&l| l >= n_layers) {
                return Err(ConfigError::IbLayerBeyondModel {
                    layer,
                    layers: n_layers,
                });
            }
        }
        at_least_one("autocdsr.weighting.every", self.weighting.recompute_every())?;
        match &self.weighting {
            AcdWeighting::Pareto(p) if p.preferred >= p.preferences.0.len() => {
                Err(ConfigError::PreferredBeyondVectors {
                    preferred: p.preferred,
                    vectors: p.preferences.0.len(),
                })
            }
            AcdWeighting::Fixed { weight } if !weight.is_finite() => Err(ConfigError::NotFinite {
                field: "autocdsr.weighting.weight",
                value: *weight,
            }),
            _ => Ok(()),
        }
    }
}

/// A run configuration that breaks one of [`RunConfig::validate`]'s rules. Each case names the
/// config field ([`ConfigError::field`]) and the rule, in the style of linfa's checked
/// hyper-parameters; the model's own rules are [`crate::model::OptionsError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Model(#[from] crate::model::OptionsError),
    /// A count that must be at least 1 (`train.epochs`, `train.eval_negatives`, ...).
    #[error("{field} must be at least 1, got 0")]
    Zero { field: &'static str },
    /// A rate or scale that must be a finite number above 0 (`optim.lr`, ...).
    #[error("{field} must be a finite number above 0, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    /// A penalty that must be a finite number of at least 0 (`optim.weight_decay`).
    #[error("{field} must be a finite number of at least 0, got {value}")]
    Negative { field: &'static str, value: f64 },
    /// A factor that must lie in an interval of `[0, 1]`.
    #[error("{field} must be in {interval}, got {value}")]
    OutOfInterval {
        field: &'static str,
        interval: Interval,
        value: f64,
    },
    #[error("{field} must be a finite number, got {value}")]
    NotFinite { field: &'static str, value: f64 },
    #[error(
        "autocdsr.layers contains {layer}, but the model has {layers} self-attention layer(s) \
         (0..{layers})"
    )]
    AcdLayerBeyondModel { layer: usize, layers: usize },
    #[error("autocdsr.ib.comm_layers contains {layer}, but the model has {layers} layer(s)")]
    IbLayerBeyondModel { layer: usize, layers: usize },
    #[error(
        "autocdsr.weighting.preferred = {preferred} but there are {vectors} preference vectors"
    )]
    PreferredBeyondVectors { preferred: usize, vectors: usize },
}

impl ConfigError {
    /// The config field the rule is about, as a dotted path (`optim.lr`).
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Model(e) => e.field(),
            ConfigError::Zero { field }
            | ConfigError::NotPositive { field, .. }
            | ConfigError::Negative { field, .. }
            | ConfigError::OutOfInterval { field, .. }
            | ConfigError::NotFinite { field, .. } => field,
            ConfigError::AcdLayerBeyondModel { .. } => "autocdsr.layers",
            ConfigError::IbLayerBeyondModel { .. } => "autocdsr.ib.comm_layers",
            ConfigError::PreferredBeyondVectors { .. } => "autocdsr.weighting.preferred",
        }
    }
}

/// The sub-intervals of `[0, 1]` a factor may be asked to lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// `[0, 1)`: Adam's betas.
    ClosedOpen,
    /// `(0, 1]`: a factor that scales the learning rate down (or keeps it).
    OpenClosed,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interval::ClosedOpen => "[0, 1)",
            Interval::OpenClosed => "(0, 1]",
        })
    }
}

fn at_least_one(field: &'static str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::Zero { field });
    }
    Ok(())
}

fn positive(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ConfigError::NotPositive { field, value });
    }
    Ok(())
}

fn non_negative(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(ConfigError::Negative { field, value });
    }
    Ok(())
}

fn in_unit_interval(
    field: &'static str,
    value: f64,
    interval: Interval,
) -> Result<(), ConfigError> {
    let inside = match interval {
        Interval::ClosedOpen => (0.0..1.0).contains(&value),
        Interval::OpenClosed => value > 0.0 && value <= 1.0,
    };
    if !inside {
        return Err(ConfigError::OutOfInterval {
            field,
            interval,
            value,
        });
    }
    Ok(())
}

/// Hex SHA-256 of the canonical form of a configuration (keys sorted at every level).
pub fn config_hash(config: &Table) -> String {
    let mut canon = String::new();
    canonical_table(config, &mut canon);
    let digest = Sha256::digest(canon.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical_table(t: &Table, out: &mut String) {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("strings serialise"));
        out.push(':');
        canonical_value(&t[k], out);
    }
    out.push('}');
}

fn canonical_value(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Value::Integer(i) => out.push_str(&i.to_string()),
        // `{:?}` is the shortest round-trip form and keeps a `.0`, so 1 and 1.0 differ.
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Datetime(d) => out.push_str(&format!("\"{d}\"")),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_value(x, out);
            }
            out.push(']');
        }
        Value::Table(t) => canonical_table(t, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_of_the_canonical_config_independent_of_key_order() {
        let a: Table = toml::from_str("b = 1\na = { y = 2.0, x = [1, 2] }").unwrap();
        let b: Table = toml::from_str("a = { x = [1, 2], y = 2.0 }\nb = 1").unwrap();
        let c: Table = toml::from_str("a = { x = [1, 2], y = 2 }\nb = 1").unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c)); // 2.0 and 2 are different configs
        let mut canon = String::new();
        canonical_table(&a, &mut canon);
        assert_eq!(canon, r#"{"a":{"x":[1,2],"y":2.0},"b":1}"#);
        // sha256 of that exact string, from `printf '%s' '{"a":{"x":[1,2],"y":2.0},"b":1}' | sha256sum`
        assert_eq!(
            config_hash(&a),
            "853db0dcffeb1127a8c9fd88ed2893123bcd3103783a963f16a7891d34c48c69"
        );
    }
}
