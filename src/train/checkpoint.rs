//! Resume state: model parameters, AdamW moments and the loop state in one safetensors file
//! (`checkpoint/state.safetensors`, the loop state as JSON in its metadata), written to a
//! temporary name and renamed, so a kill at any moment leaves the previous complete
//! checkpoint or the new one.
//!
//! Randomness needs no saved generator: batch order, negatives and dropout are seeded from
//! `(seed, epoch)` and `(seed, step)`, so resuming after epoch e replays exactly what an
//! uninterrupted run does next.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::optim::Schedule;
use crate::eval::EvalReport;
use crate::model::nn::{DType, Device, Tensor};

/// The loop state after a finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epochs completed.
    pub epoch: usize,
    pub step: u64,
    pub schedule: Schedule,
    pub best_epoch: Option<usize>,
    /// Test metrics at the best epoch (sampled negatives).
    pub best_test: Option<EvalReport>,
    /// Test metrics at the best epoch (full ranking), when enabled.
    pub best_test_full: Option<EvalReport>,
    /// Training wall time so far (seconds), so a resumed run reports the total.
    pub wall_time_s: f64,
    /// Set when early stopping fired.
    pub stopped: bool,
    /// Why training stopped, once it has (`None` while it goes on).
    #[serde(default)]
    pub stop_reason: Option<crate::runs::StopReason>,
}

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint").join("state.safetensors")
}

const META_KEY: &str = "cdsr_lab_loop_state";

/// Writes `tensors` (f32 or f64) and `state` atomically.
pub fn save(run_dir: &Path, tensors: &[(String, Tensor)], state: &LoopState) -> anyhow::Result<()> {
    let p = path(run_dir);
    std::fs::create_dir_all(p.parent().unwrap())
        .with_context(|| format!("creating {}", p.display()))?;
    let mut bufs: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (bytes, dt) = match t.dtype() {
            DType::F64 => (
                t.flatten_all()?
                    .to_vec1::<f64>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                Dtype::F64,
            ),
            _ => (
                t.to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                Dtype::F32,
            ),
        };
        bufs.push((name.clone(), bytes, t.dims().to_vec(), dt));
    }
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, b, s, d)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut meta = HashMap::new();
    meta.insert(META_KEY.to_string(), serde_json::to_string(state)?);
    let bytes = safetensors::serialize(views, Some(meta))?;
    crate::runs::write_atomic(&p, &bytes)?;
    Ok(())
}

/// Reads a checkpoint: tensors by name and the loop state.
pub fn load(run_dir: &Path, dtype: DType) -> anyhow::Result<(BTreeMap<String, Tensor>, LoopState)> {
    let p = path(run_dir);
    let bytes = std::fs::read(&p).with_context(|| format!("reading checkpoint {}", p.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("checkpoint {} is not a safetensors file", p.display()))?;
    let state_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .with_context(|| format!("checkpoint {} has no loop state", p.display()))?;
    let state: LoopState = serde_json::from_str(state_json)
        .with_context(|| format!("checkpoint {}: loop state", p.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let t = match view.dtype() {
            Dtype::F64 => {
                let v: Vec<f64> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            Dtype::F32 => {
                let v: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            other => anyhow::bail!(
                "checkpoint {}: tensor {name} has unsupported dtype {other:?}",
                p.display()
            ),
        };
        out.insert(name, t.to_dtype(dtype)?);
    }
    Ok((out, state))
}
