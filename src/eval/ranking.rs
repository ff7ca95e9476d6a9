//! Ranks from scores, and the evaluator entry points a trainer plugs its model into.
//!
//! - Sampled protocol: the positive (column 0 of a [`Candidates`] row) against its sampled
//!   negatives; `rank = 1 + #(negatives scoring strictly higher)`, so ties favour the positive
//!   (ABXI's convention).
//! - Full ranking: the target against every item of its domain, padding excluded and nothing
//!   else (the user's own history stays in, as in the sampled protocol's positive-vs-all
//!   reading); `rank = 1 + #(other domain items scoring strictly higher)`, and AUC uses
//!   `n = domain size - 1`.
//!
//! A NaN never favours the positive: a NaN positive ranks last, a NaN negative counts as
//! higher. A diverged model therefore scores zero instead of a perfect rank 1.

use crate::data::{Dataset, EvalBatch, EvalCase, EvalLayout, ItemId};

use super::candidates::Candidates;
use super::metrics::{EvalReport, RankAccumulator};

/// Rank of `scores[0]` among `scores` (1-based).
pub fn sampled_rank(scores: &[f32]) -> usize {
    let pos = scores[0];
    if pos.is_nan() {
        return scores.len();
    }
    1 + scores[1..]
        .iter()
        .filter(|&&s| s > pos || s.is_nan())
        .count()
}

/// Rank of `target` among the items of `range` given scores over the whole id space
/// (`scores[id]`, length `vocab_size`); the target itself is not counted.
pub fn full_rank(scores: &[f32], target: ItemId, range: std::ops::RangeInclusive<ItemId>) -> usize {
    let pos = scores[target as usize];
    let block = &scores[*range.start() as usize..=*range.end() as usize];
    if pos.is_nan() {
        return block.len();
    }
    // The target is inside the block and never strictly above itself.
    1 + block.iter().filter(|&&s| s > pos || s.is_nan()).count()
}

impl Candidates {
    /// Adds a batch: `scores` is `[rows.len(), width]` row-major, aligned with `self.rows(rows)`.
    /// Returns the rank of each row's positive.
    pub fn accumulate(
        &self,
        rows: std::ops::Range<usize>,
        scores: &[f32],
        acc: &mut RankAccumulator,
    ) -> Vec<usize> {
        let w = self.width();
        assert_eq!(
            scores.len(),
            rows.len() * w,
            "scores must be [{} rows, {} candidates]",
            rows.len(),
            w
        );
        rows.zip(scores.chunks_exact(w))
            .map(|(r, s)| {
                let rank = sampled_rank(s);
                acc.push(self.domain[r], rank, self.n_negatives);
                rank
            })
            .collect()
    }

    /// Metrics of a whole score matrix `[cases, width]`.
    pub fn evaluate(&self, scores: &[f32]) -> EvalReport {
        let mut acc = RankAccumulator::new();
        self.accumulate(0..self.len(), scores, &mut acc);
        acc.finish()
    }
}

/// Adds a batch of full-ranking scores: `scores` is `[cases.len(), vocab_size]` row-major.
pub fn accumulate_full(
    ds: &Dataset,
    cases: &[EvalCase],
    scores: &[f32],
    acc: &mut RankAccumulator,
) {
    let v = ds.vocab_size();
    assert_eq!(
        scores.len(),
        cases.len() * v,
        "scores must be [{} cases, {v} items]",
        cases.len()
    );
    for (c, s) in cases.iter().zip(scores.chunks_exact(v)) {
        let range = ds.item_range(c.domain);
        let n_others = (range.end() - range.start()) as usize;
        acc.push(c.domain, full_rank(s, c.target, range), n_others);
    }
}

/// Sampled-negative evaluation of a model: `score(batch, candidates)` returns the scores of
/// `candidates` (`[batch, width]`, positive first) for the batch's inputs, row-major.
pub fn evaluate_sampled<F>(
    layout: &EvalLayout,
    candidates: &Candidates,
    batch_size: usize,
    score: F,
) -> EvalReport
where
    F: FnMut(&EvalBatch<'_>, &[ItemId]) -> Vec<f32>,
{
    evaluate_sampled_ranks(layout, candidates, batch_size, score).0
}

/// [`evaluate_sampled`] plus the rank of every case's positive, in the layout's order (for
/// per-case records such as a run's `test_cases.parquet`).
pub fn evaluate_sampled_ranks<F>(
    layout: &EvalLayout,
    candidates: &Candidates,
    batch_size: usize,
    mut score: F,
) -> (EvalReport, Vec<usize>)
where
    F: FnMut(&EvalBatch<'_>, &[ItemId]) -> Vec<f32>,
{
    assert_eq!(
        layout.len(),
        candidates.len(),
        "layout and candidates must have the same cases"
    );
    let mut acc = RankAccumulator::new();
    let mut ranks = Vec::with_capacity(layout.len());
    for b in layout.batches(batch_size) {
        let s = score(&b, candidates.rows(b.rows.clone()));
        ranks.extend(candidates.accumulate(b.rows.clone(), &s, &mut acc));
    }
    (acc.finish(), ranks)
}

/// Full-ranking evaluation of a model: `score(batch)` returns `[batch, vocab_size]` scores.
pub fn evaluate_full<F>(
    ds: &Dataset,
    layout: &EvalLayout,
    batch_size: usize,
    mut score: F,
) -> EvalReport
where
    F: FnMut(&EvalBatch<'_>) -> Vec<f32>,
{
    let mut acc = RankAccumulator::new();
    for b in layout.batches(batch_size) {
        let s = score(&b);
        accumulate_full(ds, &layout.cases[b.rows.clone()], &s, &mut acc);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_strictly_higher_only() {
        assert_eq!(sampled_rank(&[0.5, 0.1, 0.2]), 1);
        assert_eq!(sampled_rank(&[0.5, 0.9, 0.5, 0.7, 0.1]), 3); // tie does not count
        assert_eq!(sampled_rank(&[0.0, 1.0, 2.0]), 3);
        assert_eq!(sampled_rank(&[f32::NAN, 0.0, 1.0]), 3);
        assert_eq!(sampled_rank(&[0.5, f32::NAN, 0.1]), 2);
    }

    #[test]
    fn full_rank_stays_in_the_domain() {
        // ids 0 (pad) | A 1..=3 | B 4..=6
        let s = [9.0, 0.1, 0.5, 0.3, 0.9, 0.4, 0.2];
        assert_eq!(full_rank(&s, 2, 1..=3), 1); // padding's 9.0 and B's 0.9 ignored
        assert_eq!(full_rank(&s, 3, 1..=3), 2);
        assert_eq!(full_rank(&s, 6, 4..=6), 3);
    }
}
