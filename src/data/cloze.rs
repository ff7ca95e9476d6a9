//! BERT4Rec's cloze protocol, the masked model AutoCDSR trains on KuaiRand-1K: at training,
//! random items of a sequence are replaced by their domain's mask token
//! ([`Dataset::mask_token`]) and the hidden items are the targets; at evaluation the history is
//! followed by one mask token of the target's domain, and that last position is scored.
//!
//! Both work on the layouts the causal models use ([`TrainBatch`], [`EvalBatch`] rows), so
//! negatives, evaluation candidates and metrics are shared with them.
//!
//! ```
//! use cdsr_lab::data::{cloze, Dataset, Domain, LayoutConfig, Split, TrainLayout};
//! let ds = Dataset::from_sequences("toy", [3, 2], [vec![1, 4, 2, 5, 3, 1]]);
//! let split = Split::leave_one_out(&ds); // trains on [1, 4, 2, 5]
//! let layout = TrainLayout::build(&ds, &split, LayoutConfig { max_len: 6, ..Default::default() });
//! let batch = layout.batches(1, 0, 0).next().unwrap();
//! let masked = cloze::mask_train_batch(&ds, &batch, 0.5, 7);
//! for t in 0..6 {
//!     if masked.target[t] != 0 {
//!         // a hidden item: the input holds its domain's mask token
//!         let d = ds.domain_of(masked.target[t]).unwrap();
//!         assert_eq!(masked.x[t], ds.mask_token(d));
//!     }
//! }
//! // evaluation: the history shifted left, the target domain's mask token last
//! assert_eq!(cloze::masked_last(&ds, &[0, 0, 1, 4, 2, 5], Domain::B), [0, 1, 4, 2, 5, ds.mask_token(Domain::B)]);
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::layout::{mix, positions_from_end, target_code, TrainBatch, PAD, TARGET_NONE};
use super::{Dataset, Domain, ItemId};

/// BERT4Rec's default masking probability (its public configurations use 0.2 for short
/// sequences).
pub const DEFAULT_MASK_PROB: f64 = 0.2;

/// The masked-item training batch of a causal [`TrainBatch`].
///
/// A row's sequence is its `target` row: the causal layout's targets are the training
/// sequence shifted by one, so they hold its last `max_len` items (only the first item of a
/// sequence shorter than `max_len + 1` is not among them). Every item is hidden with
/// probability `mask_prob`, at least one per row (the last item when no draw hid any, as
/// BERT4Rec's evaluation hides the last one). Input `x` holds the masked sequence, `target` the
/// hidden item at masked positions and padding elsewhere, `target_domain` their domains; the
/// per-domain streams `a`, `b` are empty (the masked model reads `x` only). Draws are seeded
/// per layout row from `seed`, so a batch is the same whatever rows it is batched with.
pub fn mask_train_batch(ds: &Dataset, batch: &TrainBatch, mask_prob: f64, seed: u64) -> TrainBatch {
    let l = batch.max_len;
    let n = batch.batch_size() * l;
    let mut out = TrainBatch {
        max_len: l,
        rows: batch.rows.clone(),
        users: batch.users.clone(),
        x: vec![PAD; n],
        a: vec![PAD; n],
        b: vec![PAD; n],
        target: vec![PAD; n],
        target_domain: vec![TARGET_NONE; n],
        pos_x: vec![0; n],
        pos_a: vec![0; n],
        pos_b: vec![0; n],
    };
    for (k, &row) in batch.rows.iter().enumerate() {
        let seq = &batch.target[k * l..(k + 1) * l];
        let x = &mut out.x[k * l..(k + 1) * l];
        let target = &mut out.target[k * l..(k + 1) * l];
        let td = &mut out.target_domain[k * l..(k + 1) * l];
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, row as u64));
        let hide = |t: usize, x: &mut [ItemId], target: &mut [ItemId], td: &mut [u8]| {
            let d = ds
                .domain_of(seq[t])
                .expect("loaders guarantee every item id is inside the id space");
            x[t] = ds.mask_token(d);
            target[t] = seq[t];
            td[t] = target_code(d);
        };
        let mut hidden = 0;
        for t in 0..l {
            x[t] = seq[t];
            if seq[t] != PAD && rng.random::<f64>() < mask_prob {
                hide(t, x, target, td);
                hidden += 1;
            }
        }
        if hidden == 0 {
            if let Some(t) = seq.iter().rposition(|&i| i != PAD) {
                hide(t, x, target, td);
            }
        }
        positions_from_end(x, &mut out.pos_x[k * l..(k + 1) * l]);
    }
    out
}

