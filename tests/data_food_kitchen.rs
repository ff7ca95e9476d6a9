//! food-kitchen (ABXI's Amazon Food/Kitchen files): the loader reproduces the data README's
//! numbers, and the split and layouts match ABXI's on real rows.

use cdsr_lab::data::{
    self, abxi, DatasetStats, EvalLayout, LayoutConfig, Part, Split, TrainLayout,
};

mod common;

fn food_kitchen() -> data::Dataset {
    let dir = data::shared_data_dir()
        .expect("../shared/data not found (set CDSR_SHARED_DATA)")
        .join("food-kitchen");
    abxi::load(&dir).unwrap()
}

#[test]
fn stats_equal_the_data_readme() {
    let ds = food_kitchen();
    let s = DatasetStats::of(&ds);
    assert_eq!(s.users, 7144);
    assert_eq!(s.users_in_both, 7144);
    assert_eq!(s.items, [11837, 16258]);
    assert_eq!(s.interactions, [83663, 89885]);
    assert_eq!(s.total_interactions(), 173548);
    assert_eq!(s.length_min, 10);
    assert_eq!(s.length_median, 20.0);
    assert_eq!(format!("{:.1}", s.length_mean), "24.3");
    assert_eq!(s.length_max, 50);
    let text = s.render();
    for needle in [
        "users         7,144",
        "A (Food) 11,837 / B (Kitchen) 16,258",
        "interactions  173,548 (A 83,663 / B 89,885)",
        "min 10 / median 20 / mean 24.3 / max 50",
    ] {
        assert!(text.contains(needle), "`{needle}` not in\n{text}");
    }
    // the generic loader detects the format
    let loaded = data::load(&data::shared_data_dir().unwrap().join("food-kitchen")).unwrap();
    assert_eq!(loaded.format, data::Format::Abxi);
    assert!(loaded.file_sets.is_none());
}

#[test]
fn first_user_split_and_layout_by_hand() {
    // Line 1: 0 821 1860 2986 3735 3738 3741 12016 772 1912 19359 25299 6916 24380 24403
    let ds = food_kitchen();
    assert_eq!(ds.users[0].items.len(), 14);
    assert_eq!(ds.users[0].timestamps[..3], [1381536000; 3]);
    let s = Split::leave_one_out(&ds);
    assert_eq!(
        (s.train.len(), s.valid.len(), s.test.len()),
        (7144, 7144, 7144)
    );
    let train_tokens: usize = s.train.iter().map(|t| t.len).sum();
    assert_eq!(train_tokens, 173548 - 2 * 7144);
    assert_eq!((s.valid[0].target, s.valid[0].input_len), (24380, 12));
    assert_eq!((s.test[0].target, s.test[0].input_len), (24403, 13));

    let t = TrainLayout::build(&ds, &s, LayoutConfig::default());
    assert_eq!(t.len(), 7144);
    let row = |v: &Vec<u32>| v[39..50].to_vec();
    assert!(t.x[..39].iter().all(|&v| v == 0));
    assert_eq!(
        row(&t.x),
        [821, 1860, 2986, 3735, 3738, 3741, 12016, 772, 1912, 19359, 25299]
    );
    assert_eq!(
        row(&t.target),
        [1860, 2986, 3735, 3738, 3741, 12016, 772, 1912, 19359, 25299, 6916]
    );
    assert_eq!(
        row(&t.a),
        [821, 1860, 2986, 3735, 3738, 0, 3741, 772, 0, 0, 1912]
    );
    assert_eq!(row(&t.b), [0, 0, 0, 0, 0, 0, 0, 0, 12016, 19359, 0]);
    assert_eq!(t.target_domain[39..50], [1, 1, 1, 1, 1, 2, 1, 1, 2, 2, 1]);

    let v = EvalLayout::build(&ds, &s, Part::Valid, 50);
    assert_eq!(
        v.a[50 - 9..50],
        [821, 1860, 2986, 3735, 3738, 3741, 772, 1912, 6916]
    );
    assert_eq!(v.b[50 - 3..50], [12016, 19359, 25299]);
    let te = EvalLayout::build(&ds, &s, Part::Test, 50);
    assert_eq!(te.b[50 - 4..50], [12016, 19359, 25299, 24380]);
    assert_eq!(te.target[0], 24403);
}

/// The training and evaluation layouts equal an independent numpy implementation of ABXI's
/// preprocessing (`scripts/python/abxi_layout_fixture.py`) on the first 100 users of
/// food-kitchen-mini.
#[test]
fn layouts_match_the_numpy_fixture() {
    use ndarray::Array2;
    use ndarray_npy::NpzReader;
    let ds = abxi::load(&data::repo_data_dir().join("food-kitchen-mini")).unwrap();
    let f =
        std::fs::File::open(data::repo_data_dir().join("fixtures/abxi_layout_mini.npz")).unwrap();
    let mut npz = NpzReader::new(f).unwrap();
    let mut get = |name: &str| -> Vec<u32> {
        let a: Array2<i32> = npz.by_name(name).unwrap();
        a.iter().map(|&v| v as u32).collect()
    };
    let s = Split::leave_one_out(&ds);
    let n = 100;
    let t = TrainLayout::build(&ds, &s, LayoutConfig::default());
    let l = 50;
    assert_eq!(t.x[..n * l], get("train_x.npy")[..]);
    assert_eq!(t.a[..n * l], get("train_a.npy")[..]);
    assert_eq!(t.b[..n * l], get("train_b.npy")[..]);
    assert_eq!(t.target[..n * l], get("train_gt.npy")[..]);
    assert_eq!(t.pos_a[..n * l], get("train_pos_a.npy")[..]);
    for (part, p) in [(Part::Valid, "valid"), (Part::Test, "test")] {
        let e = EvalLayout::build(&ds, &s, part, l);
        assert_eq!(e.x[..n * l], get(&format!("{p}_x.npy"))[..]);
        assert_eq!(e.a[..n * l], get(&format!("{p}_a.npy"))[..]);
        assert_eq!(e.b[..n * l], get(&format!("{p}_b.npy"))[..]);
        assert_eq!(e.target[..n], get(&format!("{p}_gt.npy"))[..]);
    }
}

/// `cdsr-lab data stats` prints the data README's numbers; a bad path is a clear error.
#[test]
fn cli_data_stats() {
    let dir = data::shared_data_dir().unwrap().join("food-kitchen");
    let text = common::stdout_of(common::cdsr_lab().args(["data", "stats"]).arg(&dir));
    assert_eq!(
        text,
        "format        abxi\n\
         dataset       food-kitchen\n\
         users         7,144 (7,144 in both domains)\n\
         items         A (Food) 11,837 / B (Kitchen) 16,258 / total 28,095\n\
         interactions  173,548 (A 83,663 / B 89,885)\n\
         length        min 10 / median 20 / mean 24.3 / max 50\n"
    );
    let bad = common::cdsr_lab()
        .args(["data", "stats", "/no/such/dir"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/no/such/dir"));
}
