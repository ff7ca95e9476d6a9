//! Train / validation / test splits over a [`Dataset`]'s users.
//!
//! Two kinds:
//! - [`Split::leave_one_out`] (ABXI, food-kitchen): per user, train = `seq[..n-2]`,
//!   validation target `seq[n-2]` with input `seq[..n-2]`, test target `seq[n-1]` with input
//!   `seq[..n-1]`. Users with fewer than 3 interactions have no validation input and are left
//!   out of all three parts (counted in [`Split::skipped_users`]).
//! - [`Split::by_file_sets`] (KuaiRand-1K): the users are already partitioned by file set;
//!   training users train on their whole sequence, validation and test users predict their
//!   last item from the rest.
//!
//! A split only holds indices into `dataset.users` and lengths: no item is copied.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Dataset, Domain, ItemId};

/// How a split was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitKind {
    LeaveOneOut,
    FileSets,
}

/// Which part of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Part {
    Train,
    Valid,
    Test,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A training sequence: `dataset.users[user].items[..len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainSeq {
    pub user: usize,
    pub len: usize,
}

/// One next-item evaluation case: predict `target` from `dataset.users[user].items[..input_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalCase {
    pub user: usize,
    pub input_len: usize,
    pub target: ItemId,
    pub domain: Domain,
}

/// Which users (indices into `dataset.users`) came from which file set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileSets {
    pub train: Range<usize>,
    pub valid: Range<usize>,
    pub test: Range<usize>,
}

/// A split of a dataset into training sequences and validation/test cases.
#[derive(Debug, Clone)]
pub struct Split {
    pub kind: SplitKind,
    pub train: Vec<TrainSeq>,
    pub valid: Vec<EvalCase>,
    pub test: Vec<EvalCase>,
    /// Users too short to take part.
    pub skipped_users: usize,
}

impl Split {
    /// Leave-one-out per user (ABXI's protocol).
    pub fn leave_one_out(ds: &Dataset) -> Split {
        let mut s = Split {
            kind: SplitKind::LeaveOneOut,
            train: Vec::with_capacity(ds.users.len()),
            valid: Vec::with_capacity(ds.users.len()),
            test: Vec::with_capacity(ds.users.len()),
            skipped_users: 0,
        };
        for (u, seq) in ds.users.iter().enumerate() {
            let n = seq.items.len();
            if n < 3 {
                s.skipped_users += 1;
                continue;
            }
            s.train.push(TrainSeq {
                user: u,
                len: n - 2,
            });
            s.valid.push(eval_case(ds, u, n - 2));
            s.test.push(eval_case(ds, u, n - 1));
        }
        s
    }

    /// Split by file set: training users train on their whole sequence; validation and test
    /// users predict their last item. Users with fewer than 2 interactions are skipped.
    pub fn by_file_sets(ds: &Dataset, sets: &FileSets) -> Split {
        let mut s = Split {
            kind: SplitKind::FileSets,
            train: Vec::with_capacity(sets.train.len()),
            valid: Vec::with_capacity(sets.valid.len()),
            test: Vec::with_capacity(sets.test.len()),
            skipped_users: 0,
        };
        for u in sets.train.clone() {
            let n = ds.users[u].items.len();
            if n < 2 {
                s.skipped_users += 1;
            } else {
                s.train.push(TrainSeq { user: u, len: n });
            }
        }
        for (range, out) in [(&sets.valid, &mut s.valid), (&sets.test, &mut s.test)] {
            for u in range.clone() {
                let n = ds.users[u].items.len();
                if n < 2 {
                    s.skipped_users += 1;
                } else {
                    out.push(eval_case(ds, u, n - 1));
                }
            }
        }
        s
    }

    /// The evaluation cases of `part` (empty for [`Part::Train`]).
    pub fn cases(&self, part: Part) -> &[EvalCase] {
        match part {
            Part::Train => &[],
            Part::Valid => &self.valid,
            Part::Test => &self.test,
        }
    }
}

fn eval_case(ds: &Dataset, user: usize, input_len: usize) -> EvalCase {
    let target = ds.users[user].items[input_len];
    EvalCase {
        user,
        input_len,
        target,
        domain: ds
            .domain_of(target)
            .expect("loaders guarantee every item id is inside the id space"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(seqs: &[&[ItemId]]) -> Dataset {
        Dataset::from_sequences("t", [3, 3], seqs.iter().map(|s| s.to_vec()))
    }

    #[test]
    fn leave_one_out_parts() {
        let d = ds(&[&[1, 4, 2, 5], &[1, 2], &[6, 3, 4]]);
        let s = Split::leave_one_out(&d);
        assert_eq!(s.skipped_users, 1);
        assert_eq!(
            s.train,
            vec![TrainSeq { user: 0, len: 2 }, TrainSeq { user: 2, len: 1 }]
        );
        assert_eq!(
            s.valid[0],
            EvalCase {
                user: 0,
                input_len: 2,
                target: 2,
                domain: Domain::A
            }
        );
        assert_eq!(
            s.test[0],
            EvalCase {
                user: 0,
                input_len: 3,
                target: 5,
                domain: Domain::B
            }
        );
        assert_eq!(
            s.test[1],
            EvalCase {
                user: 2,
                input_len: 2,
                target: 4,
                domain: Domain::B
            }
        );
    }

    #[test]
    fn file_sets() {
        let d = ds(&[&[1, 4, 2], &[1], &[6, 3, 4], &[2, 5]]);
        let sets = FileSets {
            train: 0..2,
            valid: 2..3,
            test: 3..4,
        };
        let s = Split::by_file_sets(&d, &sets);
        assert_eq!(s.train, vec![TrainSeq { user: 0, len: 3 }]);
        assert_eq!(s.skipped_users, 1);
        assert_eq!(
            s.valid,
            vec![EvalCase {
                user: 2,
                input_len: 2,
                target: 4,
                domain: Domain::B
            }]
        );
        assert_eq!(
            s.test,
            vec![EvalCase {
                user: 3,
                input_len: 1,
                target: 5,
                domain: Domain::B
            }]
        );
    }
}
