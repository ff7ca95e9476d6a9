//! Fixed-length, left-padded tensors for training and evaluation, as flat row-major `Vec`s.
//!
//! Every matrix is `[rows, max_len]` row-major; item `0` is padding; rows are left padded
//! and keep the most recent `max_len` positions.
//!
//! **Training layout** ([`TrainLayout`], ABXI's timeline alignment): for a training
//! sequence `s`, the merged input is `x = s[..n-1]` and the target at every position is
//! `target = s[1..]`. Streams `a` and `b` lie on the same timeline as `x`. With the default
//! [`StreamAlignment::TargetAligned`] (exactly ABXI's `get_seq_spe`), at a position whose
//! target is an A item, `a` holds the latest A item at or before that position (0 if there
//! is none yet) and is 0 at every other position; `b` likewise. With
//! [`StreamAlignment::Carried`], `a` holds the latest A item at every position. The alignment
//! is computed on the whole sequence before truncation, as ABXI does.
//!
//! **Evaluation layout** ([`EvalLayout`]): the merged input `x` (last `max_len`) and the
//! per-domain subsequences `a` and `b` of the input, each truncated to its own last
//! `max_len`, plus the target item and its domain. Only the last position is to be scored.
//!
//! `max_len` defaults to 50 (the methods page). ABXI's latest code trims to
//! `len_trim = len_max - 3 = 47` (its files hold at most 50 interactions and leave-one-out
//! removes up to 3): `LayoutConfig { max_len: 47, .. }` reproduces that exactly.
//!
//! Positions ([`positions_from_end`]) follow ABXI: 1 for the last non-padding entry, counting
//! non-padding entries backwards, 0 on padding.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::split::{EvalCase, Part, Split};
use super::{Dataset, Domain, ItemId};

/// The padding item.
pub const PAD: ItemId = 0;

/// Code of a position's target domain in [`TrainLayout::target_domain`].
pub const TARGET_NONE: u8 = 0;
/// Target is an A item.
pub const TARGET_A: u8 = 1;
/// Target is a B item.
pub const TARGET_B: u8 = 2;

/// The code of a domain in `target_domain` matrices (`1` = A, `2` = B; `0` = no target).
pub fn target_code(d: Domain) -> u8 {
    match d {
        Domain::A => TARGET_A,
        Domain::B => TARGET_B,
    }
}

/// How the per-domain streams sit on the merged timeline during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamAlignment {
    /// ABXI: a value only where the target is in that stream's domain.
    #[default]
    TargetAligned,
    /// The latest item of the domain at every position.
    Carried,
}

/// Options of the layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutConfig {
    pub max_len: usize,
    pub alignment: StreamAlignment,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            max_len: 50,
            alignment: StreamAlignment::TargetAligned,
        }
    }
}

/// ABXI's position index, written into `out`: 1 at the last non-padding entry, counting
/// non-padding entries towards the front; 0 on padding.
pub fn positions_from_end(row: &[ItemId], out: &mut [u32]) {
    let mut k = 0u32;
    for (o, &v) in out.iter_mut().zip(row).rev() {
        if v == PAD {
            *o = 0;
        } else {
            k += 1;
            *o = k;
        }
    }
}

/// Copies the last `out.len()` entries of `src` into `out`, left padding with `PAD`.
fn left_pad_into<T: Copy + Default>(src: &[T], out: &mut [T]) {
    let l = out.len();
    let take = src.len().min(l);
    let pad = l - take;
    out[..pad].fill(T::default());
    out[pad..].copy_from_slice(&src[src.len() - take..]);
}

