//! Pareto-MTL weighting of AutoCDSR's two objectives, and the min-norm solver behind it.
//!
//! Owns: MGDA's min-norm solver (Sener & Koltun 2018: closed form for two vectors, Frank-Wolfe
//! for more, at most 250 iterations, stop when the L1 change of the weights is below 1e-5),
//! Pareto-MTL preference vectors and active constraints (Lin et al. 2019), and the rule that
//! turns the solved weights into the multiplier on `a_cd` in
//! `loss = L_rec + a_cd * lambda0 / lambda1`. The fixed-weight alternative lives here too, so a
//! trainer asks one [`AcdWeighting`] for the multiplier either way.
//!
//! Objective order follows the public AutoCDSR code (`snap-research/AutoCDSR`,
//! `pareto_optimization_loop_`): objective 0 is the attention share `a_cd`, objective 1 is the
//! recommendation loss `L_rec`; preference vectors are written in that order.
//!
//! Everything here works on the 2x2 Gram matrix of the two gradients over the shared
//! parameters. Every vector the solver sees (the two normalised gradients and the constraint
//! directions `(p_j - p_i)^T [g_0; g_1]`) is a combination of the two gradients, so three dot
//! products over the parameters are all the solver needs; it never allocates a parameter-sized
//! vector.
//!
//! ```
//! use cdsr_lab::train::pareto::{GradGram, ParetoMtl};
//! // the two gradients (a_cd, L_rec) over the shared parameters
//! let g_acd = [0.5f32, 0.0, 0.5];
//! let g_rec = [1.0f32, 2.0, 0.0];
//! let gram = GradGram::from_grads(&g_acd, &g_rec);
//! // current values of (a_cd, L_rec): the loss vector points mostly along L_rec, so the
//! // default preference (the a_cd axis) has active constraints
//! let w = ParetoMtl::default().weights(gram, [0.3, 6.2]).unwrap();
//! assert!(w.fallback.is_none());
//! assert!(w.coefficient.is_finite());
//! // the training loss is then  L_rec + a_cd * w.coefficient
//! ```

use std::f64::consts::FRAC_PI_2;

/// Index of the attention-share objective in loss vectors and preference vectors.
pub const OBJ_ACD: usize = 0;
/// Index of the recommendation-loss objective.
pub const OBJ_REC: usize = 1;

/// Errors for inputs the solver cannot give a meaning to.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParetoError {
    #[error("the min-norm problem needs at least one vector")]
    Empty,
    #[error("Gram matrix must be {n}x{n} ({} entries); got {got} entries", n * n)]
    GramShape { n: usize, got: usize },
    #[error("Gram matrix entry [{i}, {j}] = {value} is not finite")]
    NonFiniteGram { i: usize, j: usize, value: f64 },
    #[error("loss vector ({a_cd}, {l_rec}) is not finite: the training loss diverged")]
    NonFiniteLoss { a_cd: f64, l_rec: f64 },
    #[error("gradient lengths differ: {a} vs {b}")]
    GradLength { a: usize, b: usize },
    #[error("preferred region {preferred} does not exist: there are {n} preference vectors")]
    Preferred { preferred: usize, n: usize },
    #[error("preference vectors: {0}")]
    Preferences(String),
}

/// Minimum-norm element of the convex hull of vectors: `min |sum_i c_i v_i|^2` over the simplex.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MinNormSolver {
    /// Frank-Wolfe iteration cap (MGDA: 250).
    pub max_iter: usize,
    /// Stop when the L1 change of the weights falls below this (MGDA: 1e-5).
    pub tol: f64,
    /// Weight given to the better vertex when the two-vector optimum sits on a vertex. MGDA's
    /// code (and so AutoCDSR's) uses 0.999, never exactly 1, which keeps both weights positive
    /// (and `lambda1 > 0` in the two-vector case) at the price of a solution 0.1% off the exact
    /// optimum; `1.0` gives the exact minimiser ([`MinNormSolver::exact`]).
    pub vertex_gamma: f64,
}

impl Default for MinNormSolver {
    /// MGDA's / AutoCDSR's public settings: 250 iterations, tolerance 1e-5, vertex weight 0.999.
    fn default() -> Self {
        MinNormSolver {
            max_iter: 250,
            tol: 1e-5,
            vertex_gamma: 0.999,
        }
    }
}

