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

use serde::{Deserialize, Serialize};

use super::nn::{
    mask_mul, AttnMask, Ctx, Device, LayerNorm, Linear, MultiHeadAttention, Result, Scope, Tensor,
};
use crate::data::Domain;

/// Gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateActivation {
    #[default]
    Sigmoid,
    Tanh,
}

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

/// GCA options of a run (`[gca]` in the run config). No positions = no GCA.
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
}

impl Default for GcaConfig {
    fn default() -> Self {
        Self {
            positions: Vec::new(),
            gate: GateActivation::Sigmoid,
            layer_norm: true,
            heads: 4,
            kv_source: KvSource::Other,
        }
    }
}

/// What one GCA module computed.
pub struct GcaOutput {
    /// The module output `LN?(X + g * X')`.
    pub out: Tensor,
    /// The cross-attention output `X'` before gating.
    pub x_prime: Tensor,
}

/// One gated cross-attention module (one query domain).
pub struct GcaModule {
    attn: MultiHeadAttention,
    gate: Linear,
    norm: Option<LayerNorm>,
    act: GateActivation,
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
        })
    }

    /// `x: [b, lq, d]` queries, `y: [b, lk, d]` keys/values, `mask` over (query, key) pairs.
    pub fn forward(&self, x: &Tensor, y: &Tensor, mask: &AttnMask) -> Result<GcaOutput> {
        let x_prime = self.attn.forward(x, y, mask, false)?.out;
        let pre = self.gate.forward(&Tensor::cat(&[x, &x_prime], 2)?)?;
        let g = match self.act {
            GateActivation::Sigmoid => sigmoid(&pre)?,
            GateActivation::Tanh => pre.tanh()?,
        };
        let sum = (x + g.mul(&x_prime)?)?;
        let out = match &self.norm {
            Some(n) => n.forward(&sum)?,
            None => sum,
        };
        Ok(GcaOutput { out, x_prime })
    }
}

/// Sigmoid from differentiable primitives (`1 / (1 + exp(-x))`).
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
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
            let o = self.modules[i].forward(inp.queries[i], inp.kv[i], inp.masks[i])?;
            if let Some(cap) = ctx.capture.as_mut() {
                let p = self.position;
                cap.push((format!("gca.{p}.{d}.x"), inp.queries[i].detach()));
                cap.push((format!("gca.{p}.{d}.x_prime"), o.x_prime.detach()));
                cap.push((format!("gca.{p}.{d}.y"), inp.kv[i].detach()));
                let host = inp.query_valid_host[i];
                let (b, l) = (host.len(), host.first().map_or(0, |r| r.len()));
                let m: Vec<u8> = host.iter().flatten().map(|&v| v as u8).collect();
                cap.push((
                    format!("gca.{p}.{d}.mask"),
                    Tensor::from_vec(m, (b, l), &Device::Cpu)?,
                ));
            }
            outs.push(mask_mul(&o.out, inp.query_valid[i])?);
        }
        let b = outs.pop().unwrap();
        let a = outs.pop().unwrap();
        Ok([a, b])
    }
}
