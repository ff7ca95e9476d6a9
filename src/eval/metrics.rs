//! Ranking metrics from the rank of each positive: NDCG@K, HR@K (K = 1, 5, 10, 20), MRR, AUC.
//!
//! For one case with rank `r` (1 = best) among `1 + n` candidates:
//! `NDCG@K = 1/log2(r+1)` if `r <= K` else 0; `HR@K = [r <= K]`; `MRR = 1/r`;
//! `AUC = 1 - (r-1)/n`. A domain's metrics are the means over its cases.

use serde::{Deserialize, Serialize};

use crate::data::Domain;

/// The names of the metrics a run logs: keys of `metrics.jsonl` and `run.json`, and columns of
/// the frames built from them.
pub mod names {
    pub const NDCG_1: &str = "ndcg@1";
    pub const NDCG_5: &str = "ndcg@5";
    pub const NDCG_10: &str = "ndcg@10";
    pub const NDCG_20: &str = "ndcg@20";
    pub const HR_1: &str = "hr@1";
    pub const HR_5: &str = "hr@5";
    pub const HR_10: &str = "hr@10";
    pub const HR_20: &str = "hr@20";
    pub const MRR: &str = "mrr";
    pub const AUC: &str = "auc";
    /// The merged stream's cross-domain attention share (evaluation), or its mean over an
    /// epoch's steps (AutoCDSR training).
    pub const A_CD: &str = "a_cd";
    /// Training loss, mean per sequence over the epoch.
    pub const LOSS: &str = "loss";
    /// The learning rate the epoch trained with.
    pub const LR: &str = "lr";
    /// Training wall time so far, seconds.
    pub const WALL_TIME_S: &str = "wall_time_s";
    /// AutoCDSR: the mean multiplier `c` on `a_cd` over the epoch's steps.
    pub const ACD_COEFFICIENT: &str = "acd_coefficient";
    /// AutoCDSR: the epoch's steps where Pareto-MTL fell back to equal weights.
    pub const ACD_FALLBACK_STEPS: &str = "acd_fallback_steps";
}

/// The cut-offs K of NDCG@K and HR@K.
pub const CUTOFFS: [usize; 4] = [1, 5, 10, 20];

/// Mean ranking metrics of one domain. Serialises with the run format's keys
/// (`ndcg@10`, `hr@5`, `mrr`, `auc`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(rename = "ndcg@1")]
    pub ndcg_1: f64,
    #[serde(rename = "ndcg@5")]
    pub ndcg_5: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    #[serde(rename = "ndcg@20")]
    pub ndcg_20: f64,
    #[serde(rename = "hr@1")]
    pub hr_1: f64,
    #[serde(rename = "hr@5")]
    pub hr_5: f64,
    #[serde(rename = "hr@10")]
    pub hr_10: f64,
    #[serde(rename = "hr@20")]
    pub hr_20: f64,
    pub mrr: f64,
    pub auc: f64,
}

impl Metrics {
    /// The metric keys, in the order of [`Metrics::values`].
    pub const KEYS: [&'static str; 10] = [
        names::NDCG_1,
        names::NDCG_5,
        names::NDCG_10,
        names::NDCG_20,
        names::HR_1,
        names::HR_5,
        names::HR_10,
        names::HR_20,
        names::MRR,
        names::AUC,
    ];

    /// The values in the order of [`Metrics::KEYS`].
    pub fn values(&self) -> [f64; 10] {
        [
            self.ndcg_1,
            self.ndcg_5,
            self.ndcg_10,
            self.ndcg_20,
            self.hr_1,
            self.hr_5,
            self.hr_10,
            self.hr_20,
            self.mrr,
            self.auc,
        ]
    }

    /// `(key, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> {
        Self::KEYS.into_iter().zip(self.values())
    }

    /// The value of a key such as `ndcg@10`; `None` for an unknown key.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Metrics of a single case: rank `rank` (1-based) among `1 + n_negatives` candidates.
    pub fn of_rank(rank: usize, n_negatives: usize) -> Metrics {
        assert!(
            rank >= 1 && rank <= n_negatives + 1,
            "rank {rank} outside 1..={}",
            n_negatives + 1
        );
        let r = rank as f64;
        let ndcg = |k: usize| {
            if rank <= k {
                1.0 / (r + 1.0).log2()
            } else {
                0.0
            }
        };
        let hr = |k: usize| if rank <= k { 1.0 } else { 0.0 };
        Metrics {
            ndcg_1: ndcg(1),
            ndcg_5: ndcg(5),
            ndcg_10: ndcg(10),
            ndcg_20: ndcg(20),
            hr_1: hr(1),
            hr_5: hr(5),
            hr_10: hr(10),
            hr_20: hr(20),
            mrr: 1.0 / r,
            auc: if n_negatives == 0 {
                1.0
            } else {
                1.0 - (r - 1.0) / n_negatives as f64
            },
        }
    }

    /// The expected metrics of a ranker that orders the candidates at random: the target's
    /// rank is uniform over `1..=1 + n_negatives` (NDCG@10 with 99 negatives: 0.0454).
    ///
    /// ```
    /// let m = cdsr_lab::eval::metrics::Metrics::random(99);
    /// assert!((m.ndcg_10 - 0.04544).abs() < 1e-5 && (m.hr_10 - 0.1).abs() < 1e-12);
    /// ```
    pub fn random(n_negatives: usize) -> Metrics {
        Metrics::mean_of_ranks((1..=n_negatives + 1).map(|r| (r, n_negatives)))
    }

    /// Means over cases given as `(rank, n_negatives)`; all zeros for no cases.
    pub fn mean_of_ranks(ranks: impl IntoIterator<Item = (usize, usize)>) -> Metrics {
        let mut sum = [0.0f64; 10];
        let mut n = 0usize;
        for (r, neg) in ranks {
            for (s, v) in sum.iter_mut().zip(Metrics::of_rank(r, neg).values()) {
                *s += v;
            }
            n += 1;
        }
        if n == 0 {
            return Metrics::default();
        }
        let m: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        Metrics {
            ndcg_1: m[0],
            ndcg_5: m[1],
            ndcg_10: m[2],
            ndcg_20: m[3],
            hr_1: m[4],
            hr_5: m[5],
            hr_10: m[6],
            hr_20: m[7],
            mrr: m[8],
            auc: m[9],
        }
    }
}

