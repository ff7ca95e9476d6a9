//! A minimal writer of the run directory format v1 (`docs/run-format.md`) for the trainer:
//! `run.json`, `config.toml`, `metrics.jsonl` (one complete line per row), and
//! `tensors.safetensors`, every whole file written to `NAME.tmp` and renamed.
//!
//! Kept deliberately small and with the same calls as `runs::RunWriter` (analysis engineer),
//! so the trainer can switch to it once it is on main.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use crate::data::Domain;

/// Writes `bytes` to `path` through `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Per-domain metrics as `(key, value)` pairs.
pub type DomainMetrics = BTreeMap<Domain, Vec<(String, f64)>>;

fn metrics_json(m: &DomainMetrics) -> Value {
    let mut o = serde_json::Map::new();
    for (d, kv) in m {
        let inner: serde_json::Map<String, Value> =
            kv.iter().map(|(k, v)| (k.clone(), num(*v))).collect();
        o.insert(d.to_string(), Value::Object(inner));
    }
    Value::Object(o)
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// An open run directory.
pub struct RunDirWriter {
    dir: PathBuf,
    manifest: Value,
}

impl RunDirWriter {
    /// Creates `dir` (must not exist), `config.toml` and `run.json` with status `running`.
    pub fn create<C: Serialize>(
        dir: &Path,
        run_id: &str,
        model: &str,
        dataset: &str,
        seed: u64,
        config: &C,
    ) -> anyhow::Result<Self> {
        if dir.exists() {
            anyhow::bail!("run directory {} already exists", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let toml_text = toml::to_string(config).context("serialising the run config to TOML")?;
        write_atomic(&dir.join("config.toml"), toml_text.as_bytes())?;
        let manifest = json!({
            "format": "cdsr-lab-run",
            "format_version": 1,
            "run_id": run_id,
            "status": "running",
            "model": model,
            "dataset": dataset,
            "seed": seed,
            "config": serde_json::to_value(config)?,
            "params": { "total": 0, "by_module": {} },
            "best_epoch": null,
            "epochs_run": 0,
            "wall_time_s": null,
            "test": {},
        });
        let w = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        w.write_manifest()?;
        std::fs::File::create(dir.join("metrics.jsonl"))
            .with_context(|| format!("creating metrics.jsonl in {}", dir.display()))?;
        Ok(w)
    }

    /// Reopens a run to continue after epoch `keep_through_epoch`: later metric rows and a
    /// torn last line are dropped; status goes back to `running`.
    pub fn resume(dir: &Path, keep_through_epoch: usize) -> anyhow::Result<Self> {
        let p = dir.join("run.json");
        let mut manifest: Value = serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?;
        manifest["status"] = json!("running");
        let mp = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&mp).unwrap_or_default();
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["epoch"]
                .as_u64()
                .is_some_and(|e| e as usize <= keep_through_epoch)
            {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&mp, kept.as_bytes())?;
        let w = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        w.write_manifest()?;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_params(
        &mut self,
        total: usize,
        by_module: &BTreeMap<String, usize>,
    ) -> anyhow::Result<()> {
        self.manifest["params"] = json!({ "total": total, "by_module": by_module });
        self.write_manifest()
    }

    /// Appends one `metrics.jsonl` row as a single line.
    pub fn log_metrics<'a>(
        &mut self,
        epoch: usize,
        split: &str,
        domain: Option<Domain>,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> anyhow::Result<()> {
        let mut o = serde_json::Map::new();
        o.insert("epoch".into(), json!(epoch));
        o.insert("split".into(), json!(split));
        o.insert(
            "domain".into(),
            domain.map_or(Value::Null, |d| json!(d.to_string())),
        );
        for (k, v) in values {
            o.insert(k.to_string(), num(v));
        }
        let mut line = serde_json::to_string(&Value::Object(o))?;
        line.push('\n');
        let p = self.dir.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        f.write_all(line.as_bytes())
            .with_context(|| format!("appending to {}", p.display()))?;
        f.flush()?;
        Ok(())
    }

    /// Writes `tensors.safetensors` from `(name, shape, f32 data)` and `(name, shape, u8)`.
    pub fn write_tensors(
        &self,
        f32s: &[(String, Vec<usize>, Vec<f32>)],
        u8s: &[(String, Vec<usize>, Vec<u8>)],
    ) -> anyhow::Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes_f: Vec<Vec<u8>> = f32s
            .iter()
            .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let mut views: Vec<(String, TensorView)> = Vec::new();
        for ((n, s, _), b) in f32s.iter().zip(&bytes_f) {
            views.push((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?));
        }
        for (n, s, d) in u8s {
            views.push((n.clone(), TensorView::new(Dtype::U8, s.clone(), d)?));
        }
        let bytes = safetensors::serialize(views, None)?;
        write_atomic(&self.dir.join("tensors.safetensors"), &bytes)
    }

    /// Marks the run complete with its final results.
    pub fn finish(
        mut self,
        best_epoch: Option<usize>,
        epochs_run: usize,
        wall_time_s: f64,
        test: &DomainMetrics,
        test_full: Option<&DomainMetrics>,
    ) -> anyhow::Result<PathBuf> {
        self.manifest["status"] = json!("complete");
        self.manifest["best_epoch"] = json!(best_epoch);
        self.manifest["epochs_run"] = json!(epochs_run);
        self.manifest["wall_time_s"] = num(wall_time_s);
        self.manifest["test"] = metrics_json(test);
        if let Some(f) = test_full {
            self.manifest["test_full"] = metrics_json(f);
        }
        self.write_manifest()?;
        Ok(self.dir)
    }

    /// Marks the run failed with a reason.
    pub fn fail(mut self, reason: &str) -> anyhow::Result<PathBuf> {
        self.manifest["status"] = json!("failed");
        self.manifest["failure"] = json!(reason);
        self.write_manifest()?;
        Ok(self.dir)
    }

    fn write_manifest(&self) -> anyhow::Result<()> {
        write_atomic(
            &self.dir.join("run.json"),
            &serde_json::to_vec_pretty(&self.manifest)?,
        )
    }
}