/// The evaluation input of a masked model for one case: the last `len - 1` entries of the
/// left-padded history row `x` followed by the mask token of the target's domain.
pub fn masked_last(ds: &Dataset, x: &[ItemId], domain: Domain) -> Vec<ItemId> {
    let mut row = Vec::with_capacity(x.len());
    if let Some(rest) = x.get(1..) {
        row.extend_from_slice(rest);
    }
    row.push(ds.mask_token(domain));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LayoutConfig, Split, TrainLayout};

    fn layout(ds: &Dataset, l: usize) -> TrainLayout {
        let split = Split::leave_one_out(ds);
        TrainLayout::build(
            ds,
            &split,
            LayoutConfig {
                max_len: l,
                ..Default::default()
            },
        )
    }

    #[test]
    fn masked_positions_hold_their_domains_mask_and_targets_the_hidden_items() {
        let ds = Dataset::from_sequences(
            "t",
            [4, 3],
            [vec![1, 5, 2, 6, 3, 7, 4, 1, 2], vec![2, 6, 3, 5]],
        );
        let lay = layout(&ds, 8);
        let batch = lay.batches(2, 0, 0).next().unwrap();
        let mut hidden = 0;
        let mut seen = 0;
        for seed in 0..50 {
            let m = mask_train_batch(&ds, &batch, 0.3, seed);
            for k in 0..2 {
                let seq = &batch.target[k * 8..(k + 1) * 8];
                let row_hidden = (0..8).filter(|&t| m.target[k * 8 + t] != PAD).count();
                assert!(row_hidden >= 1, "every row hides at least one item");
                for (t, &item) in seq.iter().enumerate() {
                    let i = k * 8 + t;
                    if m.target[i] != PAD {
                        let d = ds.domain_of(item).unwrap();
                        assert_eq!((m.x[i], m.target[i]), (ds.mask_token(d), item));
                        assert_eq!(m.target_domain[i], target_code(d));
                        hidden += 1;
                    } else {
                        assert_eq!(m.x[i], item);
                        assert_eq!(m.target_domain[i], TARGET_NONE);
                    }
                    seen += (item != PAD) as usize;
                }
            }
            // same seed, same mask
            assert_eq!(m, mask_train_batch(&ds, &batch, 0.3, seed));
        }
        let rate = hidden as f64 / seen as f64;
        assert!((0.25..0.45).contains(&rate), "hidden share {rate}");
    }

    #[test]
    fn no_draw_hides_the_last_item() {
        let ds = Dataset::from_sequences("t", [4, 3], [vec![1, 5, 2, 6, 3]]);
        let lay = layout(&ds, 5);
        let batch = lay.batches(1, 0, 0).next().unwrap();
        let m = mask_train_batch(&ds, &batch, 0.0, 1);
        // training sequence [1, 5, 2]: targets row [0, 0, 0, 5, 2]
        assert_eq!(m.x, [0, 0, 0, 5, ds.mask_token(Domain::A)]);
        assert_eq!(m.target, [0, 0, 0, 0, 2]);
        assert_eq!(m.pos_x, [0, 0, 0, 2, 1]);
    }

    #[test]
    fn mask_tokens_sit_past_the_item_space() {
        let ds = Dataset::from_sequences("t", [4, 3], [vec![1, 5]]);
        assert_eq!(ds.mask_token(Domain::A), 8);
        assert_eq!(ds.mask_token(Domain::B), 9);
        assert_eq!(ds.domain_of(8), None);
        assert_eq!(ds.domain_of_token(8), Some(Domain::A));
        assert_eq!(ds.domain_of_token(9), Some(Domain::B));
        assert_eq!(ds.domain_of_token(10), None);
        assert_eq!(ds.domain_of_token(0), None);
    }
}