/// A solved min-norm problem.
#[derive(Debug, Clone, PartialEq)]
pub struct MinNormSolution {
    /// Convex weights, one per vector (non-negative, summing to 1).
    pub weights: Vec<f64>,
    /// The solver's value of `|sum_i c_i v_i|^2` (as MGDA reports it: for a vertex optimum
    /// this is the vertex's squared norm even when `vertex_gamma < 1`).
    pub cost: f64,
    /// Frank-Wolfe iterations run (0 for one or two vectors).
    pub iterations: usize,
    /// False when the iteration cap was reached before the tolerance.
    pub converged: bool,
}

impl MinNormSolver {
    /// The exact minimiser: like the default but with `vertex_gamma = 1`.
    pub fn exact() -> Self {
        MinNormSolver {
            vertex_gamma: 1.0,
            ..Self::default()
        }
    }

    /// `min_{c in [0,1]} |c x1 + (1-c) x2|^2` in closed form from the three dot products;
    /// returns `(c, cost)`. Ties (identical vectors, a zero vector) take the vertex branch.
    pub fn min_norm_from2(&self, v1v1: f64, v1v2: f64, v2v2: f64) -> (f64, f64) {
        if v1v2 >= v1v1 {
            return (self.vertex_gamma, v1v1);
        }
        if v1v2 >= v2v2 {
            return (1.0 - self.vertex_gamma, v2v2);
        }
        // here |x1 - x2|^2 = v1v1 + v2v2 - 2 v1v2 > 0
        let gamma = -(v1v2 - v2v2) / (v1v1 + v2v2 - 2.0 * v1v2);
        (gamma, v2v2 + gamma * (v1v2 - v2v2))
    }

    /// Solve from the row-major `n x n` Gram matrix `gram[i*n + j] = <v_i, v_j>`.
    pub fn solve_gram(&self, gram: &[f64], n: usize) -> Result<MinNormSolution, ParetoError> {
        if n == 0 {
            return Err(ParetoError::Empty);
        }
        if gram.len() != n * n {
            return Err(ParetoError::GramShape { n, got: gram.len() });
        }
        if let Some(k) = gram.iter().position(|x| !x.is_finite()) {
            return Err(ParetoError::NonFiniteGram {
                i: k / n,
                j: k % n,
                value: gram[k],
            });
        }
        let m = |i: usize, j: usize| gram[i * n + j];
        if n == 1 {
            return Ok(MinNormSolution {
                weights: vec![1.0],
                cost: m(0, 0),
                iterations: 0,
                converged: true,
            });
        }
        // best pair (MGDA's _min_norm_2d): first strictly smallest cost wins
        let mut best: Option<((usize, usize), f64, f64)> = None;
        for i in 0..n {
            for j in i + 1..n {
                let (c, d) = self.min_norm_from2(m(i, i), m(i, j), m(j, j));
                if best.is_none_or(|(_, _, bd)| d < bd) {
                    best = Some(((i, j), c, d));
                }
            }
        }
        let ((i0, j0), c0, d0) = best.expect("n >= 2 gives at least one pair");
        let mut sol = vec![0.0; n];
        sol[i0] = c0;
        sol[j0] = 1.0 - c0;
        if n < 3 {
            return Ok(MinNormSolution {
                weights: sol,
                cost: d0,
                iterations: 0,
                converged: true,
            });
        }
        // Frank-Wolfe (MGDA's find_min_norm_element_FW)
        let mut cost = d0;
        let mut ms = vec![0.0; n];
        for it in 1..=self.max_iter {
            for (i, v) in ms.iter_mut().enumerate() {
                *v = (0..n).map(|j| m(i, j) * sol[j]).sum();
            }
            // first index of the smallest entry of M s: the vertex of steepest descent
            let t = (0..n).fold(0, |bt, k| if ms[k] < ms[bt] { k } else { bt });
            let v1v1: f64 = (0..n).map(|i| sol[i] * ms[i]).sum();
            let v1v2 = ms[t]; // M symmetric: s^T M e_t
            let v2v2 = m(t, t);
            let (nc, nd) = self.min_norm_from2(v1v1, v1v2, v2v2);
            let mut next: Vec<f64> = sol.iter().map(|x| nc * x).collect();
            next[t] += 1.0 - nc;
            let change: f64 = next.iter().zip(&sol).map(|(a, b)| (a - b).abs()).sum();
            cost = nd;
            if change < self.tol {
                return Ok(MinNormSolution {
                    weights: sol,
                    cost,
                    iterations: it,
                    converged: true,
                });
            }
            sol = next;
        }
        Ok(MinNormSolution {
            weights: sol,
            cost,
            iterations: self.max_iter,
            converged: false,
        })
    }