/// The training tensors of every training sequence, one row per sequence.
#[derive(Debug, Clone)]
pub struct TrainLayout {
    pub max_len: usize,
    pub alignment: StreamAlignment,
    /// Row -> index into `dataset.users`.
    pub users: Vec<u32>,
    /// Row -> length of its training sequence (`dataset.users[u].items[..train_len]`).
    pub train_len: Vec<u32>,
    /// Merged input stream `[rows, max_len]`.
    pub x: Vec<ItemId>,
    /// Domain-A stream on the merged timeline `[rows, max_len]`.
    pub a: Vec<ItemId>,
    /// Domain-B stream on the merged timeline `[rows, max_len]`.
    pub b: Vec<ItemId>,
    /// Next item at every position `[rows, max_len]` (0 on padding).
    pub target: Vec<ItemId>,
    /// Target domain code at every position ([`TARGET_NONE`], [`TARGET_A`], [`TARGET_B`]).
    pub target_domain: Vec<u8>,
    /// Positions from the end of `x`, `a`, `b` ([`positions_from_end`]).
    pub pos_x: Vec<u32>,
    pub pos_a: Vec<u32>,
    pub pos_b: Vec<u32>,
}

impl TrainLayout {
    /// Lays out `split.train` (sequences shorter than 2 give no training pair and are skipped).
    pub fn build(ds: &Dataset, split: &Split, cfg: LayoutConfig) -> TrainLayout {
        let l = cfg.max_len;
        let rows: Vec<_> = split.train.iter().filter(|t| t.len >= 2).collect();
        let n = rows.len();
        let mut out = TrainLayout {
            max_len: l,
            alignment: cfg.alignment,
            users: Vec::with_capacity(n),
            train_len: rows.iter().map(|t| t.len as u32).collect(),
            x: vec![PAD; n * l],
            a: vec![PAD; n * l],
            b: vec![PAD; n * l],
            target: vec![PAD; n * l],
            target_domain: vec![TARGET_NONE; n * l],
            pos_x: vec![0; n * l],
            pos_a: vec![0; n * l],
            pos_b: vec![0; n * l],
        };
        let n_a = ds.n_items[0] as ItemId;
        let mut sa = Vec::new();
        let mut sb = Vec::new();
        let mut td = Vec::new();
        for (r, t) in rows.iter().enumerate() {
            let s = &ds.users[t.user].items[..t.len];
            let (xs, gt) = (&s[..s.len() - 1], &s[1..]);
            sa.clear();
            sb.clear();
            td.clear();
            let (mut last_a, mut last_b) = (PAD, PAD);
            for (&xi, &gi) in xs.iter().zip(gt) {
                if xi <= n_a {
                    last_a = xi;
                } else {
                    last_b = xi;
                }
                let target_is_a = gi <= n_a;
                td.push(if target_is_a { TARGET_A } else { TARGET_B });
                match cfg.alignment {
                    StreamAlignment::TargetAligned => {
                        sa.push(if target_is_a { last_a } else { PAD });
                        sb.push(if target_is_a { PAD } else { last_b });
                    }
                    StreamAlignment::Carried => {
                        sa.push(last_a);
                        sb.push(last_b);
                    }
                }
            }
            let rr = r * l..(r + 1) * l;
            out.users.push(t.user as u32);
            left_pad_into(xs, &mut out.x[rr.clone()]);
            left_pad_into(&sa, &mut out.a[rr.clone()]);
            left_pad_into(&sb, &mut out.b[rr.clone()]);
            left_pad_into(gt, &mut out.target[rr.clone()]);
            left_pad_into(&td, &mut out.target_domain[rr.clone()]);
            positions_from_end(&out.x[rr.clone()], &mut out.pos_x[rr.clone()]);
            positions_from_end(&out.a[rr.clone()], &mut out.pos_a[rr.clone()]);
            positions_from_end(&out.b[rr.clone()], &mut out.pos_b[rr.clone()]);
        }
        out
    }

