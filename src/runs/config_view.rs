//! A typed, lenient view of the configuration a run recorded (`run.json`'s `config`), for the
//! code that reads runs rather than trains them.
//!
//! [`crate::train::RunConfig`] is strict: it fills defaults and refuses unknown or wrong
//! values, as a run about to train must. A recorded run may come from an older version of
//! this crate or from another tool (`runs::foreign`), so the view reads only the fields
//! analysis uses and none of them is required: a field that is absent, null or of another
//! type reads as `None` (or an empty section) instead of failing the run.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::RunManifest;

/// The fields of a recorded run configuration that analysis reads (see the module doc for
/// the rule on missing and malformed fields).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RunConfigView {
    #[serde(deserialize_with = "lenient")]
    pub model: ModelView,
    #[serde(deserialize_with = "lenient")]
    pub gca: GcaView,
    #[serde(deserialize_with = "lenient")]
    pub train: TrainView,
    #[serde(deserialize_with = "lenient")]
    pub optim: OptimView,
    /// `Some` when the run trained with AutoCDSR's objective (a non-null `[autocdsr]`).
    #[serde(deserialize_with = "lenient")]
    pub autocdsr: Option<AutoCdsrView>,
}

/// `[model]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ModelView {
    #[serde(deserialize_with = "lenient")]
    pub d_model: Option<usize>,
    #[serde(deserialize_with = "lenient")]
    pub layers: Option<usize>,
}

/// `[gca]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GcaView {
    /// Where GCA modules sit; empty for a model without GCA.
    #[serde(deserialize_with = "lenient")]
    pub positions: Vec<usize>,
    #[serde(deserialize_with = "lenient")]
    pub gate: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub layer_norm: Option<bool>,
    /// The intervention on X' (`orthogonal`, `parallel`; `none` for none).
    #[serde(deserialize_with = "lenient")]
    pub project: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub cos_penalty: Option<f64>,
}

/// `[train]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrainView {
    /// The epoch cap.
    #[serde(deserialize_with = "lenient")]
    pub epochs: Option<u64>,
}

/// `[optim]`: the stopping rule's patience.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OptimView {
    /// Training stops after more than this many epochs without a better validation score.
    #[serde(deserialize_with = "lenient")]
    pub early_stop_patience: Option<u64>,
}

/// `[autocdsr]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AutoCdsrView {
    /// Present (any non-null value) for AutoCDSR+ with IB tokens.
    #[serde(deserialize_with = "lenient")]
    pub ib: Option<IgnoredAny>,
    #[serde(deserialize_with = "lenient")]
    pub weighting: WeightingView,
}

/// `[autocdsr.weighting]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WeightingView {
    /// `pareto` or `fixed`.
    #[serde(deserialize_with = "lenient")]
    pub kind: Option<String>,
    /// Pareto-MTL's `every` (absent: every step).
    #[serde(deserialize_with = "lenient")]
    pub every: Option<usize>,
}

/// A field that does not parse as `T` (wrong type, null) reads as `T::default()`.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

impl RunConfigView {
    /// The view of a recorded configuration; never fails (see the module doc).
    pub fn of(config: &serde_json::Value) -> RunConfigView {
        RunConfigView::deserialize(config).unwrap_or_default()
    }
}

impl RunManifest {
    /// [`RunConfigView`] of the run's recorded configuration.
    pub fn config_view(&self) -> RunConfigView {
        RunConfigView::of(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recorded_config_reads_its_fields() {
        let c = RunConfigView::of(&json!({
            "model": {"d_model": 64, "layers": 2, "heads": 2},
            "gca": {"positions": [0, 2], "gate": "sigmoid", "layer_norm": false,
                    "project": "orthogonal", "cos_penalty": 1},
            "train": {"epochs": 40},
            "autocdsr": {"ib": {"tokens": 4}, "weighting": {"kind": "fixed", "weight": 0.1}},
            "optim": {"lr": 0.001}
        }));
        assert_eq!(c.model.d_model, Some(64));
        assert_eq!(c.model.layers, Some(2));
        assert_eq!(c.gca.positions, [0, 2]);
        assert_eq!(c.gca.gate.as_deref(), Some("sigmoid"));
        assert_eq!(c.gca.layer_norm, Some(false));
        assert_eq!(c.gca.project.as_deref(), Some("orthogonal"));
        assert_eq!(c.gca.cos_penalty, Some(1.0));
        assert_eq!(c.train.epochs, Some(40));
        let auto = c.autocdsr.unwrap();
        assert!(auto.ib.is_some());
        assert_eq!(auto.weighting.kind.as_deref(), Some("fixed"));
    }

    #[test]
    fn missing_null_and_malformed_fields_read_as_absent() {
        // A foreign run: other sections, a string where a number belongs, null sections.
        let c = RunConfigView::of(&json!({
            "model": {"d_model": "wide", "layers": -1},
            "gca": null,
            "train": "fast",
            "autocdsr": null,
            "trainer": {"max_epochs": 3}
        }));
        assert_eq!(c, RunConfigView::default());
        assert_eq!(RunConfigView::of(&json!(null)), RunConfigView::default());
        assert_eq!(RunConfigView::of(&json!([1, 2])), RunConfigView::default());
        let plain = RunConfigView::of(&json!({"autocdsr": {"ib": null}}));
        assert!(plain.autocdsr.unwrap().ib.is_none());
    }
}