    /// Solve for explicit vectors (all the same length); dot products in f64.
    pub fn solve(&self, vecs: &[&[f32]]) -> Result<MinNormSolution, ParetoError> {
        let n = vecs.len();
        if n == 0 {
            return Err(ParetoError::Empty);
        }
        for v in vecs {
            if v.len() != vecs[0].len() {
                return Err(ParetoError::GradLength {
                    a: vecs[0].len(),
                    b: v.len(),
                });
            }
        }
        let mut gram = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let d = dot(vecs[i], vecs[j]);
                gram[i * n + j] = d;
                gram[j * n + i] = d;
            }
        }
        self.solve_gram(&gram, n)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Dot products of the two objectives' gradients over the shared parameters:
/// `g00 = <g_acd, g_acd>`, `g01 = <g_acd, g_rec>`, `g11 = <g_rec, g_rec>`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GradGram {
    pub g00: f64,
    pub g01: f64,
    pub g11: f64,
}

impl GradGram {
    /// From the two flattened gradients.
    pub fn from_grads(g_acd: &[f32], g_rec: &[f32]) -> Self {
        let mut gram = GradGram::default();
        gram.accumulate(g_acd, g_rec);
        gram
    }

    /// Add one parameter tensor's pair of gradients (so a trainer never has to concatenate
    /// the parameters). Tensors of different lengths are a programming error upstream and
    /// only their common prefix is used; call [`GradGram::from_grads`] to have it checked.
    pub fn accumulate(&mut self, g_acd: &[f32], g_rec: &[f32]) {
        self.g00 += dot(g_acd, g_acd);
        self.g01 += dot(g_acd, g_rec);
        self.g11 += dot(g_rec, g_rec);
    }

    /// The Gram matrix of the l2-normalised gradients (AutoCDSR normalises with "l2"):
    /// `[[1, cos], [cos, 1]]`; `None` when either gradient is zero.
    pub fn normalized(&self) -> Option<[[f64; 2]; 2]> {
        let (n0, n1) = (self.g00.sqrt(), self.g11.sqrt());
        if n0 <= f64::MIN_POSITIVE || n1 <= f64::MIN_POSITIVE {
            return None;
        }
        let c = (self.g01 / (n0 * n1)).clamp(-1.0, 1.0);
        Some([[1.0, c], [c, 1.0]])
    }
}

/// Pareto-MTL preference vectors in (a_cd, L_rec) order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreferenceVectors(pub Vec<[f64; 2]>);

impl Default for PreferenceVectors {
    /// The public AutoCDSR code's vectors `[[0, 1], [1, 0], [0.7071, 0.7071]]`.
    // the public code's literal 0.7071, not 1/sqrt(2): it decides the active constraints
    #[allow(clippy::approx_constant)]
    fn default() -> Self {
        PreferenceVectors(vec![[0.0, 1.0], [1.0, 0.0], [0.7071, 0.7071]])
    }
}

impl PreferenceVectors {
    /// `p_k = (cos(k pi / 2K), sin(k pi / 2K))` for `k = 0..=K` (K+1 unit vectors on the
    /// quarter circle). `K = 0` gives the single vector `(1, 0)`.
    pub fn circle(k_max: usize) -> Self {
        if k_max == 0 {
            return PreferenceVectors(vec![[1.0, 0.0]]);
        }
        PreferenceVectors(
            (0..=k_max)
                .map(|k| {
                    let t = k as f64 * FRAC_PI_2 / k_max as f64;
                    [t.cos(), t.sin()]
                })
                .collect(),
        )
    }