    /// Number of rows (training sequences).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Shuffled mini-batches for one epoch. The order depends only on `(seed, epoch)`;
    /// the last batch may be smaller.
    pub fn batches(&self, batch_size: usize, seed: u64, epoch: u64) -> TrainBatches<'_> {
        assert!(batch_size > 0, "batch_size must be positive");
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch));
        order.shuffle(&mut rng);
        TrainBatches {
            layout: self,
            order,
            batch_size,
            next: 0,
        }
    }

    /// The batch made of `rows` (in that order).
    pub fn gather(&self, rows: &[usize]) -> TrainBatch {
        let l = self.max_len;
        let pick = |src: &Vec<ItemId>| -> Vec<ItemId> {
            let mut v = Vec::with_capacity(rows.len() * l);
            for &r in rows {
                v.extend_from_slice(&src[r * l..(r + 1) * l]);
            }
            v
        };
        let mut td = Vec::with_capacity(rows.len() * l);
        for &r in rows {
            td.extend_from_slice(&self.target_domain[r * l..(r + 1) * l]);
        }
        TrainBatch {
            max_len: l,
            rows: rows.to_vec(),
            users: rows.iter().map(|&r| self.users[r]).collect(),
            x: pick(&self.x),
            a: pick(&self.a),
            b: pick(&self.b),
            target: pick(&self.target),
            target_domain: td,
            pos_x: pick(&self.pos_x),
            pos_a: pick(&self.pos_a),
            pos_b: pick(&self.pos_b),
        }
    }
}

/// A training mini-batch: every matrix is `[batch, max_len]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBatch {
    pub max_len: usize,
    /// Rows of the [`TrainLayout`] in this batch.
    pub rows: Vec<usize>,
    /// Index into `dataset.users` per row.
    pub users: Vec<u32>,
    pub x: Vec<ItemId>,
    pub a: Vec<ItemId>,
    pub b: Vec<ItemId>,
    pub target: Vec<ItemId>,
    pub target_domain: Vec<u8>,
    pub pos_x: Vec<u32>,
    pub pos_a: Vec<u32>,
    pub pos_b: Vec<u32>,
}

impl TrainBatch {
    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }
}

