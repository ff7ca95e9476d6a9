//! TensorBoard event files (`events.out.tfevents.*`): TFRecord framing (read by
//! [`crate::data::tfrecord::frame_records`], masked CRC32C checked) of `tensorflow.Event`
//! messages, decoded with prost structs that mirror TensorFlow's `event.proto`,
//! `summary.proto` and `tensor.proto` and TensorBoard's `plugins/hparams/plugin_data.proto`
//! (field numbers as published, no code generation).
//!
//! - Scalars in both encodings: `Summary.Value.simple_value` (float32, what `add_scalar` writes
//!   by default), and rank-0 `DT_FLOAT` / `DT_DOUBLE` tensors of the `scalars` plugin (what
//!   TensorFlow 2 and `add_scalar(new_style=True)` write; the plugin may be named only on a
//!   tag's first value). Other summaries (histograms, images, text) are not read.
//! - Epochs: the event's step, unless the file logs an `epoch` scalar (Lightning does, counting
//!   from 0): then a value's epoch is the last `epoch` logged at or before its step, plus one
//!   (the first one for values logged before any).
//! - Config: the hparams plugin's `session_start_info` values. Keys with `/` (Lightning
//!   flattens nested hyperparameters so) become dotted keys, whole numbers become integers, and
//!   text that parses as a JSON list (the plugin has no list type, so loggers write lists as
//!   text) becomes that list. A Lightning `hparams.yaml` beside the files wins where both name
//!   a key.
//! - Files are read in name order (the name starts with the writer's start time). A file that
//!   ends inside a record, as one still being written does, is read up to its last whole
//!   record and the run counts as `running` (skipped unless incomplete runs are asked for,
//!   with the byte where the file ends as the reason); a CRC mismatch, or a cut record that is
//!   not at the end of the last file, is an error naming the file, record and byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::logged::{flat_config, Logged, LoggerRun, Position, Source};
use crate::data::error::RecordIssue;
use crate::data::tfrecord::frame_records;
use crate::runs::RunError;

/// The prefix of event file names.
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";

/// `tensorflow.Event` (the fields read here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` (the scalar, tensor and metadata fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto` (the fields a scalar uses).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorflow.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorflow.DataType` values of float scalars.
const DT_FLOAT: i32 = 1;
const DT_DOUBLE: i32 = 2;

/// TensorBoard's `HParamsPluginData` (the session start info).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

/// TensorBoard's `SessionStartInfo` (the hyperparameter values).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(map = "string, message", tag = "1")]
    pub hparams: HashMap<String, ProtoValue>,
}

/// `google.protobuf.Value` (the scalar kinds; structs and lists are not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    #[prost(int32, optional, tag = "1")]
    pub null_value: Option<i32>,
    #[prost(double, optional, tag = "2")]
    pub number_value: Option<f64>,
    #[prost(string, optional, tag = "3")]
    pub string_value: Option<String>,
    #[prost(bool, optional, tag = "4")]
    pub bool_value: Option<bool>,
}

/// The event files directly in `dir`, sorted by name.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, RunError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RunError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(EVENT_FILE_PREFIX))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A scalar value of `v`, if it holds one (`scalars_plugin`: the tag's values were marked as
/// the `scalars` plugin's).
fn scalar_of(v: &SummaryValue, scalars_plugin: bool) -> Result<Option<f64>, String> {
    if let Some(x) = v.simple_value {
        return Ok(Some(f64::from(x)));
    }
    let Some(t) = v.tensor.as_ref().filter(|_| scalars_plugin) else {
        return Ok(None);
    };
    if t.tensor_shape.as_ref().is_some_and(|s| !s.dim.is_empty()) {
        return Err(format!(
            "tag `{}`: a scalars-plugin tensor of rank > 0",
            v.tag
        ));
    }
    let content = &t.tensor_content;
    let value = match t.dtype {
        DT_FLOAT => t.float_val.first().map(|&x| f64::from(x)).or_else(|| {
            let b: [u8; 4] = content.get(..4)?.try_into().ok()?;
            Some(f64::from(f32::from_le_bytes(b)))
        }),
        DT_DOUBLE => t.double_val.first().copied().or_else(|| {
            let b: [u8; 8] = content.get(..8)?.try_into().ok()?;
            Some(f64::from_le_bytes(b))
        }),
        other => {
            return Err(format!(
                "tag `{}`: scalars-plugin tensor of dtype {other} (float and double are read)",
                v.tag
            ))
        }
    };
    value
        .map(Some)
        .ok_or_else(|| format!("tag `{}`: scalars-plugin tensor without a value", v.tag))
}

/// An hparams-plugin value as JSON (see the module doc).
fn hparam_json(v: &ProtoValue) -> Value {
    if let Some(x) = v.number_value {
        if x.fract() == 0.0 && x.abs() < 2f64.powi(53) {
            return Value::from(x as i64);
        }
        return serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    }
    if let Some(s) = &v.string_value {
        if s.starts_with('[') {
            if let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(s) {
                return list;
            }
        }
        return Value::String(s.clone());
    }
    if let Some(b) = v.bool_value {
        return Value::Bool(b);
    }
    Value::Null
}

