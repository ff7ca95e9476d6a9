//! Training negatives for sampled-softmax losses, as ABXI draws them: for every position that
//! has a target, `n` items from domain A and `n` from domain B (ABXI: 128 each), uniformly
//! without replacement, excluding every item of the user's training sequence.
//!
//! Deterministic: row `r` of a batch uses its own ChaCha8 stream seeded from
//! `(seed, layout row)`; pass a fresh `seed` per step (e.g. mixed from run seed and step).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::layout::{mix, TrainBatch, TrainLayout, PAD};
use super::{Dataset, Domain, ItemId};

/// Whether every position draws its own negatives or a row shares one draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSharing {
    /// A fresh draw at every target position (ABXI).
    #[default]
    PerPosition,
    /// One draw per row, repeated at each target position (cheaper).
    PerRow,
}

/// A training row whose sequence leaves fewer than `n` items of a domain to draw from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user {user}: domain {domain} has {free} items outside the training sequence, fewer than \
     the {n} training negatives per domain asked for"
)]
pub struct TooFewNegatives {
    /// Index into `dataset.users`.
    pub user: usize,
    pub domain: Domain,
    pub free: usize,
    pub n: usize,
}

/// Checks, before training starts, that every row of `layout` leaves at least `n` items of
/// each domain outside its training sequence, so [`sample_train_negatives`] cannot run out in
/// the middle of an epoch. Returns the first row that does not.
pub fn check_train_negatives(
    ds: &Dataset,
    layout: &TrainLayout,
    n: usize,
) -> Result<(), TooFewNegatives> {
    if n == 0 {
        return Ok(());
    }
    (0..layout.users.len()).try_for_each(|row| {
        check_row(
            ds,
            layout.users[row] as usize,
            &training_items(ds, layout, row),
            n,
        )
    })
}

/// The sorted, distinct items of `layout` row `row`'s training sequence: what its negatives
/// exclude.
fn training_items(ds: &Dataset, layout: &TrainLayout, row: usize) -> Vec<ItemId> {
    let user = layout.users[row] as usize;
    let mut seen = ds.users[user].items[..layout.train_len[row] as usize].to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// Whether each domain leaves at least `n` items outside `seen` (a row's [`training_items`]).
fn check_row(ds: &Dataset, user: usize, seen: &[ItemId], n: usize) -> Result<(), TooFewNegatives> {
    for domain in Domain::BOTH {
        let range = ds.item_range(domain);
        let free =
            ds.n_items[domain.index()] - seen.iter().filter(|&&i| range.contains(&i)).count();
        if free < n {
            return Err(TooFewNegatives {
                user,
                domain,
                free,
                n,
            });
        }
    }
    Ok(())
}

/// One task's marks of the items drawn so far: `stamp[i] == gen` when item `i` is in the
/// current draw.
struct Stamps {
    stamp: Vec<u32>,
    gen: u32,
}

impl Stamps {
    /// Starts a new draw: every mark left so far is of an earlier one.
    fn next(&mut self) -> u32 {
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.stamp.fill(0);
            self.gen = 1;
        }
        self.gen
    }
}

