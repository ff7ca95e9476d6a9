//! Per-step cost of AutoCDSR's Pareto weighting: the Gram matrix of the two gradients over
//! the shared parameters (the only parameter-sized work), the min-norm solve, and a_cd on an
//! attention map of food-kitchen's shape. `scripts/python/autocdsr_pareto_bench.py` times the
//! numpy equivalents for the side-by-side ratio.
//!
//! cargo bench --bench autocdsr_pareto

use cdsr_lab::model::attention_share::{attention_share, ShareConfig};
use cdsr_lab::train::pareto::{GradGram, MinNormSolver, ParetoMtl};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array2, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shared (non-embedding) parameters of the default SASRec-style model: about 0.7M; the
/// public code's T5 encoders are of the same order.
const N_PARAMS: usize = 700_000;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let ga: Vec<f32> = (0..N_PARAMS).map(|_| rng.random::<f32>() - 0.5).collect();
    let gr: Vec<f32> = (0..N_PARAMS).map(|_| rng.random::<f32>() - 0.5).collect();
    c.bench_function("grad_gram_700k", |b| {
        b.iter(|| GradGram::from_grads(std::hint::black_box(&ga), std::hint::black_box(&gr)))
    });
    let gram = GradGram::from_grads(&ga, &gr);
    let pareto = ParetoMtl::default();
    c.bench_function("pareto_weights_public_defaults", |b| {
        b.iter(|| {
            pareto
                .weights(std::hint::black_box(gram), [0.3, 6.2])
                .unwrap()
        })
    });
    // 5 vectors, FW running to its cap (vertex weight 0.999 drifts at the optimum)
    let vecs: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..64).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let refs: Vec<&[f32]> = vecs.iter().map(|v| v.as_slice()).collect();
    let solver = MinNormSolver::default();
    c.bench_function("min_norm_5x64", |b| {
        b.iter(|| solver.solve(std::hint::black_box(&refs)).unwrap())
    });

    // a_cd of one layer: batch 256, 2 heads, length 50, random row-stochastic maps
    let (bsz, heads, len) = (256, 2, 50);
    let mut p = Array4::<f32>::zeros((bsz, heads, len, len));
    for mut row in p.rows_mut() {
        let s: Vec<f32> = (0..len).map(|_| rng.random::<f32>()).collect();
        let tot: f32 = s.iter().sum();
        for (x, v) in row.iter_mut().zip(s) {
            *x = v / tot;
        }
    }
    let labels = Array2::from_shape_fn((bsz, len), |(b, i)| ((b + i * 7) % 3 == 0) as i64);
    let valid = Array2::from_shape_fn((bsz, len), |(b, i)| i >= b % 30);
    let cfg = ShareConfig::two_domains();
    c.bench_function("a_cd_256x2x50x50", |b| {
        b.iter(|| attention_share(p.view(), labels.view(), valid.view(), &cfg).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
