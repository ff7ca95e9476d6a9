//! Sampled-negative candidate sets: for each evaluation case, the positive followed by `N`
//! negatives drawn uniformly without replacement from the target's domain, excluding every
//! item of the user's whole sequence (not only the input: the later items too, as the data
//! README's protocol says; ABXI's own validation excludes only up to the target, which
//! differs by at most one item per user).
//!
//! Sampling is deterministic: each case has its own ChaCha8 stream seeded from
//! `(seed, part, user)`, so the candidates do not depend on thread count or case order.
//! Build them once per split and reuse them every epoch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::layout::mix;
use crate::data::{Dataset, Domain, EvalCase, ItemId, Part};

/// The default number of sampled negatives (ABXI, GCA paper).
pub const DEFAULT_NEGATIVES: usize = 999;

/// Why candidates could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateError {
    #[error(
        "user {user}: domain {domain} has only {available} items the user has not seen, \
         cannot draw {needed} negatives"
    )]
    TooFewItems {
        user: usize,
        domain: Domain,
        available: usize,
        needed: usize,
    },
}

/// Candidate matrix `[cases, 1 + n_negatives]` row-major; column 0 is the positive.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    pub part: Part,
    pub n_negatives: usize,
    /// Target domain per row.
    pub domain: Vec<Domain>,
    pub items: Vec<ItemId>,
}

impl Candidates {
    /// Draws `n_negatives` negatives for every case.
    pub fn sample(
        ds: &Dataset,
        cases: &[EvalCase],
        part: Part,
        n_negatives: usize,
        seed: u64,
    ) -> Result<Candidates, CandidateError> {
        let width = n_negatives + 1;
        let mut items = vec![0 as ItemId; cases.len() * width];
        let part_seed = mix(seed, part as u64 + 1);
        items
            .par_chunks_mut(width.max(1))
            .zip(cases.par_iter())
            .try_for_each_init(Vec::new, |taken: &mut Vec<u64>, (row, case)| {
                sample_row(ds, case, part_seed, n_negatives, taken, row)
            })?;
        Ok(Candidates {
            part,
            n_negatives,
            domain: cases.iter().map(|c| c.domain).collect(),
            items,
        })
    }

    pub fn len(&self) -> usize {
        self.domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domain.is_empty()
    }

    /// Candidates per row: `1 + n_negatives`.
    pub fn width(&self) -> usize {
        self.n_negatives + 1
    }

    /// Row `i`: the positive then its negatives.
    pub fn row(&self, i: usize) -> &[ItemId] {
        &self.items[i * self.width()..(i + 1) * self.width()]
    }

    /// Rows `rows` as one `[rows.len(), width]` block (to score a batch).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> &[ItemId] {
        &self.items[rows.start * self.width()..rows.end * self.width()]
    }
}

/// Fills `row` with the positive then `n` distinct negatives. `taken` is a reusable bitset
/// over the domain's items (left cleared on return).
fn sample_row(
    ds: &Dataset,
    case: &EvalCase,
    part_seed: u64,
    n: usize,
    taken: &mut Vec<u64>,
    row: &mut [ItemId],
) -> Result<(), CandidateError> {
    let range = ds.item_range(case.domain);
    let (lo, hi) = (*range.start(), *range.end());
    let size = (hi - lo + 1) as usize;
    taken.clear();
    taken.resize(size.div_ceil(64), 0);
    let set = |t: &mut Vec<u64>, i: ItemId| -> bool {
        let k = (i - lo) as usize;
        let (w, b) = (k / 64, 1u64 << (k % 64));
        let fresh = t[w] & b == 0;
        t[w] |= b;
        fresh
    };
    let mut seen = 0usize;
    for &i in &ds.users[case.user].items {
        if (lo..=hi).contains(&i) && set(taken, i) {
            seen += 1;
        }
    }
    // The positive is in the user's sequence, so it is excluded as well.
    let available = size - seen;
    if available < n {
        taken.clear();
        return Err(CandidateError::TooFewItems {
            user: case.user,
            domain: case.domain,
            available,
            needed: n,
        });
    }
    row[0] = case.target;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(part_seed, case.user as u64));
    if n * 2 <= available {
        // Rejection sampling: few rejections when at most half the free items are drawn.
        let mut k = 1;
        while k <= n {
            let i = rng.random_range(lo..=hi);
            if set(taken, i) {
                row[k] = i;
                k += 1;
            }
        }
    } else {
        // Dense case: partial Fisher-Yates over the free items.
        let mut free: Vec<ItemId> = (lo..=hi)
            .filter(|&i| {
                let k = (i - lo) as usize;
                taken[k / 64] & (1u64 << (k % 64)) == 0
            })
            .collect();
        for k in 0..n {
            let j = rng.random_range(k..free.len());
            free.swap(k, j);
            row[k + 1] = free[k];
        }
    }
    taken.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;
    use std::collections::HashSet;

    fn ds() -> Dataset {
        // A = 1..=30, B = 31..=40
        let users = vec![
            vec![1, 2, 31, 3, 32, 4, 33],
            vec![5, 34, 6, 35, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        ];
        Dataset::from_sequences("t", [30, 10], users)
    }

    #[test]
    fn excludes_the_whole_sequence_and_stays_in_domain() {
        let d = ds();
        let s = Split::leave_one_out(&d);
        for part in [Part::Valid, Part::Test] {
            let cases = s.cases(part);
            let c = Candidates::sample(&d, cases, part, 7, 42).unwrap();
            for (i, case) in cases.iter().enumerate() {
                let row = c.row(i);
                assert_eq!(row[0], case.target);
                let user: HashSet<_> = d.users[case.user].items.iter().copied().collect();
                let negs: HashSet<_> = row[1..].iter().copied().collect();
                assert_eq!(negs.len(), 7, "distinct");
                for n in &negs {
                    assert!(!user.contains(n), "negative {n} is one of the user's items");
                    assert!(d.item_range(case.domain).contains(n));
                }
            }
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let d = ds();
        let s = Split::leave_one_out(&d);
        let a = Candidates::sample(&d, &s.test, Part::Test, 5, 1).unwrap();
        let b = Candidates::sample(&d, &s.test, Part::Test, 5, 1).unwrap();
        let c = Candidates::sample(&d, &s.test, Part::Test, 5, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.items, c.items);
        // a case's negatives do not depend on the other cases
        let one = Candidates::sample(&d, &s.test[1..], Part::Test, 5, 1).unwrap();
        assert_eq!(one.row(0), a.row(1));
    }

    #[test]
    fn dense_domain_uses_every_free_item() {
        // user 0's test target is B item 33; B has 10 items, the user saw 3: 7 free.
        let d = ds();
        let s = Split::leave_one_out(&d);
        let c = Candidates::sample(&d, &s.test[..1], Part::Test, 7, 3).unwrap();
        let mut negs = c.row(0)[1..].to_vec();
        negs.sort();
        assert_eq!(negs, vec![34, 35, 36, 37, 38, 39, 40]);
        let e = Candidates::sample(&d, &s.test[..1], Part::Test, 8, 3).unwrap_err();
        assert_eq!(
            e,
            CandidateError::TooFewItems {
                user: 0,
                domain: Domain::B,
                available: 7,
                needed: 8
            }
        );
    }
}
