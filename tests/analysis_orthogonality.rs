//! `analysis::orthogonality`: closed-form cases (orthogonal, parallel, anti-parallel, zero
//! rows), random high-dimensional vectors against the exact expectation, and real
//! Food-Kitchen cross-attention tensors against a direct f64 computation.
#[path = "fixtures/food_kitchen_runs.rs"]
mod fk;

use cdsr_lab::analysis::orthogonality::*;
use cdsr_lab::data::Domain;
use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
}

#[test]
fn exactly_orthogonal_rows_give_zero_and_all_orthogonal_energy() {
    let (b, l, d) = (3, 4, 8);
    let mut x = Array3::<f32>::zeros((b, l, d));
    let mut xp = Array3::<f32>::zeros((b, l, d));
    for bi in 0..b {
        for i in 0..l {
            x[[bi, i, i]] = 1.0 + bi as f32;
            xp[[bi, i, (i + 1) % d]] = -2.5;
            xp[[bi, i, 7]] = 0.5;
        }
    }
    let s = abs_cos(x.view(), xp.view(), None, CosOptions::default()).unwrap();
    assert_eq!(s.mean_abs_cos, 0.0);
    assert_eq!(s.n, 12);
    assert_eq!(s.parallel_share(), 0.0);
    assert_eq!(s.orthogonal_share(), 1.0);
    assert_eq!(s.quantile(0.5), 0.0005); // middle of the first of 1000 bins
}

#[test]
fn parallel_and_anti_parallel_rows_give_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (b, l, d) = (4, 5, 33); // d not a multiple of 8: exercises the remainder loop
    let x = Array3::<f32>::from_shape_fn((b, l, d), |_| rng.random_range(-1.0..1.0));
    let mut xp = x.clone();
    for (k, mut row) in xp.rows_mut().into_iter().enumerate() {
        let c = if k % 2 == 0 { 3.0 } else { -0.25 };
        row.mapv_inplace(|v| v * c);
    }
    let s = abs_cos(x.view(), xp.view(), None, CosOptions::default()).unwrap();
    close(s.mean_abs_cos, 1.0, 1e-6);
    close(s.parallel_share(), 1.0, 1e-6);
    close(s.orthogonal_share(), 0.0, 1e-6);
    // Per-row split reproduces the definition.
    let (par, orth) = split_parallel_orthogonal(&[1.0, 1.0], &[2.0, 0.0]);
    assert_eq!(par, vec![1.0, 1.0]);
    assert_eq!(orth, vec![1.0, -1.0]);
}

#[test]
fn random_high_dimensional_rows_match_the_exact_expectation() {
    // For independent isotropic rows in R^d, E|cos| = Γ(d/2) / (√π Γ((d+1)/2)) ≈ sqrt(2/(π d)).
    let d = 256;
    let n = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut normal = || {
        // Box-Muller: one standard normal from two uniforms.
        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    };
    let x = Array2::<f32>::from_shape_fn((n, d), |_| normal());
    let y = Array2::<f32>::from_shape_fn((n, d), |_| normal());
    let s = abs_cos_rows(x.view(), y.view(), CosOptions::default()).unwrap();
    use statrs::function::gamma::ln_gamma;
    let exact = (ln_gamma(d as f64 / 2.0) - ln_gamma((d as f64 + 1.0) / 2.0)).exp()
        / std::f64::consts::PI.sqrt();
    close(
        exact,
        (2.0 / (std::f64::consts::PI * d as f64)).sqrt(),
        2e-4,
    );
    // Standard error of the mean: sqrt((1/d - exact²) / n) ≈ 1.9e-4; allow 4 se.
    let se = ((1.0 / d as f64 - exact * exact) / n as f64).sqrt();
    close(s.mean_abs_cos, exact, 4.0 * se);
    // Energy: a random row's squared cosine averages 1/d.
    close(s.parallel_share(), 1.0 / d as f64, 3e-4);
    // The median of |cos| for large d is about 0.674 / sqrt(d).
    close(s.quantile(0.5), 0.6745 / (d as f64).sqrt(), 0.003);
}