    fn validate(&self) -> Result<(), ParetoError> {
        if self.0.is_empty() {
            return Err(ParetoError::Preferences("no preference vectors".into()));
        }
        for (k, p) in self.0.iter().enumerate() {
            if !p[0].is_finite() || !p[1].is_finite() {
                return Err(ParetoError::Preferences(format!(
                    "vector {k} = {p:?} is not finite"
                )));
            }
        }
        Ok(())
    }
}

/// Why [`ParetoMtl::weights`] returned the fallback weights `(1, 1)` instead of a solution.
/// The public code falls back to `(1, 1)` whenever its solve raises; these are the degenerate
/// cases where that happens there (a zero gradient gives NaNs) or where `lambda0 / lambda1`
/// would be unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// One objective's gradient over the shared parameters is zero (e.g. a batch whose
    /// sequences are all single-domain has `a_cd = 0` with zero gradient).
    ZeroGradient,
    /// `|lambda1| < min_lambda1` after L1 normalisation: the ratio would blow up.
    LambdaOneVanishes,
}

/// The weights of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoWeights {
    /// `(lambda0, lambda1)` normalised to `|lambda0| + |lambda1| = 1` (`lambda0` may be negative).
    pub lambda: [f64; 2],
    /// The multiplier on `a_cd`: `lambda0 / lambda1` (1 under a fallback).
    pub coefficient: f64,
    /// Indices of the preference vectors whose constraints were active.
    pub active: Vec<usize>,
    /// Set when the fallback weights were used.
    pub fallback: Option<Fallback>,
}

impl ParetoWeights {
    fn fallback(reason: Fallback, active: Vec<usize>) -> Self {
        ParetoWeights {
            lambda: [0.5, 0.5],
            coefficient: 1.0,
            active,
            fallback: Some(reason),
        }
    }
}

/// Pareto-MTL: constrain the loss vector to the preferred region and take the min-norm
/// combination of the gradients and the active constraints' gradients.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ParetoMtl {
    pub preferences: PreferenceVectors,
    /// Index of the preferred region's vector (AutoCDSR: 1, i.e. `(1, 0)` in the default set).
    pub preferred: usize,
    pub solver: MinNormSolver,
    /// Guard for `lambda0 / lambda1`: below this `|lambda1|` the fallback `(1, 1)` is used.
    pub min_lambda1: f64,
    /// Recompute the weights on the first step of each epoch and every `every`-th step after
    /// it, and train the steps between with the last coefficient (one backward pass of
    /// `L_rec + c * a_cd`, as with a fixed weight). 1 (the default): every step, as AutoCDSR
    /// does. Larger values trade the weights' freshness for the second backward pass
    /// (`docs/performance.md`, "AutoCDSR's training-time overhead"). Left out of the
    /// serialised config at 1, so existing configs keep their run ids.
    #[serde(skip_serializing_if = "every_step")]
    pub every: usize,
}

fn every_step(every: &usize) -> bool {
    *every == 1
}

impl Default for ParetoMtl {
    fn default() -> Self {
        ParetoMtl {
            preferences: PreferenceVectors::default(),
            preferred: 1,
            solver: MinNormSolver::default(),
            min_lambda1: 1e-6,
            every: 1,
        }
    }
}

impl ParetoMtl {
    /// Indices `j` whose constraint `(p_j - p_i) . l / |l| > 0` is violated by the loss vector
    /// `l = (a_cd, L_rec)` (none for a zero loss vector).
    pub fn active_constraints(&self, losses: [f64; 2]) -> Result<Vec<usize>, ParetoError> {
        self.preferences.validate()?;
        let prefs = &self.preferences.0;
        let pi = *prefs.get(self.preferred).ok_or(ParetoError::Preferred {
            preferred: self.preferred,
            n: prefs.len(),
        })?;
        if !losses[0].is_finite() || !losses[1].is_finite() {
            return Err(ParetoError::NonFiniteLoss {
                a_cd: losses[0],
                l_rec: losses[1],
            });
        }
        let norm = losses[0].hypot(losses[1]);
        if norm == 0.0 {
            return Ok(vec![]);
        }
        let l = [losses[0] / norm, losses[1] / norm];
        Ok(prefs
            .iter()
            .enumerate()
            .filter(|(_, p)| (p[0] - pi[0]) * l[0] + (p[1] - pi[1]) * l[1] > 0.0)
            .map(|(j, _)| j)
            .collect())
    }