/// Iterator over one epoch's shuffled training batches.
pub struct TrainBatches<'a> {
    layout: &'a TrainLayout,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Iterator for TrainBatches<'_> {
    type Item = TrainBatch;
    fn next(&mut self) -> Option<TrainBatch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let b = self.layout.gather(&self.order[self.next..end]);
        self.next = end;
        Some(b)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for TrainBatches<'_> {}

/// The evaluation tensors of one part (validation or test), one row per case, in case order.
#[derive(Debug, Clone)]
pub struct EvalLayout {
    pub part: Part,
    pub max_len: usize,
    /// The cases, row by row (user, input length, target, domain).
    pub cases: Vec<EvalCase>,
    /// Merged input `[rows, max_len]`.
    pub x: Vec<ItemId>,
    /// A subsequence of the input, its own last `max_len` `[rows, max_len]`.
    pub a: Vec<ItemId>,
    /// B subsequence of the input `[rows, max_len]`.
    pub b: Vec<ItemId>,
    pub pos_x: Vec<u32>,
    pub pos_a: Vec<u32>,
    pub pos_b: Vec<u32>,
    /// Target item per row.
    pub target: Vec<ItemId>,
    /// Target domain per row.
    pub target_domain: Vec<Domain>,
}

impl EvalLayout {
    /// Lays out the validation or test cases of `split`.
    pub fn build(ds: &Dataset, split: &Split, part: Part, max_len: usize) -> EvalLayout {
        Self::from_cases(ds, split.cases(part), part, max_len)
    }

    /// Lays out any list of cases.
    pub fn from_cases(ds: &Dataset, cases: &[EvalCase], part: Part, max_len: usize) -> EvalLayout {
        let l = max_len;
        let n = cases.len();
        let mut out = EvalLayout {
            part,
            max_len: l,
            cases: cases.to_vec(),
            x: vec![PAD; n * l],
            a: vec![PAD; n * l],
            b: vec![PAD; n * l],
            pos_x: vec![0; n * l],
            pos_a: vec![0; n * l],
            pos_b: vec![0; n * l],
            target: cases.iter().map(|c| c.target).collect(),
            target_domain: cases.iter().map(|c| c.domain).collect(),
        };
        let n_a = ds.n_items[0] as ItemId;
        let mut sa = Vec::new();
        let mut sb = Vec::new();
        for (r, c) in cases.iter().enumerate() {
            let input = &ds.users[c.user].items[..c.input_len];
            sa.clear();
            sb.clear();
            for &v in input {
                if v <= n_a {
                    sa.push(v)
                } else {
                    sb.push(v)
                }
            }
            let rr = r * l..(r + 1) * l;
            left_pad_into(input, &mut out.x[rr.clone()]);
            left_pad_into(&sa, &mut out.a[rr.clone()]);
            left_pad_into(&sb, &mut out.b[rr.clone()]);
            positions_from_end(&out.x[rr.clone()], &mut out.pos_x[rr.clone()]);
            positions_from_end(&out.a[rr.clone()], &mut out.pos_a[rr.clone()]);
            positions_from_end(&out.b[rr.clone()], &mut out.pos_b[rr.clone()]);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Batches in row order (no copy: slices of the layout).
    pub fn batches(&self, batch_size: usize) -> impl ExactSizeIterator<Item = EvalBatch<'_>> {
        assert!(batch_size > 0, "batch_size must be positive");
        let n = self.len();
        let l = self.max_len;
        (0..n.div_ceil(batch_size)).map(move |i| {
            let rows = i * batch_size..((i + 1) * batch_size).min(n);
            let m = rows.start * l..rows.end * l;
            EvalBatch {
                max_len: l,
                rows: rows.clone(),
                x: &self.x[m.clone()],
                a: &self.a[m.clone()],
                b: &self.b[m.clone()],
                pos_x: &self.pos_x[m.clone()],
                pos_a: &self.pos_a[m.clone()],
                pos_b: &self.pos_b[m.clone()],
                target: &self.target[rows.clone()],
                target_domain: &self.target_domain[rows],
            }
        })
    }
}

/// A slice of an [`EvalLayout`]: matrices `[batch, max_len]`, vectors `[batch]`.
#[derive(Debug, Clone)]
pub struct EvalBatch<'a> {
    pub max_len: usize,
    /// Rows of the layout (and of its candidate matrix) in this batch.
    pub rows: std::ops::Range<usize>,
    pub x: &'a [ItemId],
    pub a: &'a [ItemId],
    pub b: &'a [ItemId],
    pub pos_x: &'a [u32],
    pub pos_a: &'a [u32],
    pub pos_b: &'a [u32],
    pub target: &'a [ItemId],
    pub target_domain: &'a [Domain],
}

impl EvalBatch<'_> {
    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }
}

