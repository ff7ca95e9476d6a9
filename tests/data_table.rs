//! The generic interactions table: food-kitchen-mini written as CSV and Parquet (rows
//! interleaved across users, each user's order kept) loads back to the very same dataset.

use cdsr_lab::data::table::{self, TableConfig};
use cdsr_lab::data::{self, abxi, Domain};
use polars::prelude::*;

fn mini() -> data::Dataset {
    abxi::load(&data::repo_data_dir().join("food-kitchen-mini")).unwrap()
}

/// Rows round-robin over users: user 0's 1st, user 1's 1st, ..., user 0's 2nd, ...
fn table_of(ds: &data::Dataset) -> DataFrame {
    let (mut u, mut i, mut d, mut t) = (vec![], vec![], vec![], vec![]);
    let longest = ds.users.iter().map(|s| s.items.len()).max().unwrap();
    for k in 0..longest {
        for s in &ds.users {
            if let Some(&item) = s.items.get(k) {
                u.push(s.user as i64);
                i.push(item as i64);
                d.push(match ds.domain_of(item).unwrap() {
                    Domain::A => "food",
                    Domain::B => "kitchen",
                });
                t.push(s.timestamps[k]);
            }
        }
    }
    df!("user" => u, "item" => i, "domain" => d, "timestamp" => t).unwrap()
}

fn assert_same(a: &data::Dataset, b: &data::Dataset) {
    assert_eq!(a.n_items, b.n_items);
    assert_eq!(a.users.len(), b.users.len());
    for (x, y) in a.users.iter().zip(&b.users) {
        assert_eq!(x.items, y.items);
        assert_eq!(x.timestamps, y.timestamps);
    }
}

#[test]
fn csv_and_parquet_round_trip() {
    let ds = mini();
    // only items that occur get ids in a table; in the mini slice every item occurs
    let mut df = table_of(&ds);
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("mini.csv");
    CsvWriter::new(std::fs::File::create(&csv).unwrap())
        .finish(&mut df)
        .unwrap();
    let pq = tmp.path().join("mini.parquet");
    ParquetWriter::new(std::fs::File::create(&pq).unwrap())
        .finish(&mut df)
        .unwrap();

    let cfg = TableConfig {
        domains: Some(["food".into(), "kitchen".into()]),
        ..Default::default()
    };
    let t = table::load(&csv, &cfg).unwrap();
    assert_same(&t.dataset, &ds);
    assert_eq!(t.dataset.domain_names, ["food", "kitchen"]);
    assert_eq!(t.item_keys[1], "1");
    assert_eq!(t.user_keys[299], "299");
    assert_eq!(t.dropped_rows, 0);
    // without a pair: the two values sorted, same result
    let auto = table::load(&pq, &TableConfig::default()).unwrap();
    assert_same(&auto.dataset, &ds);
    // format detection
    let loaded = data::load(&pq).unwrap();
    assert_eq!(loaded.format, data::Format::Table);
    assert_same(&loaded.dataset, &ds);
}

#[test]
fn pair_selects_and_orders_domains() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("t.csv");
    std::fs::write(
        &csv,
        "user,item,domain,timestamp\n\
         u2,x,books,5\nu1,x,books,3\nu1,y,movies,3\nu1,z,music,1\nu1,w,movies,2\nu2,y,movies,4\n",
    )
    .unwrap();
    // B = books, A = movies; music dropped
    let cfg = TableConfig {
        domains: Some(["movies".into(), "books".into()]),
        ..Default::default()
    };
    let t = table::load(&csv, &cfg).unwrap();
    assert_eq!(t.dropped_rows, 1);
    assert_eq!(t.dataset.n_items, [2, 1]); // movies {w, y}, books {x}
    assert_eq!(t.item_keys, ["", "w", "y", "x"]);
    assert_eq!(t.user_keys, ["u1", "u2"]);
    // u1: w@2, then x@3 and y@3 in table order
    assert_eq!(t.dataset.users[0].items, [1, 3, 2]);
    assert_eq!(t.dataset.users[0].timestamps, [2, 3, 3]);
    assert_eq!(t.dataset.users[1].items, [2, 3]);
}
