//! Real interaction data in one in-memory form, [`Dataset`], whatever file it came from.
//!
//! Owns: the loaders (ABXI text files, KuaiRand-1K TFRecord and TSV, generic CSV/Parquet
//! tables), the leave-one-out split, and the layouts the trainer and evaluator consume.
//!
//! Invariant every loader establishes: item ids are dense, `0` is padding, domain A items are
//! `1..=n_items[A]` and domain B items follow them (`n_items[A]+1 ..= n_items[A]+n_items[B]`).
//! For ABXI's food-kitchen files this is exactly the published id space.
//!
//! ```
//! use cdsr_lab::data::{self, DatasetStats, Domain, Split};
//! // 300 real users of food-kitchen, shipped in the repository's data/ folder
//! let loaded = data::load(&data::repo_data_dir().join("food-kitchen-mini"))?;
//! let ds = &loaded.dataset;
//! assert_eq!(ds.n_items, [2160, 2883]);
//! assert_eq!(ds.domain_of(2161), Some(Domain::B));
//! let stats = DatasetStats::of(ds);
//! assert_eq!((stats.users, stats.interactions), (300, [3376, 3759]));
//! let split = Split::leave_one_out(ds);
//! assert_eq!(split.test.len(), 300);
//! # Ok::<(), cdsr_lab::data::DataError>(())
//! ```

use serde::{Deserialize, Serialize};

/// One of the two domains of a cross-domain dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Domain {
    A,
    B,
}

impl Domain {
    pub const BOTH: [Domain; 2] = [Domain::A, Domain::B];

    /// Index 0 for A, 1 for B: for `[T; 2]` per-domain arrays.
    pub fn index(self) -> usize {
        match self {
            Domain::A => 0,
            Domain::B => 1,
        }
    }

    pub fn other(self) -> Domain {
        match self {
            Domain::A => Domain::B,
            Domain::B => Domain::A,
        }
    }

    /// The name used in files and tables: `"A"` or `"B"`.
    ///
    /// ```
    /// use cdsr_lab::data::Domain;
    /// assert_eq!(Domain::B.as_str(), "B");
    /// assert_eq!("A".parse::<Domain>(), Ok(Domain::A));
    /// assert!("Food".parse::<Domain>().is_err());
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::A => "A",
            Domain::B => "B",
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Domain {
    type Err = String;

    /// Parses `"A"` or `"B"`; the error says what was found.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" => Ok(Domain::A),
            "B" => Ok(Domain::B),
            other => Err(format!("domain `{other}` is not A or B")),
        }
    }
}

/// A dense item id; `0` is padding.
pub type ItemId = u32;

/// One user's chronological interactions across both domains (the merged stream).
#[derive(Debug, Clone, PartialEq)]
pub struct UserSequence {
    pub user: u32,
    pub items: Vec<ItemId>,
    /// Unix seconds (or the source's own ordinal where it has no time, e.g. KuaiRand rows).
    pub timestamps: Vec<i64>,
}

/// A cross-domain dataset: users' merged sequences plus the id space.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name, e.g. `food-kitchen`.
    pub name: String,
    /// Human names of the two domains, e.g. `["Food", "Kitchen"]`.
    pub domain_names: [String; 2],
    /// Number of items in A and in B.
    pub n_items: [usize; 2],
    pub users: Vec<UserSequence>,
}

impl Dataset {
    /// The domain an item belongs to; `None` for padding or ids outside the space.
    pub fn domain_of(&self, item: ItemId) -> Option<Domain> {
        let i = item as usize;
        if i == 0 {
            None
        } else if i <= self.n_items[0] {
            Some(Domain::A)
        } else if i <= self.n_items[0] + self.n_items[1] {
            Some(Domain::B)
        } else {
            None
        }
    }

    /// BERT4Rec's mask token of domain `d` ([`cloze`]): ids `vocab_size()` (A) and
    /// `vocab_size() + 1` (B), just past the item space, so the item embedding table of a
    /// masked model has `vocab_size() + 2` rows. The mask carries the domain of the item it
    /// hides (AutoCDSR's data keeps every token's domain), so a masked sequence still has a
    /// domain label at every position.
    pub fn mask_token(&self, d: Domain) -> ItemId {
        (self.vocab_size() + d.index()) as ItemId
    }

    /// The domain of an input token: an item's domain ([`Dataset::domain_of`]) or a mask
    /// token's ([`Dataset::mask_token`]); `None` for padding and ids outside both.
    pub fn domain_of_token(&self, token: ItemId) -> Option<Domain> {
        let v = self.vocab_size() as ItemId;
        match token {
            t if t == v => Some(Domain::A),
            t if t == v + 1 => Some(Domain::B),
            t => self.domain_of(t),
        }
    }