    /// The step's weights from the gradients' Gram matrix and the current loss values
    /// `(a_cd, L_rec)`.
    pub fn weights(&self, gram: GradGram, losses: [f64; 2]) -> Result<ParetoWeights, ParetoError> {
        for (i, j, v) in [(0, 0, gram.g00), (0, 1, gram.g01), (1, 1, gram.g11)] {
            if !v.is_finite() {
                return Err(ParetoError::NonFiniteGram { i, j, value: v });
            }
        }
        let active = self.active_constraints(losses)?;
        let Some(g) = gram.normalized() else {
            return Ok(ParetoWeights::fallback(Fallback::ZeroGradient, active));
        };
        let pi = self.preferences.0[self.preferred];
        // coefficient vectors over (g0, g1): the two gradients, then w_j = p_j - p_i
        let mut coef: Vec<[f64; 2]> = vec![[1.0, 0.0], [0.0, 1.0]];
        coef.extend(active.iter().map(|&j| {
            let p = self.preferences.0[j];
            [p[0] - pi[0], p[1] - pi[1]]
        }));
        let n = coef.len();
        let quad = |a: [f64; 2], b: [f64; 2]| {
            a[0] * (g[0][0] * b[0] + g[0][1] * b[1]) + a[1] * (g[1][0] * b[0] + g[1][1] * b[1])
        };
        let mut gm = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                gm[i * n + j] = quad(coef[i], coef[j]);
            }
        }
        let sol = self.solver.solve_gram(&gm, n)?;
        let mut lambda = [0.0; 2];
        for (c, s) in coef.iter().zip(&sol.weights) {
            lambda[0] += s * c[0];
            lambda[1] += s * c[1];
        }
        let l1 = lambda[0].abs() + lambda[1].abs();
        if l1 == 0.0 || !l1.is_finite() {
            return Ok(ParetoWeights::fallback(Fallback::LambdaOneVanishes, active));
        }
        lambda = [lambda[0] / l1, lambda[1] / l1];
        if lambda[1].abs() < self.min_lambda1 {
            return Ok(ParetoWeights::fallback(Fallback::LambdaOneVanishes, active));
        }
        Ok(ParetoWeights {
            lambda,
            coefficient: lambda[0] / lambda[1],
            active,
            fallback: None,
        })
    }
}

/// How the `a_cd` term enters the training loss `L_rec + coefficient * a_cd`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AcdWeighting {
    /// Pareto-MTL weights recomputed every step (AutoCDSR).
    Pareto(ParetoMtl),
    /// A constant multiplier (the public code's `linear_scalar_optimization_loop`; negative
    /// values reward cross-domain attention).
    Fixed { weight: f64 },
}

impl Default for AcdWeighting {
    fn default() -> Self {
        AcdWeighting::Pareto(ParetoMtl::default())
    }
}

impl AcdWeighting {
    /// Whether the trainer must compute the two gradients separately (on some steps).
    pub fn needs_gradients(&self) -> bool {
        matches!(self, AcdWeighting::Pareto(_))
    }

    /// Pareto-MTL's `every` (1 for a fixed weight, which has no weights to recompute).
    pub fn recompute_every(&self) -> usize {
        match self {
            AcdWeighting::Pareto(p) => p.every,
            AcdWeighting::Fixed { .. } => 1,
        }
    }

    /// The multiplier on `a_cd`. `gram` is ignored (and may be `None`) for fixed weights.
    pub fn coefficient(
        &self,
        gram: Option<GradGram>,
        losses: [f64; 2],
    ) -> Result<ParetoWeights, ParetoError> {
        match self {
            AcdWeighting::Fixed { weight } => Ok(ParetoWeights {
                lambda: [*weight, 1.0],
                coefficient: *weight,
                active: vec![],
                fallback: None,
            }),
            AcdWeighting::Pareto(p) => p.weights(gram.unwrap_or_default(), losses),
        }
    }
}