#[test]
fn zero_norm_rows_are_defined_and_masks_are_respected() {
    let x = ndarray::array![[[1.0f32, 0.0], [0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]];
    let xp = ndarray::array![[[1.0f32, 0.0], [1.0, 0.0], [0.0, 0.0], [9.0, -1.0]]];
    let mask = ndarray::array![[1u8, 1, 1, 0]];
    let s = abs_cos(
        x.view(),
        xp.view(),
        Some(mask.view()),
        CosOptions::default(),
    )
    .unwrap();
    assert_eq!((s.n, s.n_zero_norm), (3, 2));
    close(s.mean_abs_cos, 1.0 / 3.0, 1e-12);
    assert!(!s.mean_abs_cos.is_nan());
    assert_eq!(s.per_position[3].n, 0);
    assert_eq!(s.per_position[3].mean_abs_cos, 0.0);
    // X' energy: 1 + 1 + 0; parallel part: 1 (row 0) + 0 (row 1: X is zero).
    close(s.parallel_share(), 0.5, 1e-12);
    let ex = abs_cos(
        x.view(),
        xp.view(),
        Some(mask.view()),
        CosOptions {
            zero_rows: ZeroRows::Exclude,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((ex.n, ex.n_zero_norm), (1, 2));
    close(ex.mean_abs_cos, 1.0, 1e-12);
    // All rows masked: zeros, not NaN.
    let none = abs_cos(
        x.view(),
        xp.view(),
        Some(ndarray::Array2::zeros((1, 4)).view()),
        CosOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (
            none.n,
            none.mean_abs_cos,
            none.quantile(0.5),
            none.parallel_share()
        ),
        (0, 0.0, 0.0, 0.0)
    );
}

#[test]
fn shape_mismatches_are_errors() {
    let a = Array3::<f32>::zeros((2, 3, 4));
    let b = Array3::<f32>::zeros((2, 3, 5));
    assert!(abs_cos(a.view(), b.view(), None, CosOptions::default()).is_err());
    let m = Array2::<u8>::zeros((2, 4));
    assert!(abs_cos(a.view(), a.view(), Some(m.view()), CosOptions::default()).is_err());
    let y = Array3::<f32>::zeros((3, 3, 4));
    assert!(abs_cos_xy(a.view(), y.view(), None, CosXY::Auto, CosOptions::default()).is_err());
}

/// Direct f64 reference: mean over valid rows of |cos|, zero rows counted as 0.
fn reference(x: &[f32], xp: &[f32], mask: &[u8], d: usize) -> (f64, f64) {
    let (mut sum, mut n, mut e, mut ep) = (0.0, 0.0, 0.0, 0.0);
    for (r, &m) in mask.iter().enumerate() {
        if m == 0 {
            continue;
        }
        let a: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = xp[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
        let dot: f64 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
        let na: f64 = a.iter().map(|p| p * p).sum::<f64>();
        let nb: f64 = b.iter().map(|p| p * p).sum::<f64>();
        sum += if na > 0.0 && nb > 0.0 {
            dot.abs() / (na.sqrt() * nb.sqrt())
        } else {
            0.0
        };
        n += 1.0;
        e += nb;
        if na > 0.0 {
            ep += dot * dot / na;
        }
    }
    (sum / n, ep / e)
}

#[test]
fn real_cross_attention_tensors_match_a_direct_computation() {
    let seqs = fk::sequences();
    let emb = fk::embeddings(&seqs, 24);
    for dom in Domain::BOTH {
        let t = fk::gca_tensors(&seqs, &emb, dom, 6, 8, 0.3);
        let x = ndarray::ArrayView3::from_shape((t.batch, t.len, t.d), &t.x).unwrap();
        let xp = ndarray::ArrayView3::from_shape((t.batch, t.len, t.d), &t.x_prime).unwrap();
        let m = ndarray::ArrayView2::from_shape((t.batch, t.len), &t.mask).unwrap();
        let s = abs_cos(x, xp, Some(m), CosOptions::default()).unwrap();
        let (mean, par) = reference(&t.x, &t.x_prime, &t.mask, t.d);
        close(s.mean_abs_cos, mean, 1e-6);
        close(s.parallel_share(), par, 1e-6);
        assert_eq!(s.n, t.mask.iter().filter(|&&v| v == 1).count() as u64);
        // A real, non-trivial value (items co-occurring with no anchor have zero rows).
        assert!(
            s.mean_abs_cos > 0.0 && s.mean_abs_cos < 1.0,
            "{}",
            s.mean_abs_cos
        );

        // |cos(X, Y)| with len_kv != len: against the mean of the non-zero Y rows.
        let y = ndarray::ArrayView3::from_shape((t.batch, t.len_kv, t.d), &t.y).unwrap();
        let sxy = abs_cos_xy(x, y, Some(m), CosXY::Auto, CosOptions::default()).unwrap();
        let mut ybar = vec![0f32; t.batch * t.len * t.d];
        for b in 0..t.batch {
            let rows: Vec<&[f32]> = (0..t.len_kv)
                .map(|j| &t.y[(b * t.len_kv + j) * t.d..][..t.d])
                .filter(|r| r.iter().any(|&v| v != 0.0))
                .collect();
            for i in 0..t.len {
                for k in 0..t.d {
                    let v = if rows.is_empty() {
                        0.0
                    } else {
                        rows.iter().map(|r| r[k] as f64).sum::<f64>() / rows.len() as f64
                    };
                    ybar[(b * t.len + i) * t.d + k] = v as f32;
                }
            }
        }
        close(
            sxy.mean_abs_cos,
            reference(&t.x, &ybar, &t.mask, t.d).0,
            1e-6,
        );
    }
}

#[test]
fn principal_angles_of_known_subspaces() {
    // X rows span {e0, e1}; X' rows span {e0, cos θ e1 + sin θ e2}: angles 0 and θ.
    let theta = 0.3f64;
    let n = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut x = Array3::<f32>::zeros((1, n, 4));
    let mut xp = Array3::<f32>::zeros((1, n, 4));
    for i in 0..n {
        let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
        x[[0, i, 0]] = a;
        x[[0, i, 1]] = b;
        let (c, e): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
        xp[[0, i, 0]] = c;
        xp[[0, i, 1]] = e * theta.cos() as f32;
        xp[[0, i, 2]] = e * theta.sin() as f32;
    }
    let angles = principal_angles(x.view(), xp.view(), None, 2).unwrap();
    assert_eq!(angles.len(), 2);
    close(angles[0], 0.0, 1e-3);
    close(angles[1], theta, 1e-5);
    // Orthogonal subspaces: span{e0} vs span{e3}.
    let mut y = Array3::<f32>::zeros((1, 3, 4));
    let mut z = Array3::<f32>::zeros((1, 3, 4));
    for i in 0..3 {
        y[[0, i, 0]] = 1.0 + i as f32;
        z[[0, i, 3]] = -2.0;
    }
    let a = principal_angles(y.view(), z.view(), None, 1).unwrap();
    close(a[0], std::f64::consts::FRAC_PI_2, 1e-9);
    assert!(principal_angles(y.view(), z.view(), None, 5).is_err());
}

#[test]
fn memory_mapped_npy_gives_the_same_result() {
    let seqs = fk::sequences();
    let emb = fk::embeddings(&seqs, 16);
    let t = fk::gca_tensors(&seqs, &emb, Domain::A, 6, 8, 0.3);
    let x = Array2::from_shape_vec((t.batch * t.len, t.d), t.x.clone()).unwrap();
    let xp = Array2::from_shape_vec((t.batch * t.len, t.d), t.x_prime.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    ndarray_npy::write_npy(dir.path().join("x.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.path().join("xp.npy"), &xp).unwrap();
    let mx = map_npy_f32(&dir.path().join("x.npy")).unwrap();
    let mxp = map_npy_f32(&dir.path().join("xp.npy")).unwrap();
    let vx = mx
        .view()
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let vxp = mxp
        .view()
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let mapped = abs_cos_rows(vx, vxp, CosOptions::default()).unwrap();
    let direct = abs_cos_rows(x.view(), xp.view(), CosOptions::default()).unwrap();
    assert_eq!(
        (mapped.n, mapped.n_zero_norm, &mapped.histogram),
        (direct.n, direct.n_zero_norm, &direct.histogram)
    );
    close(mapped.mean_abs_cos, direct.mean_abs_cos, 1e-12);
    // A non-f32 file is a clear error.
    ndarray_npy::write_npy(dir.path().join("i.npy"), &ndarray::array![1i64, 2]).unwrap();
    let err = map_npy_f32(&dir.path().join("i.npy"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("i.npy") && err.contains("f32"), "{err}");
}
