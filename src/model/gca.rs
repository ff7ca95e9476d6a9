//! Gated cross-attention (GCA), exactly as `shared/reference/methods.md` states it:
//!
//! ```text
//! X'  = MHA(query = X_A, key = value = Y)
//! g   = act(FFN([X_A ; X']))          act = sigmoid | tanh, FFN = one linear map 2d -> d
//! out = LN(X_A + g * X')              LN optional
//! ```
//!
//! Two modules per position ([`GcaLayer`]): A queries B and B queries A. `Y` is the other
//! domain's stream ([`KvSource::Other`], the default) or the merged stream
//! ([`KvSource::Merged`]). Masks are causal plus key padding; query rows with no usable key
//! give `X' = 0` exactly (see [`crate::model::nn::AttnMask`]).
//!
//! Two interventions on the geometry of `X'` (`[gca]` options, to test whether orthogonality
//! causes accuracy rather than only correlating with it):
//! - [`Projection`] (`project`): per position, replace `X'` by its part orthogonal to `X`,
//!   `X' - (X'·X / X·X) X`, or by its part parallel to `X`, before the gate and the residual
//!   ([`project_rows`]; a zero row of `X` has no direction: its parallel part is 0).
//! - `cos_penalty = w`: the trainer adds `w · mean |cos(X, X')|` over the valid query
//!   positions of every GCA module to the loss (signed: `w > 0` pushes towards orthogonal,
//!   `w < 0` towards parallel); the modules record their sums when
//!   [`Ctx::gca_cos`](crate::model::nn::Ctx) asks for them ([`abs_cos_sum`]).
//!
//! Both are built from differentiable tensor ops and never divide by zero.

use serde::{Deserialize, Serialize};

pub use super::nn::GateActivation;
use super::nn::{
    gated_residual, mask_mul, AbsCosSum, AttnMask, Ctx, Device, LayerNorm, Linear,
    MultiHeadAttention, Packing, Result, Scope, Tensor, D,
};
use crate::data::Domain;

/// Where the keys and values of a GCA module come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvSource {
    /// The other domain's stream (A queries B, B queries A).
    #[default]
    Other,
    /// The merged stream x.
    Merged,
}

/// What a GCA module keeps of the cross-attention output `X'` (`gca.project`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Projection {
    /// `X'` as attention computed it.
    #[default]
    None,
    /// Only the part of `X'` orthogonal to `X`: `|cos(X, X')| = 0`.
    Orthogonal,
    /// Only the part of `X'` along `X`: `|cos(X, X')| = 1` (0 where that part is zero).
    Parallel,
}

impl Projection {
    pub fn is_none(&self) -> bool {
        *self == Projection::None
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Projection::None => "none",
            Projection::Orthogonal => "orthogonal",
            Projection::Parallel => "parallel",
        }
    }
}

fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

/// GCA options of a run (`[gca]` in the run config). No positions = no GCA.
///
/// `project` and `cos_penalty` are left out of the serialised config at their defaults, so a
/// config without them keeps its canonical form (and its run id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcaConfig {
    /// GCA positions: 0 = right after the embedding, i = after block i.
    /// `[0]` is GCA_early, `[0, 1]` GCA_stack for one-block ABXI.
    pub positions: Vec<usize>,
    pub gate: GateActivation,
    pub layer_norm: bool,
    /// Attention heads (the paper uses 4 or 8).
    pub heads: usize,
    pub kv_source: KvSource,
    /// Keep only the part of `X'` orthogonal or parallel to `X` (default `none`).
    #[serde(skip_serializing_if = "Projection::is_none")]
    pub project: Projection,
    /// Weight `w` of `mean |cos(X, X')|` added to the training loss (signed; default 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub cos_penalty: f64,
}

impl Default for GcaConfig {
    fn default() -> Self {
        Self {
            positions: Vec::new(),
            gate: GateActivation::Sigmoid,
            layer_norm: true,
            heads: 4,
            kv_source: KvSource::Other,
            project: Projection::None,
            cos_penalty: 0.0,
        }
    }
}

/// What one GCA module computed.
pub struct GcaOutput {
    /// The module output `LN?(X + g * X')`.
    pub out: Tensor,
    /// The cross-attention output `X'` before gating (after the projection, if any).
    pub x_prime: Tensor,
    /// The attention output before the projection; `None` without one.
    pub x_prime_raw: Option<Tensor>,
}

/// One gated cross-attention module (one query domain).
pub struct GcaModule {
    attn: MultiHeadAttention,
    gate: Linear,
    norm: Option<LayerNorm>,
    act: GateActivation,
    project: Projection,
}