    /// The inclusive range of item ids in a domain.
    pub fn item_range(&self, d: Domain) -> std::ops::RangeInclusive<ItemId> {
        match d {
            Domain::A => 1..=self.n_items[0] as ItemId,
            Domain::B => {
                (self.n_items[0] + 1) as ItemId..=(self.n_items[0] + self.n_items[1]) as ItemId
            }
        }
    }

    /// Total item count plus one (for padding): the embedding table size.
    pub fn vocab_size(&self) -> usize {
        self.n_items[0] + self.n_items[1] + 1
    }

    /// A dataset built by hand from merged sequences (tests, notebooks, examples): domains named
    /// `A` and `B`, user `u` is the `u`-th sequence, timestamps are the positions `0, 1, ...`.
    ///
    /// ```
    /// use cdsr_lab::data::{Dataset, Domain};
    /// let ds = Dataset::from_sequences("toy", [3, 2], [vec![1, 4, 2], vec![5, 3]]);
    /// assert_eq!(ds.domain_of(4), Some(Domain::B));
    /// assert_eq!(ds.users[1].timestamps, [0, 1]);
    /// assert!(ds.validate().is_ok());
    /// ```
    pub fn from_sequences(
        name: &str,
        n_items: [usize; 2],
        sequences: impl IntoIterator<Item = Vec<ItemId>>,
    ) -> Dataset {
        Dataset {
            name: name.to_owned(),
            domain_names: ["A".into(), "B".into()],
            n_items,
            users: sequences
                .into_iter()
                .enumerate()
                .map(|(u, items)| UserSequence {
                    user: u as u32,
                    timestamps: (0..items.len() as i64).collect(),
                    items,
                })
                .collect(),
        }
    }

    /// Checks the invariant every loader establishes: items inside `1..=n_A+n_B`, one
    /// timestamp per item, timestamps non-decreasing, no empty sequence. For datasets built
    /// by hand (tests, notebooks); the error names the user and position.
    pub fn validate(&self) -> Result<(), String> {
        let max = (self.n_items[0] + self.n_items[1]) as ItemId;
        for (u, s) in self.users.iter().enumerate() {
            if s.items.is_empty() {
                return Err(format!("user {u}: empty sequence"));
            }
            if s.items.len() != s.timestamps.len() {
                return Err(format!(
                    "user {u}: {} items but {} timestamps",
                    s.items.len(),
                    s.timestamps.len()
                ));
            }
            if let Some(p) = s.items.iter().position(|&i| i == 0 || i > max) {
                return Err(format!(
                    "user {u}, position {p}: item {} outside 1..={max}",
                    s.items[p]
                ));
            }
            if let Some(p) = s.timestamps.windows(2).position(|w| w[1] < w[0]) {
                return Err(format!(
                    "user {u}, position {}: timestamps go backwards",
                    p + 1
                ));
            }
        }
        Ok(())
    }
}

pub mod abxi;
pub mod cloze;
pub mod error;
pub mod kuairand;
pub mod layout;
pub mod negatives;
pub mod source;
pub mod split;
pub mod stats;
pub mod table;
pub mod text;
pub mod tfrecord;

pub use error::{DataError, LineIssue, RecordIssue};
pub use kuairand::KuaiRandConfig;
pub use layout::{EvalBatch, EvalLayout, LayoutConfig, StreamAlignment, TrainBatch, TrainLayout};
pub use negatives::{
    check_train_negatives, sample_train_negatives, NegativeSharing, TooFewNegatives,
};
pub use source::{load, Format, Loaded};
pub use split::{EvalCase, FileSets, Part, Split, SplitKind, TrainSeq};
pub use stats::DatasetStats;

/// The project's shared real-data directory (`../shared/data` seen from the project root):
/// `$CDSR_SHARED_DATA` if set, else the first `shared/data` found walking up from the crate
/// directory, then from the current directory. `None` if there is none.
pub fn shared_data_dir() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CDSR_SHARED_DATA") {
        return Some(p.into());
    }
    let starts = [
        Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        std::env::current_dir().ok(),
    ];
    starts.into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .map(|a| a.join("shared").join("data"))
            .find(|p| p.is_dir())
    })
}

/// The repository's own `data/` folder of small real slices (`food-kitchen-mini`,
/// `kuairand-1k-mini`).
pub fn repo_data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}