/// Draws training negatives for `batch`: returns `[batch, max_len, 2 * n]` row-major, the
/// `n` A negatives then the `n` B negatives at each position; all 0 where there is no target.
///
/// Panics if a domain has fewer than `n` items outside a user's training sequence: check the
/// layout once with [`check_train_negatives`] first (the trainer does).
pub fn sample_train_negatives(
    ds: &Dataset,
    layout: &TrainLayout,
    batch: &TrainBatch,
    n: usize,
    sharing: NegativeSharing,
    seed: u64,
) -> Vec<ItemId> {
    let l = batch.max_len;
    let w = 2 * n;
    let mut out = vec![PAD; batch.batch_size() * l * w];
    if n == 0 {
        return out;
    }
    let ranges = [ds.item_range(Domain::A), ds.item_range(Domain::B)];
    // Each task's `stamp` marks the items of the draw numbered `gen`; the number goes with
    // the buffer it marks (not with the row), so a row never mistakes the marks another row
    // of the same task left for its own draws: the negatives depend on the row and the seed
    // only, not on how rayon splits the batch.
    out.par_chunks_mut(l * w).enumerate().for_each_init(
        || Stamps {
            stamp: vec![0u32; ds.vocab_size()],
            gen: 0,
        },
        |stamps, (k, row_out)| {
            let row = batch.rows[k];
            let user = layout.users[row] as usize;
            let excluded = training_items(ds, layout, row);
            // Once per row, not per draw.
            if let Err(e) = check_row(ds, user, &excluded, n) {
                panic!("{e} (check_train_negatives finds this before training)");
            }
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, row as u64));
            let draw = |dst: &mut [ItemId], rng: &mut ChaCha8Rng, stamps: &mut Stamps| {
                for (d, range) in ranges.iter().enumerate() {
                    let (lo, hi) = (*range.start(), *range.end());
                    let gen = stamps.next();
                    let mut j = 0;
                    while j < n {
                        let i = rng.random_range(lo..=hi);
                        let mark = &mut stamps.stamp[i as usize];
                        if *mark != gen && excluded.binary_search(&i).is_err() {
                            *mark = gen;
                            dst[d * n + j] = i;
                            j += 1;
                        }
                    }
                }
            };
            let targets = &batch.target[k * l..(k + 1) * l];
            let mut first: Option<usize> = None;
            for (p, &t) in targets.iter().enumerate() {
                if t == PAD {
                    continue;
                }
                match (sharing, first) {
                    (NegativeSharing::PerRow, Some(f)) => {
                        row_out.copy_within(f * w..(f + 1) * w, p * w);
                    }
                    _ => {
                        draw(&mut row_out[p * w..(p + 1) * w], &mut rng, stamps);
                        first = Some(p);
                    }
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LayoutConfig, Split};
    use std::collections::HashSet;

    #[test]
    fn too_few_negatives_are_found_before_training() {
        // B = 21..=24: user 0 has seen 21 and 22 in training, leaving 2 of 4.
        let seqs: Vec<Vec<ItemId>> = vec![vec![1, 21, 2, 22, 3, 23], vec![5, 6, 24, 7]];
        let ds = Dataset::from_sequences("t", [20, 4], seqs);
        let split = Split::leave_one_out(&ds);
        let layout = TrainLayout::build(&ds, &split, LayoutConfig::default());
        assert_eq!(check_train_negatives(&ds, &layout, 2), Ok(()));
        let err = check_train_negatives(&ds, &layout, 3).unwrap_err();
        assert_eq!(
            err,
            TooFewNegatives {
                user: 0,
                domain: Domain::B,
                free: 2,
                n: 3
            }
        );
        assert!(err.to_string().contains("user 0: domain B has 2 items"));
    }

    #[test]
    fn negatives_are_in_domain_distinct_and_unseen() {
        // A = 1..=20, B = 21..=30
        let seqs: Vec<Vec<ItemId>> = vec![vec![1, 21, 2, 22, 3, 23, 4], vec![5, 6, 24, 7, 25, 8]];
        let ds = Dataset::from_sequences("t", [20, 10], seqs);
        let split = Split::leave_one_out(&ds);
        let layout = TrainLayout::build(
            &ds,
            &split,
            LayoutConfig {
                max_len: 6,
                ..Default::default()
            },
        );
        let batch = layout.gather(&[1, 0]);
        let n = 4;
        let neg = sample_train_negatives(&ds, &layout, &batch, n, NegativeSharing::PerPosition, 9);
        assert_eq!(neg.len(), 2 * 6 * 8);
        for k in 0..2 {
            let user = batch.users[k] as usize;
            let train: HashSet<ItemId> = ds.users[user].items[..split.train[user].len]
                .iter()
                .copied()
                .collect();
            for p in 0..6 {
                let cell = &neg[(k * 6 + p) * 8..(k * 6 + p + 1) * 8];
                if batch.target[k * 6 + p] == 0 {
                    assert!(cell.iter().all(|&v| v == 0));
                    continue;
                }
                let (a, b) = cell.split_at(n);
                assert!(a.iter().all(|i| (1..=20).contains(i)));
                assert!(b.iter().all(|i| (21..=30).contains(i)));
                assert_eq!(a.iter().collect::<HashSet<_>>().len(), n);
                assert_eq!(b.iter().collect::<HashSet<_>>().len(), n);
                assert!(cell.iter().all(|i| !train.contains(i)));
            }
        }
        // deterministic in (seed, row), and per-row sharing repeats one draw
        let again =
            sample_train_negatives(&ds, &layout, &batch, n, NegativeSharing::PerPosition, 9);
        assert_eq!(neg, again);
        let shared = sample_train_negatives(&ds, &layout, &batch, n, NegativeSharing::PerRow, 9);
        let cells: Vec<&[ItemId]> = (0..6)
            .filter(|&p| batch.target[p] != 0)
            .map(|p| &shared[p * 8..(p + 1) * 8])
            .collect();
        assert!(cells.windows(2).all(|w| w[0] == w[1]));
    }

    /// A row's negatives are those it gets alone, whichever rows share its batch and however
    /// many threads draw them: the marks of one row's draws never exclude items from another
    /// row's (food-kitchen slice, 64 rows, one thread and three).
    #[test]
    fn a_rows_negatives_do_not_depend_on_its_batch_or_the_threads() {
        let loaded =
            crate::data::load(&crate::data::repo_data_dir().join("food-kitchen-mini")).unwrap();
        let ds = &loaded.dataset;
        let layout = TrainLayout::build(ds, &loaded.default_split(), LayoutConfig::default());
        let rows: Vec<usize> = (0..64).collect();
        let batch = layout.gather(&rows);
        let (l, n) = (batch.max_len, 8);
        let w = 2 * n;
        let sharing = NegativeSharing::PerPosition;
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let all = pool.install(|| sample_train_negatives(ds, &layout, &batch, n, sharing, 5));
            for (k, &row) in rows.iter().enumerate() {
                let alone = layout.gather(&[row]);
                let own = sample_train_negatives(ds, &layout, &alone, n, sharing, 5);
                assert_eq!(&all[k * l * w..(k + 1) * l * w], &own[..], "row {row}");
            }
        }
    }
}
