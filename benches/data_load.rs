//! Loading food-kitchen and building every evaluation candidate set (valid + test, 999
//! negatives): the issue asks for well under a second. Run: `cargo bench --bench data_load`.

use std::hint::black_box;

use cdsr_lab::data::{self, abxi, EvalLayout, LayoutConfig, Part, Split, TrainLayout};
use cdsr_lab::eval::Candidates;
use criterion::{criterion_group, criterion_main, Criterion};

fn food_kitchen_dir() -> std::path::PathBuf {
    data::shared_data_dir()
        .expect("../shared/data not found")
        .join("food-kitchen")
}

fn bench(c: &mut Criterion) {
    let dir = food_kitchen_dir();
    let mut g = c.benchmark_group("food-kitchen");
    g.sample_size(20);
    g.bench_function("load", |b| b.iter(|| black_box(abxi::load(&dir).unwrap())));
    let ds = abxi::load(&dir).unwrap();
    let split = Split::leave_one_out(&ds);
    g.bench_function("candidates valid+test 999", |b| {
        b.iter(|| {
            let v = Candidates::sample(&ds, &split.valid, Part::Valid, 999, 1).unwrap();
            let t = Candidates::sample(&ds, &split.test, Part::Test, 999, 1).unwrap();
            black_box((v, t))
        })
    });
    g.bench_function("layouts train+valid+test", |b| {
        b.iter(|| {
            let t = TrainLayout::build(&ds, &split, LayoutConfig::default());
            let v = EvalLayout::build(&ds, &split, Part::Valid, 50);
            let te = EvalLayout::build(&ds, &split, Part::Test, 50);
            black_box((t, v, te))
        })
    });
    g.bench_function("load + split + candidates (total)", |b| {
        b.iter(|| {
            let ds = abxi::load(&dir).unwrap();
            let split = Split::leave_one_out(&ds);
            let v = Candidates::sample(&ds, &split.valid, Part::Valid, 999, 1).unwrap();
            let t = Candidates::sample(&ds, &split.test, Part::Test, 999, 1).unwrap();
            black_box((v, t))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
