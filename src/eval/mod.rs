//! The evaluation protocol: candidate sets, ranks and ranking metrics, reported per target
//! domain.
//!
//! Sampled protocol (ABXI, GCA paper): each case's positive against `N` negatives
//! ([`DEFAULT_NEGATIVES`] = 999, or 100) from the target's domain, excluding the user's items
//! ([`Candidates`]). Full ranking: the target against every item of its domain
//! ([`evaluate_full`]). Metrics ([`Metrics`]): NDCG@1/5/10/20, HR@1/5/10/20, MRR, AUC.
//!
//! ```
//! use cdsr_lab::eval::{Candidates, Metrics, RankAccumulator, sampled_rank};
//! use cdsr_lab::data::Domain;
//! // the positive (column 0) is beaten by one negative: rank 2
//! assert_eq!(sampled_rank(&[0.7, 0.9, 0.1, 0.7]), 2);
//! let mut acc = RankAccumulator::new();
//! acc.push(Domain::A, 2, 3);
//! let report = acc.finish();
//! assert_eq!(report.a.mrr, 0.5);
//! assert_eq!(report.a.auc, 1.0 - 1.0 / 3.0);
//! ```

pub mod candidates;
pub mod metrics;
pub mod ranking;

pub use candidates::{CandidateError, Candidates, DEFAULT_NEGATIVES};
pub use metrics::{names, EvalReport, Metrics, RankAccumulator, CUTOFFS};
pub use ranking::{
    accumulate_full, evaluate_full, evaluate_sampled, evaluate_sampled_ranks, full_rank,
    sampled_rank,
};