/// Reads the event files of `dir` (see the module doc).
pub fn read_tensorboard(dir: &Path) -> Result<LoggerRun, RunError> {
    let files = event_files(dir)?;
    let mut run = LoggerRun::default();
    // Per tag: whether its values belong to the scalars plugin.
    let mut scalars_tags: HashMap<String, bool> = HashMap::new();
    // (step, value, tag, file index) of every scalar; epochs are assigned once all are read.
    let mut scalars: Vec<(i64, f64, String)> = Vec::new();
    let mut epochs: Vec<(i64, f64)> = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| RunError::io(path, e))?;
        let framed = frame_records(&bytes);
        if let Some(stop) = &framed.stop {
            let cut = matches!(stop.issue, RecordIssue::Truncated(_));
            if !(cut && i + 1 == files.len()) {
                return Err(RunError::invalid(
                    path,
                    format!(
                        "record {} (byte {}): {}",
                        stop.record, stop.offset, stop.issue
                    ),
                ));
            }
            run.still_written = Some(format!(
                "{} ends inside record {} at byte {} (still being written?); {} records read",
                path.display(),
                stop.record,
                bytes.len(),
                framed.records.len()
            ));
        }
        for (r, record) in framed.records.iter().enumerate() {
            let event = <Event as prost::Message>::decode(*record).map_err(|e| {
                RunError::invalid(path, format!("record {r}: not a tensorflow.Event: {e}"))
            })?;
            let Some(summary) = event.summary else {
                continue;
            };
            for v in summary.value {
                let plugin = v.metadata.as_ref().and_then(|m| m.plugin_data.as_ref());
                if let Some(p) = plugin {
                    if p.plugin_name == "hparams" {
                        let data = <HParamsPluginData as prost::Message>::decode(&p.content[..])
                            .map_err(|e| {
                                RunError::invalid(
                                    path,
                                    format!("record {r}: hparams plugin data: {e}"),
                                )
                            })?;
                        if let Some(info) = data.session_start_info {
                            for (k, value) in &info.hparams {
                                run.config.insert(k.replace('/', "."), hparam_json(value));
                            }
                        }
                        continue;
                    }
                    scalars_tags.insert(v.tag.clone(), p.plugin_name == "scalars");
                }
                let is_scalars = scalars_tags.get(&v.tag).copied().unwrap_or(false);
                let value = scalar_of(&v, is_scalars)
                    .map_err(|e| RunError::invalid(path, format!("record {r}: {e}")))?;
                let Some(value) = value else { continue };
                run.sources.entry(v.tag.clone()).or_insert_with(|| Source {
                    file: path.clone(),
                    at: Position::Record(r),
                });
                if v.tag == "epoch" {
                    epochs.push((event.step, value));
                }
                scalars.push((event.step, value, v.tag));
            }
        }
    }
    epochs.sort_by_key(|e| e.0);
    for (step, value, tag) in scalars {
        let epoch = if epochs.is_empty() {
            u32::try_from(step).ok()
        } else {
            // Values logged before the first `epoch` scalar (Lightning's `hp_metric` at step 0)
            // count to the first epoch.
            let at = epochs.partition_point(|e| e.0 <= step).max(1);
            Some(epochs[at - 1].1)
                .filter(|e| e.fract() == 0.0 && *e >= 0.0 && *e < f64::from(u32::MAX))
                .map(|e| e as u32 + 1)
        };
        let Some(epoch) = epoch else {
            let source = &run.sources[&tag];
            return Err(source.error(format!(
                "tag `{tag}` at step {step}: no epoch (a negative step, or an `epoch` scalar that is not a whole number)"
            )));
        };
        run.values.push(Logged {
            name: tag,
            epoch,
            value,
        });
    }
    let hparams = dir.join(super::lightning::HPARAMS_YAML);
    if hparams.is_file() {
        run.config
            .append(&mut flat_config(&super::yaml::read_yaml(&hparams)?));
    }
    Ok(run)
}

/// Frames `events` as an event file (tests and fixtures).
pub fn write_events(events: &[Event]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = events.iter().map(prost::Message::encode_to_vec).collect();
    crate::data::tfrecord::write_records(encoded.iter().map(Vec::as_slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_event(step: i64, tag: &str, value: f32) -> Event {
        Event {
            wall_time: 0.0,
            step,
            file_version: None,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: tag.into(),
                    simple_value: Some(value),
                    tensor: None,
                    metadata: None,
                }],
            }),
        }
    }

    #[test]
    fn lightning_epochs_and_a_cut_tail() {
        let dir = tempfile::tempdir().unwrap();
        let events = [
            scalar_event(27, "epoch", 0.0),
            scalar_event(27, "train/loss", 2.5),
            scalar_event(55, "epoch", 1.0),
            scalar_event(55, "train/loss", 2.0),
        ];
        let bytes = write_events(&events);
        let path = dir.path().join("events.out.tfevents.1");
        std::fs::write(&path, &bytes).unwrap();
        let run = read_tensorboard(dir.path()).unwrap();
        let loss: Vec<(u32, f64)> = run
            .values
            .iter()
            .filter(|v| v.name == "train/loss")
            .map(|v| (v.epoch, v.value))
            .collect();
        assert_eq!(loss, [(1, 2.5), (2, 2.0)]);
        assert!(run.still_written.is_none());

        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let run = read_tensorboard(dir.path()).unwrap();
        assert_eq!(run.values.len(), 3);
        let note = run.still_written.unwrap();
        assert!(note.contains("ends inside record 3"), "{note}");
    }
}
