//! KuaiRand-1K: the TFRecord reader and the decoded TSV give identical datasets, and the
//! counts match an independent pass over the TSV (python, see the data README).

use cdsr_lab::data::{self, kuairand, DatasetStats, Format, KuaiRandConfig, Split, SplitKind};

#[test]
fn tfrecord_and_tsv_agree_on_the_mini_partitions() {
    let dir = data::repo_data_dir().join("kuairand-1k-mini");
    let cfg = KuaiRandConfig::default();
    let a = kuairand::load_tfrecord(&dir, cfg).unwrap();
    let b = kuairand::load_tsv(&dir.join("decoded_tsv"), cfg).unwrap();
    assert_eq!(a.dataset.users, b.dataset.users);
    assert_eq!(a.dataset.n_items, b.dataset.n_items);
    assert_eq!(a.original_ids, b.original_ids);
    assert_eq!(a.file_sets, b.file_sets);
    // 2 training partitions, 1 evaluation, 1 testing, 10 rows each; none under 10 tokens
    assert_eq!(a.file_sets.train, 0..20);
    assert_eq!(a.file_sets.valid, 20..30);
    assert_eq!(a.file_sets.test, 30..40);
    assert_eq!(a.dropped_rows, [0, 0, 0]);
    // the dense-id invariant and the original ids
    let ds = &a.dataset;
    for u in &ds.users {
        assert!(u.items.len() >= 10 && u.items.len() <= 800);
        assert!(u.timestamps.windows(2).all(|w| w[0] < w[1]));
        for &i in &u.items {
            assert!(ds.domain_of(i).is_some());
        }
    }
    assert!(a.original_ids[1..=ds.n_items[0]]
        .windows(2)
        .all(|w| w[0] < w[1]));
    // the split by file set
    let s = Split::by_file_sets(ds, &a.file_sets);
    assert_eq!(s.kind, SplitKind::FileSets);
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (20, 10, 10));
    assert_eq!(s.valid[0].input_len, ds.users[20].items.len() - 1);
}

#[test]
fn the_mini_rows_match_the_raw_tsv() {
    // first evaluation row, partition_0 row 0, from the decoded TSV by hand:
    // items start 433656 393959 5979 ...; keep domains 9/4 only
    let dir = data::repo_data_dir().join("kuairand-1k-mini");
    let raw = kuairand::read_tsv(&dir.join("decoded_tsv/evaluation.tsv.gz")).unwrap();
    assert_eq!(raw.len(), 10);
    assert_eq!((raw[0].partition, raw[0].row), (0, 0));
    assert_eq!(raw[0].items[..3], [433656, 393959, 5979]);
    assert_eq!(raw[0].items.len(), 800);
    let rec =
        kuairand::read_tfrecord_file(&dir.join("evaluation/partition_0.tfrecord.gz")).unwrap();
    assert_eq!(rec, raw);
    let k = kuairand::load_tsv(&dir, KuaiRandConfig::default()).unwrap();
    let u = &k.dataset.users[20];
    let expect: Vec<i64> = raw[0]
        .items
        .iter()
        .zip(&raw[0].domains)
        .filter(|(&i, &d)| i >= 0 && (d == 9 || d == 4))
        .map(|(&i, _)| i)
        .collect();
    let got: Vec<i64> = u
        .items
        .iter()
        .map(|&i| k.original_ids[i as usize])
        .collect();
    assert_eq!(got, expect);
}

/// The whole shared KuaiRand-1K in TFRecord form: 3,101 / 1,000 / 1,000 rows; in training,
/// domain 9 holds 1,536,800 non-OOV tokens and domain 4 254,432 (counted independently with
/// python over decoded_tsv/training.tsv.gz).
#[test]
fn full_kuairand_counts() {
    let root = data::shared_data_dir()
        .expect("../shared/data not found")
        .join("kuairand-1k");
    let loaded = data::load(&root).unwrap();
    assert_eq!(loaded.format, Format::KuaiRandTfRecord);
    let sets = loaded.file_sets.clone().unwrap();
    assert_eq!(
        (sets.train.len(), sets.valid.len(), sets.test.len()),
        (3101, 1000, 1000)
    );
    let train = data::Dataset {
        users: loaded.dataset.users[sets.train.clone()].to_vec(),
        ..loaded.dataset.clone()
    };
    let st = DatasetStats::of(&train);
    assert_eq!(st.interactions, [1_536_800, 254_432]);
    assert_eq!(st.length_min, 42);
    assert_eq!(st.length_max, 798);
}

#[test]
fn loaded_datasets_satisfy_the_invariant() {
    let dir = data::repo_data_dir();
    for p in [
        "food-kitchen-mini",
        "kuairand-1k-mini",
        "kuairand-1k-mini/decoded_tsv",
    ] {
        let l = data::load(&dir.join(p)).unwrap();
        l.dataset.validate().unwrap();
    }
    let mut bad = data::load(&dir.join("food-kitchen-mini")).unwrap().dataset;
    bad.users[3].items[2] = 0;
    assert_eq!(
        bad.validate().unwrap_err(),
        "user 3, position 2: item 0 outside 1..=5043"
    );
}
