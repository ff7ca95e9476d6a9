//! Gated cross-attention: masks (no future leak, all-masked rows are zeros not NaN) and a
//! gradient check against central finite differences in f64.

use cdsr_lab::model::gca::{GcaConfig, GcaModule};
use cdsr_lab::model::nn::{AttnMask, DType, Device, ParamStore, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 8;

fn module(cfg: &GcaConfig, seed: u64) -> (ParamStore, GcaModule) {
    let mut store = ParamStore::new(DType::F64, ChaCha8Rng::seed_from_u64(seed));
    let m = GcaModule::new(&mut store.scope("gca.0", "gca.0.A"), D, cfg).unwrap();
    // The default init (std 0.02) makes the gate almost constant; widen the weights so the
    // check exercises every path.
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for p in store.params() {
        let n = p.var.elem_count();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
        p.var
            .set(&Tensor::from_vec(v, p.var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
    (store, m)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn to_vec3(t: &Tensor) -> Vec<Vec<Vec<f64>>> {
    t.to_vec3::<f64>().unwrap()
}

#[test]
fn perturbing_future_keys_leaves_earlier_outputs_unchanged() {
    for layer_norm in [true, false] {
        let cfg = GcaConfig {
            positions: vec![0],
            layer_norm,
            heads: 4,
            ..Default::default()
        };
        let (_s, m) = module(&cfg, 3);
        let (b, l) = (2, 6);
        let x = randn(&[b, l, D], 10);
        let y = randn(&[b, l, D], 11);
        let valid = vec![vec![false, true, true, true, true, true], vec![true; l]];
        let mask = AttnMask::new(&valid, l, true, DType::F64).unwrap();
        let base = to_vec3(&m.forward(&x, &y, &mask).unwrap().out);
        for t in 0..l - 1 {
            // Replace every key/value after position t.
            let noise = randn(&[b, l - t - 1, D], 100 + t as u64);
            let y2 = Tensor::cat(
                &[&y.narrow(1, 0, t + 1).unwrap(), &(noise * 50.0).unwrap()],
                1,
            )
            .unwrap();
            let out = to_vec3(&m.forward(&x, &y2, &mask).unwrap().out);
            for bi in 0..b {
                for i in 0..=t {
                    assert_eq!(
                        out[bi][i], base[bi][i],
                        "position {i} changed when keys after {t} changed"
                    );
                }
            }
            // And the change does reach the later positions (the test can fail).
            assert_ne!(out[1][l - 1], base[1][l - 1]);
        }
    }
}

#[test]
fn rows_without_a_usable_key_give_zero_not_nan() {
    let cfg = GcaConfig {
        positions: vec![0],
        heads: 8,
        ..Default::default()
    };
    let (_s, m) = module(&cfg, 5);
    let (b, l) = (2, 4);
    let x = randn(&[b, l, D], 20);
    let y = randn(&[b, l, D], 21);
    // Sample 0: no valid key at all. Sample 1: keys from position 2 on, so causal rows 0 and 1
    // have none.
    let valid = vec![vec![false; l], vec![false, false, true, true]];
    let mask = AttnMask::new(&valid, l, true, DType::F64).unwrap();
    let o = m.forward(&x, &y, &mask).unwrap();
    let xp = to_vec3(&o.x_prime);
    let out = to_vec3(&o.out);
    for (i, row) in xp[0].iter().enumerate() {
        assert!(
            row.iter().all(|&v| v == 0.0),
            "row {i} of an all-masked sample is not zero"
        );
    }
    assert!(xp[1][0].iter().chain(&xp[1][1]).all(|&v| v == 0.0));
    assert!(xp[1][2].iter().any(|&v| v != 0.0));
    assert!(out.iter().flatten().flatten().all(|v| v.is_finite()));
    // With X' = 0 the module is LN(X): each row has mean 0 (LN weight 1-ish after the
    // widened init is not 1, so check against an explicit recomputation instead).
    let o_no_keys = m.forward(&x, &randn(&[b, l, D], 99), &mask).unwrap();
    assert_eq!(to_vec3(&o_no_keys.out)[0], out[0]);
}

#[test]
fn gradient_matches_finite_differences() {
    for (gate, layer_norm) in [
        (cdsr_lab::model::GateActivation::Sigmoid, true),
        (cdsr_lab::model::GateActivation::Tanh, false),
    ] {
        let cfg = GcaConfig {
            positions: vec![0],
            gate,
            layer_norm,
            heads: 4,
            ..Default::default()
        };
        let (store, m) = module(&cfg, 7);
        let (b, l) = (2, 5);
        let xv = Var::from_tensor(&randn(&[b, l, D], 30)).unwrap();
        let yv = Var::from_tensor(&randn(&[b, l, D], 31)).unwrap();
        let w = randn(&[b, l, D], 32);
        let valid = vec![vec![false, true, true, false, true], vec![true; l]];
        let mask = AttnMask::new(&valid, l, true, DType::F64).unwrap();
        let loss_of = |x: &Tensor, y: &Tensor| -> Tensor {
            (m.forward(x, y, &mask).unwrap().out * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let loss = loss_of(xv.as_tensor(), yv.as_tensor());
        let grads = loss.backward().unwrap();
        let eps = 1e-6;
        // Inputs X and Y.
        for (var, which) in [(&xv, 0), (&yv, 1)] {
            let g = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for k in (0..base.len()).step_by(7) {
                let f = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    let t = Tensor::from_vec(v, (b, l, D), &Device::Cpu).unwrap();
                    let l = if which == 0 {
                        loss_of(&t, yv.as_tensor())
                    } else {
                        loss_of(xv.as_tensor(), &t)
                    };
                    l.to_scalar::<f64>().unwrap()
                };
                let fd = (f(eps) - f(-eps)) / (2.0 * eps);
                assert!(
                    (fd - g[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "input {which} elem {k}: autograd {} vs finite difference {fd}",
                    g[k]
                );
            }
        }
        // Every parameter tensor (a few entries each).
        for p in store.params() {
            let g = grads
                .get(&p.var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = p
                .var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for k in (0..base.len()).step_by(base.len().div_ceil(5).max(1)) {
                let f = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    p.var
                        .set(&Tensor::from_vec(v, p.var.dims(), &Device::Cpu).unwrap())
                        .unwrap();
                    let r = loss_of(xv.as_tensor(), yv.as_tensor())
                        .to_scalar::<f64>()
                        .unwrap();
                    p.var
                        .set(&Tensor::from_vec(base.clone(), p.var.dims(), &Device::Cpu).unwrap())
                        .unwrap();
                    r
                };
                let fd = (f(eps) - f(-eps)) / (2.0 * eps);
                assert!(
                    (fd - g[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{} elem {k}: autograd {} vs finite difference {fd}",
                    p.name,
                    g[k]
                );
            }
        }
    }
}