impl GcaModule {
    pub fn new(s: &mut Scope, d: usize, cfg: &GcaConfig) -> Result<Self> {
        Ok(Self {
            attn: MultiHeadAttention::new(s, "attn", d, cfg.heads)?,
            gate: Linear::new(s, "gate", 2 * d, d, true)?,
            norm: if cfg.layer_norm {
                Some(LayerNorm::new(s, "norm", d)?)
            } else {
                None
            },
            act: cfg.gate,
            project: cfg.project,
        })
    }

    /// `x: [b, lq, d]` queries, `y: [b, lk, d]` keys/values, `mask` over (query, key) pairs.
    pub fn forward(&self, x: &Tensor, y: &Tensor, mask: &AttnMask) -> Result<GcaOutput> {
        self.forward_rows(x, y, None, mask)
    }

    /// [`GcaModule::forward`] of packed rows: `x: [nq, d]` packed by `rows.0`, `y: [nk, d]` by
    /// `rows.1` (the attention heads on the padded layout, the rest on the rows); the outputs
    /// are packed like `x`.
    pub fn forward_packed(
        &self,
        x: &Tensor,
        y: &Tensor,
        rows: (&Packing, &Packing),
        mask: &AttnMask,
    ) -> Result<GcaOutput> {
        self.forward_rows(x, y, Some(rows), mask)
    }

    fn forward_rows(
        &self,
        x: &Tensor,
        y: &Tensor,
        rows: Option<(&Packing, &Packing)>,
        mask: &AttnMask,
    ) -> Result<GcaOutput> {
        let attended = match rows {
            Some((q, kv)) => self.attn.forward_packed(x, y, q, kv, mask, false)?.out,
            None => self.attn.forward(x, y, mask, false)?.out,
        };
        let (x_prime, x_prime_raw) = match self.project {
            Projection::None => (attended, None),
            p => (project_rows(&attended, x, p)?, Some(attended)),
        };
        let pre = self
            .gate
            .forward(&Tensor::cat(&[x, &x_prime], D::Minus1)?)?;
        let sum = gated_residual(x, &pre, &x_prime, self.act)?;
        let out = match &self.norm {
            Some(n) => n.forward(&sum)?,
            None => sum,
        };
        Ok(GcaOutput {
            out,
            x_prime,
            x_prime_raw,
        })
    }
}

/// Per row (last axis) of `v`: its part along the matching row of `x`, `(v·x / x·x) x`
/// ([`Projection::Parallel`]), or the rest `v - (v·x / x·x) x` ([`Projection::Orthogonal`]);
/// `v` itself for [`Projection::None`]. A zero row of `x` has no direction: its parallel part
/// is 0 (the division uses `x·x + 1` there, which is exact since `v·x = 0`), so no NaN and
/// finite gradients.
pub fn project_rows(v: &Tensor, x: &Tensor, keep: Projection) -> Result<Tensor> {
    if keep == Projection::None {
        return Ok(v.clone());
    }
    let dot = (v * x)?.sum_keepdim(D::Minus1)?;
    let nx = x.sqr()?.sum_keepdim(D::Minus1)?;
    let zero = nx.detach().eq(0f64)?.to_dtype(nx.dtype())?;
    let parallel = x.broadcast_mul(&(dot / (nx + zero)?)?)?;
    match keep {
        Projection::Parallel => Ok(parallel),
        _ => v - parallel,
    }
}

/// `Σ |cos(x_i, v_i)|` over the rows `i` (last axis) where `valid` (`[.., 1]`, 0 or 1) is 1, as
/// a differentiable scalar. A pair with a zero row counts as 0 with zero gradient (as
/// [`crate::analysis::orthogonality::abs_cos`] counts it by default).
pub fn abs_cos_sum(x: &Tensor, v: &Tensor, valid: &Tensor) -> Result<Tensor> {
    let dot = (x * v)?.sum_keepdim(D::Minus1)?;
    let norms = (x.sqr()?.sum_keepdim(D::Minus1)? * v.sqr()?.sum_keepdim(D::Minus1)?)?;
    let zero = norms.detach().eq(0f64)?.to_dtype(norms.dtype())?;
    let nonzero = (zero.ones_like()? - &zero)?;
    let cos = ((dot * nonzero)? / (norms + zero)?.sqrt()?)?;
    cos.abs()?.broadcast_mul(valid)?.sum_all()
}

/// The loss term of `gca.cos_penalty = w`: `w` times the mean |cos(X, X')| over the valid
/// query rows of every module recorded in `sums` (pooled: each row counts once); `None` when
/// no module had a valid row.
pub fn cos_penalty(sums: &[AbsCosSum], w: f64) -> Result<Option<Tensor>> {
    let rows: usize = sums.iter().map(|s| s.rows).sum();
    let Some(first) = sums.first().filter(|_| rows > 0) else {
        return Ok(None);
    };
    let mut total = first.sum.clone();
    for s in &sums[1..] {
        total = (total + &s.sum)?;
    }
    Ok(Some((total * (w / rows as f64))?))
}