/// Metrics per target domain plus the number of cases each is averaged over.
/// Serialises as `{"A": {...}, "B": {...}, "counts": [n_A, n_B]}` (the checkpoint's best test
/// metrics; without `counts`, zero cases are read).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EvalReport {
    #[serde(rename = "A")]
    pub a: Metrics,
    #[serde(rename = "B")]
    pub b: Metrics,
    /// Cases per domain `[A, B]`.
    #[serde(default)]
    pub counts: [usize; 2],
}

impl EvalReport {
    pub fn domain(&self, d: Domain) -> &Metrics {
        match d {
            Domain::A => &self.a,
            Domain::B => &self.b,
        }
    }

    /// ABXI's model-selection score: `MRR_A + MRR_B`.
    pub fn selection_score(&self) -> f64 {
        self.a.mrr + self.b.mrr
    }
}

/// Collects `(domain, rank, n_negatives)` case by case, then averages per domain.
#[derive(Debug, Clone, Default)]
pub struct RankAccumulator {
    ranks: [Vec<(u32, u32)>; 2],
}

impl RankAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one case: the positive's `rank` (1-based) among `1 + n_negatives` candidates.
    pub fn push(&mut self, domain: Domain, rank: usize, n_negatives: usize) {
        self.ranks[domain.index()].push((rank as u32, n_negatives as u32));
    }

    /// The ranks pushed so far for a domain, in order.
    pub fn ranks(&self, domain: Domain) -> impl Iterator<Item = usize> + '_ {
        self.ranks[domain.index()].iter().map(|&(r, _)| r as usize)
    }

    pub fn merge(&mut self, other: RankAccumulator) {
        for d in 0..2 {
            self.ranks[d].extend_from_slice(&other.ranks[d]);
        }
    }

    pub fn finish(&self) -> EvalReport {
        let m = |d: usize| {
            Metrics::mean_of_ranks(self.ranks[d].iter().map(|&(r, n)| (r as usize, n as usize)))
        };
        EvalReport {
            a: m(0),
            b: m(1),
            counts: [self.ranks[0].len(), self.ranks[1].len()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn single_rank_values() {
        let m = Metrics::of_rank(1, 999);
        assert_eq!(
            m.values(),
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
        // rank 3: ndcg = 1/log2(4) = 0.5
        let m = Metrics::of_rank(3, 999);
        assert_eq!(m.ndcg_1, 0.0);
        assert_eq!(m.ndcg_5, 0.5);
        assert_eq!(m.ndcg_20, 0.5);
        assert_eq!([m.hr_1, m.hr_5, m.hr_10, m.hr_20], [0.0, 1.0, 1.0, 1.0]);
        close(m.mrr, 1.0 / 3.0);
        close(m.auc, 1.0 - 2.0 / 999.0);
        // rank 7: ndcg@10 = 1/log2(8) = 1/3, not in top 5
        let m = Metrics::of_rank(7, 100);
        assert_eq!(m.ndcg_5, 0.0);
        close(m.ndcg_10, 1.0 / 3.0);
        close(m.auc, 0.94);
        // rank 15: ndcg@20 = 1/log2(16) = 0.25
        let m = Metrics::of_rank(15, 100);
        assert_eq!(m.ndcg_10, 0.0);
        assert_eq!(m.ndcg_20, 0.25);
        assert_eq!([m.hr_10, m.hr_20], [0.0, 1.0]);
        // worst rank
        let m = Metrics::of_rank(101, 100);
        assert_eq!(m.auc, 0.0);
        assert_eq!(m.hr_20, 0.0);
    }

    #[test]
    fn means_per_domain_and_keys() {
        let mut acc = RankAccumulator::new();
        acc.push(Domain::A, 1, 4);
        acc.push(Domain::A, 3, 4);
        acc.push(Domain::B, 5, 4);
        let r = acc.finish();
        assert_eq!(r.counts, [2, 1]);
        close(r.a.ndcg_1, 0.5);
        close(r.a.ndcg_10, 0.75);
        close(r.a.mrr, (1.0 + 1.0 / 3.0) / 2.0);
        close(r.a.auc, (1.0 + 0.5) / 2.0);
        close(r.b.auc, 0.0);
        close(r.b.ndcg_5, 1.0 / 6f64.log2());
        close(r.selection_score(), (1.0 + 1.0 / 3.0) / 2.0 + 0.2);
        assert_eq!(r.a.get("hr@5"), Some(1.0));
        assert_eq!(r.a.get("nope"), None);
        let j = serde_json::to_value(r).unwrap();
        assert_eq!(j["A"]["ndcg@1"], 0.5);
        assert_eq!(j["B"]["hr@5"], 1.0);
        assert_eq!(j["A"].as_object().unwrap().len(), 10);
        let back: EvalReport = serde_json::from_value(j).unwrap();
        assert_eq!(back.a, r.a);
    }
}
