//! [`RunSet::seed_means_frame`]: a run set's results averaged over seeds, one row per
//! experiment (the runs that differ only in their seed and execution settings), with the
//! sample standard deviation of each metric ([`super::describe::summary`]).

use std::collections::BTreeMap;

use polars::prelude::*;

use super::describe::summary;
use crate::runs::frames::{
    flatten_json, labels_ignoring, test_metric_names, SEED_AND_EXECUTION_KEYS,
};
use crate::runs::RunSet;

impl RunSet {
    /// [`RunSet::results_frame`] over seeds: runs whose configs differ only in `train.seed`
    /// (and in execution settings such as the thread count) are one experiment and make one
    /// row, labelled by what sets the experiments apart ([`config_labels`] without the seed).
    /// Columns: `label`, `runs` (how many), `seeds` (`1, 2, 3`), `best_epochs` (each run's best
    /// epoch in the order of `seeds`, `-` where none is recorded: runs of one experiment that
    /// stopped far apart are compared at different stages of training), `unconverged` (how many of
    /// them stopped at a cap, [`crate::runs::RunManifest::converged`]), `params` (of the first run),
    /// then per metric its mean over the runs that recorded it and its sample standard
    /// deviation (`test.A.ndcg@10`, `test.A.ndcg@10 sd`; the sd is null for one run). Rows keep
    /// the order in which their first run appears in the set.
    ///
    /// ```
    /// use cdsr_lab::data::Domain;
    /// use cdsr_lab::runs::{load_runs, metrics, FinalResults, LoadOptions, RunIdentity, RunWriter};
    /// use serde_json::json;
    /// let root = tempfile::tempdir().unwrap();
    /// for (seed, lr, ndcg) in [(1, 1e-3, 0.20), (2, 1e-3, 0.22), (1, 1e-4, 0.10)] {
    ///     let config = json!({"optim": {"lr": lr}, "train": {"seed": seed}});
    ///     let id = RunIdentity {
    ///         run_id: format!("r-{lr}-{seed}"),
    ///         model: "abxi".into(),
    ///         dataset: "food-kitchen".into(),
    ///         seed,
    ///     };
    ///     let mut run = RunWriter::create(root.path(), id, &config).unwrap();
    ///     let mut results = FinalResults::default();
    ///     for d in [Domain::A, Domain::B] {
    ///         results.test.insert(d, metrics([("ndcg@10", ndcg)]));
    ///     }
    ///     run.finish(results).unwrap();
    /// }
    /// let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    /// let table = set.seed_means_frame(&["ndcg@10"], false).unwrap();
    /// let label = table.column("label").unwrap().str().unwrap();
    /// let mean = table.column("test.A.ndcg@10").unwrap().f64().unwrap();
    /// let sd = table.column("test.A.ndcg@10 sd").unwrap().f64().unwrap();
    /// let row = (0..2).find(|&i| label.get(i) == Some("lr 0.001")).unwrap();
    /// assert!((mean.get(row).unwrap() - 0.21).abs() < 1e-12);
    /// assert!((sd.get(row).unwrap() - 0.02f64.sqrt() / 10.0).abs() < 1e-12);
    /// assert_eq!(table.column("seeds").unwrap().str().unwrap().get(row), Some("1, 2"));
    /// assert_eq!(table.column("best_epochs").unwrap().str().unwrap().get(row), Some("-, -"));
    /// assert_eq!(sd.get(1 - row), None); // one run: no spread
    /// ```
    pub fn seed_means_frame(
        &self,
        metrics: &[&str],
        full_ranking: bool,
    ) -> PolarsResult<DataFrame> {
        let per_run = self.results_frame(metrics, full_ranking)?;
        // Runs whose flattened configs agree once seed and execution settings are left out.
        let mut groups: Vec<(BTreeMap<String, serde_json::Value>, Vec<usize>)> = Vec::new();
        for (i, r) in self.runs.iter().enumerate() {
            let mut key = flatten_json(&r.manifest.config);
            key.retain(|k, _| !SEED_AND_EXECUTION_KEYS.contains(&k.as_str()));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        let first_runs: Vec<(&str, &serde_json::Value)> = groups
            .iter()
            .map(|(_, m)| {
                let r = &self.runs[m[0]].manifest;
                (r.run_id.as_str(), &r.config)
            })
            .collect();
        let labels = labels_ignoring(&first_runs, &SEED_AND_EXECUTION_KEYS);
        let (mut seeds, mut best_epochs) = (Vec::new(), Vec::new());
        for (_, members) in &groups {
            let mut s: Vec<(u64, Option<u32>)> = members
                .iter()
                .map(|&i| {
                    let m = &self.runs[i].manifest;
                    (m.seed, m.best_epoch)
                })
                .collect();
            s.sort_unstable();
            seeds.push(
                s.iter()
                    .map(|(seed, _)| seed.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            best_epochs.push(
                s.iter()
                    .map(|(_, e)| e.map_or("-".into(), |e| e.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        let params = per_run.column("params")?.cast(&DataType::Int64)?;
        let params = params.i64()?;
        let mut cols = vec![
            Column::new("label".into(), labels),
            Column::new(
                "runs".into(),
                groups
                    .iter()
                    .map(|(_, m)| m.len() as i64)
                    .collect::<Vec<_>>(),
            ),
            Column::new("seeds".into(), seeds),
            Column::new("best_epochs".into(), best_epochs),
            Column::new(
                "unconverged".into(),
                groups
                    .iter()
                    .map(|(_, m)| {
                        m.iter()
                            .filter(|&&i| self.runs[i].manifest.converged() == Some(false))
                            .count() as i64
                    })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "params".into(),
                groups
                    .iter()
                    .map(|(_, m)| params.get(m[0]))
                    .collect::<Vec<_>>(),
            ),
        ];
        for name in test_metric_names(metrics, full_ranking) {
            let values = per_run.column(&name)?.cast(&DataType::Float64)?;
            let values = values.f64()?;
            let (mut mean, mut sd) = (Vec::new(), Vec::new());
            for (_, members) in &groups {
                let v: Vec<f64> = members.iter().filter_map(|&i| values.get(i)).collect();
                let summary = summary(&v).ok();
                mean.push(summary.map(|s| s.mean));
                sd.push(summary.and_then(|s| s.sd));
            }
            cols.push(Column::new(name.as_str().into(), mean));
            cols.push(Column::new(format!("{name} sd").into(), sd));
        }
        DataFrame::new(groups.len(), cols)
    }
}