/// The two modules of one GCA position: `[A queries, B queries]`.
pub struct GcaLayer {
    pub position: usize,
    pub modules: [GcaModule; 2],
    pub kv_source: KvSource,
}

/// Streams and masks a GCA layer reads, per query domain.
pub struct GcaInputs<'a> {
    /// Query streams `[X_A, X_B]`, each `[b, l, d]`.
    pub queries: [&'a Tensor; 2],
    /// Key/value streams `[Y for A, Y for B]`.
    pub kv: [&'a Tensor; 2],
    /// Attention masks `[for A, for B]`.
    pub masks: [&'a AttnMask; 2],
    /// Query validity `[b, l, 1]` per domain: outputs at padding are zeroed.
    pub query_valid: [&'a Tensor; 2],
    /// Host copy of the query validity (for capture).
    pub query_valid_host: [&'a [Vec<bool>]; 2],
    /// When `Some`, `queries` and `kv` are packed rows ([`Packing`]): the queries' packings
    /// and the keys'/values', per query domain. The outputs are packed like the queries; what
    /// `ctx` captures is laid out padded.
    pub packed: Option<GcaPacking<'a>>,
}

/// The packings of packed [`GcaInputs`].
#[derive(Clone, Copy)]
pub struct GcaPacking<'a> {
    pub queries: [&'a Packing; 2],
    pub kv: [&'a Packing; 2],
}

impl GcaLayer {
    pub fn new(s: &mut Scope, position: usize, d: usize, cfg: &GcaConfig) -> Result<Self> {
        let a = GcaModule::new(&mut s.sub("A"), d, cfg)?;
        let b = GcaModule::new(&mut s.sub("B"), d, cfg)?;
        Ok(Self {
            position,
            modules: [a, b],
            kv_source: cfg.kv_source,
        })
    }

    /// Updated query streams `[A, B]`; records X, X', Y and the mask when `ctx` captures.
    pub fn forward(&self, inp: &GcaInputs, ctx: &mut Ctx) -> Result<[Tensor; 2]> {
        let mut outs = Vec::with_capacity(2);
        for d in Domain::BOTH {
            let i = d.index();
            let (q, kv) = (inp.queries[i], inp.kv[i]);
            let (o, valid) = match inp.packed {
                Some(p) => {
                    let rows = (p.queries[i], p.kv[i]);
                    let o = self.modules[i].forward_packed(q, kv, rows, inp.masks[i])?;
                    (o, p.queries[i].pack(inp.query_valid[i])?)
                }
                None => (
                    self.modules[i].forward(q, kv, inp.masks[i])?,
                    inp.query_valid[i].clone(),
                ),
            };
            if let Some(sums) = ctx.gca_cos.as_mut() {
                sums.push(AbsCosSum {
                    sum: abs_cos_sum(q, &o.x_prime, &valid)?,
                    rows: inp.query_valid_host[i]
                        .iter()
                        .flatten()
                        .filter(|&&v| v)
                        .count(),
                });
            }
            if let Some(cap) = ctx.capture.as_mut() {
                let p = self.position;
                let padded = |t: &Tensor, kv_rows: bool| -> Result<Tensor> {
                    Ok(match inp.packed {
                        Some(pk) if kv_rows => pk.kv[i].unpack(t)?.detach(),
                        Some(pk) => pk.queries[i].unpack(t)?.detach(),
                        None => t.detach(),
                    })
                };
                cap.push((format!("gca.{p}.{d}.x"), padded(q, false)?));
                cap.push((format!("gca.{p}.{d}.x_prime"), padded(&o.x_prime, false)?));
                if let Some(raw) = &o.x_prime_raw {
                    cap.push((format!("gca.{p}.{d}.x_prime_raw"), padded(raw, false)?));
                }
                cap.push((format!("gca.{p}.{d}.y"), padded(kv, true)?));
                let host = inp.query_valid_host[i];
                let (b, l) = (host.len(), host.first().map_or(0, |r| r.len()));
                let m: Vec<u8> = host.iter().flatten().map(|&v| v as u8).collect();
                cap.push((
                    format!("gca.{p}.{d}.mask"),
                    Tensor::from_vec(m, (b, l), &Device::Cpu)?,
                ));
            }
            outs.push(mask_mul(&o.out, &valid)?);
        }
        let b = outs.pop().unwrap();
        let a = outs.pop().unwrap();
        Ok([a, b])
    }
}