/// splitmix64-style mixing of two seeds (order sensitive).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A items 1..=5, B items 6..=8.
    fn ds(seqs: &[&[ItemId]]) -> Dataset {
        Dataset::from_sequences("t", [5, 3], seqs.iter().map(|s| s.to_vec()))
    }

    #[test]
    fn train_layout_matches_abxi_alignment() {
        // seq = [a1, b6, a2, b7, a3, | valid b8, test a4]
        let d = ds(&[&[1, 6, 2, 7, 3, 8, 4]]);
        let s = Split::leave_one_out(&d);
        let t = TrainLayout::build(
            &d,
            &s,
            LayoutConfig {
                max_len: 6,
                ..Default::default()
            },
        );
        // train = [1,6,2,7,3]; x = [1,6,2,7]; gt = [6,2,7,3]
        assert_eq!(t.x, vec![0, 0, 1, 6, 2, 7]);
        assert_eq!(t.target, vec![0, 0, 6, 2, 7, 3]);
        assert_eq!(t.target_domain, vec![0, 0, 2, 1, 2, 1]);
        // ABXI get_seq_spe: seq_a = [0,1,0,2], seq_b = [0,0,6,0]
        assert_eq!(t.a, vec![0, 0, 0, 1, 0, 2]);
        assert_eq!(t.b, vec![0, 0, 0, 0, 6, 0]);
        assert_eq!(t.pos_x, vec![0, 0, 4, 3, 2, 1]);
        assert_eq!(t.pos_a, vec![0, 0, 0, 2, 0, 1]);
        assert_eq!(t.pos_b, vec![0, 0, 0, 0, 1, 0]);

        let c = TrainLayout::build(
            &d,
            &s,
            LayoutConfig {
                max_len: 6,
                alignment: StreamAlignment::Carried,
            },
        );
        assert_eq!(c.a, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(c.b, vec![0, 0, 0, 6, 6, 7]);
    }

    #[test]
    fn train_layout_truncates_after_alignment() {
        // x = [6,1,7,8,2], gt = [1,7,8,2,3]; keep last 3
        let d = ds(&[&[6, 1, 7, 8, 2, 3, 4, 5]]);
        let s = Split::leave_one_out(&d);
        let t = TrainLayout::build(
            &d,
            &s,
            LayoutConfig {
                max_len: 3,
                ..Default::default()
            },
        );
        assert_eq!(t.x, vec![7, 8, 2]);
        assert_eq!(t.target, vec![8, 2, 3]);
        // position of x=7 (target 8, B): latest B at or before is 7; x=8 -> target 2 (A):
        // latest A is 1 (outside the window); x=2 -> target 3 (A): 2
        assert_eq!(t.a, vec![0, 1, 2]);
        assert_eq!(t.b, vec![7, 0, 0]);
    }

    #[test]
    fn eval_layout_per_domain_streams() {
        let d = ds(&[&[1, 6, 2, 7, 3, 8, 4]]);
        let s = Split::leave_one_out(&d);
        let v = EvalLayout::build(&d, &s, Part::Valid, 4);
        // input [1,6,2,7,3], target 8
        assert_eq!(v.x, vec![6, 2, 7, 3]);
        assert_eq!(v.a, vec![0, 1, 2, 3]);
        assert_eq!(v.b, vec![0, 0, 6, 7]);
        assert_eq!(v.target, vec![8]);
        assert_eq!(v.target_domain, vec![Domain::B]);
        let t = EvalLayout::build(&d, &s, Part::Test, 2);
        assert_eq!(t.x, vec![3, 8]);
        assert_eq!(t.a, vec![2, 3]);
        assert_eq!(t.b, vec![7, 8]);
        assert_eq!(t.pos_b, vec![2, 1]);
        assert_eq!(t.target, vec![4]);
    }

    #[test]
    fn batches_cover_every_row_once_and_are_seeded() {
        let seqs: Vec<Vec<ItemId>> = (0..10).map(|i| vec![1 + i % 5, 6, 2, 7, 3]).collect();
        let refs: Vec<&[ItemId]> = seqs.iter().map(|s| s.as_slice()).collect();
        let d = ds(&refs);
        let s = Split::leave_one_out(&d);
        let t = TrainLayout::build(&d, &s, LayoutConfig::default());
        let rows = |seed, epoch| -> Vec<usize> {
            t.batches(3, seed, epoch).flat_map(|b| b.rows).collect()
        };
        let mut r = rows(1, 0);
        assert_eq!(t.batches(3, 1, 0).len(), 4);
        assert_eq!(r, rows(1, 0));
        assert_ne!(r, rows(1, 1));
        r.sort();
        assert_eq!(r, (0..10).collect::<Vec<_>>());
        let b = t.batches(4, 7, 0).next().unwrap();
        assert_eq!(b.x.len(), 4 * 50);
        assert_eq!(b.x, t.gather(&b.rows).x);
        let e = EvalLayout::build(&d, &s, Part::Test, 50);
        let eb: Vec<_> = e.batches(4).collect();
        assert_eq!(eb.len(), 3);
        assert_eq!(eb[2].rows, 8..10);
        assert_eq!(eb[2].x.len(), 2 * 50);
    }
}
