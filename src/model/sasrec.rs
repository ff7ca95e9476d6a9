//! SASRec-style merged-sequence baseline: causal self-attention blocks (post-norm, SwiGLU FFN)
//! over the merged stream x only, with a per-domain output head (layer norm) so each target
//! domain is scored by its own head.
//!
//! With `kind = "sasrec-single"` the same blocks encode each domain's own stream (a for A
//! targets, b for B targets) instead of the merged one: a single-domain model with no
//! cross-domain attention, the reference of AutoCDSR's success/failure diagnostic.
//!
//! GCA inside SASRec works on the merged timeline: at position p the stream is split by the
//! domain of each position's item; the A positions query the B positions (or the whole merged
//! stream, [`KvSource::Merged`]) and vice versa, causally; the two outputs are merged back.

use super::gca::{GcaConfig, GcaInputs, GcaLayer, KvSource};
use super::input::{SeqBatch, StreamInput};
use super::nn::{
    last_position, AttnMask, Ctx, Embedding, LayerNorm, MultiHeadAttention, ParamStore, Result,
    SwiGlu, Tensor,
};
use super::{ModelConfig, ModelKind};

struct Block {
    attn: MultiHeadAttention,
    norm_attn: LayerNorm,
    ffn: SwiGlu,
    norm_ffn: LayerNorm,
}

/// The SASRec baseline.
pub struct SasRec {
    pub(crate) store: ParamStore,
    cfg: ModelConfig,
    n_items_a: u32,
    item: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    gca: Vec<GcaLayer>,
    head: [LayerNorm; 2],
}

impl SasRec {
    pub fn new(
        cfg: &ModelConfig,
        gca: &GcaConfig,
        vocab: usize,
        n_items_a: usize,
        mut store: ParamStore,
    ) -> Result<Self> {
        let d = cfg.d_model;
        gca.check_positions(cfg.layers)?;
        if cfg.kind == ModelKind::SasrecSingle && !gca.positions.is_empty() {
            candle_core::bail!(
                "gca.positions must be empty for model.kind = \"sasrec-single\" (it has no merged stream to cross)"
            );
        }
        let (item, pos) = {
            let mut s = store.scope("embedding", "embedding");
            (
                Embedding::new(&mut s, "item", vocab, d)?,
                Embedding::new(&mut s, "position", cfg.max_len + 1, d)?,
            )
        };
        let mut positions = gca.positions.clone();
        positions.sort_unstable();
        positions.dedup();
        let mut gca_layers = Vec::new();
        let mut blocks = Vec::new();
        for p in 0..=cfg.layers {
            if p > 0 {
                let l = p - 1;
                let mut s = store.scope("attention", &format!("block{l}.attention"));
                let attn = MultiHeadAttention::new(&mut s, "mha", d, cfg.heads)?;
                let norm_attn = LayerNorm::new(&mut s, "norm", d)?;
                let mut s = store.scope("ffn", &format!("block{l}"));
                let ffn = SwiGlu::new(&mut s, "ffn", d, cfg.ffn_hidden)?;
                let norm_ffn = LayerNorm::new(&mut s, "norm_ffn", d)?;
                blocks.push(Block {
                    attn,
                    norm_attn,
                    ffn,
                    norm_ffn,
                });
            }
            if positions.contains(&p) {
                let key = format!("gca.{p}");
                gca_layers.push(GcaLayer::new(&mut store.scope(&key, &key), p, d, gca)?);
            }
        }
        let mut s = store.scope("head", "head");
        let head = [
            LayerNorm::new(&mut s, "a", d)?,
            LayerNorm::new(&mut s, "b", d)?,
        ];
        Ok(Self {
            store,
            cfg: cfg.clone(),
            n_items_a: n_items_a as u32,
            item,
            pos,
            blocks,
            gca: gca_layers,
            head,
        })
    }

    pub fn item_embedding(&self) -> &Embedding {
        &self.item
    }

    fn gca_at(&self, p: usize, h: Tensor, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let Some(layer) = self.gca.iter().find(|g| g.position == p) else {
            return Ok(h);
        };
        let dtype = self.store.dtype();
        let x = &batch.x;
        // Domain membership of each merged position.
        let dom = |want_a: bool| -> Vec<Vec<bool>> {
            x.host_ids
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|&i| i != 0 && ((i <= self.n_items_a) == want_a))
                        .collect()
                })
                .collect()
        };
        let (va, vb) = (dom(true), dom(false));
        let col = |v: &Vec<Vec<bool>>| -> Result<Tensor> {
            let (b, l) = (v.len(), x.len());
            let f: Vec<f32> = v.iter().flatten().map(|&t| t as u8 as f32).collect();
            Tensor::from_vec(f, (b, l, 1), &candle_core::Device::Cpu)?.to_dtype(dtype)
        };
        let (ma, mb) = (col(&va)?, col(&vb)?);
        let (xa, xb) = (h.broadcast_mul(&ma)?, h.broadcast_mul(&mb)?);
        let (mask_a, mask_b, kv) = match layer.kv_source {
            KvSource::Other => (
                AttnMask::new(&vb, x.len(), true, dtype)?,
                AttnMask::new(&va, x.len(), true, dtype)?,
                [&xb, &xa],
            ),
            KvSource::Merged => (
                AttnMask::new(&x.valid, x.len(), true, dtype)?,
                AttnMask::new(&x.valid, x.len(), true, dtype)?,
                [&h, &h],
            ),
        };
        let inp = GcaInputs {
            queries: [&xa, &xb],
            kv,
            masks: [&mask_a, &mask_b],
            query_valid: [&ma, &mb],
            query_valid_host: [&va, &vb],
        };
        let [a, b] = layer.forward(&inp, ctx)?;
        a + b
    }

    /// Final representation per position `[b, l, d]`, through the target domain's head.
    pub fn forward(&self, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let (ha, hb) = if self.cfg.kind == ModelKind::SasrecSingle {
            (
                self.encode(&batch.a, "a", None, ctx)?,
                self.encode(&batch.b, "b", None, ctx)?,
            )
        } else {
            let h = self.encode(&batch.x, "x", Some(batch), ctx)?;
            (h.clone(), h)
        };
        let last = |t: &Tensor| last_position(t, ctx.last_only);
        let a = self.head[0]
            .forward(&last(&ha)?)?
            .broadcast_mul(&last(&batch.target_domain[0])?)?;
        let b = self.head[1]
            .forward(&last(&hb)?)?
            .broadcast_mul(&last(&batch.target_domain[1])?)?;
        a + b
    }

    /// The blocks over one stream (attention maps recorded as `attn.L.NAME`); GCA layers run
    /// when `gca_batch` is given (the merged stream).
    fn encode(
        &self,
        x: &StreamInput,
        name: &str,
        gca_batch: Option<&SeqBatch>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let mask = AttnMask::new(&x.valid, x.len(), true, self.store.dtype())?;
        let h = (self.item.forward(&x.ids)? + self.pos.forward(&x.pos)?)?.broadcast_mul(&x.mask)?;
        let mut h = ctx.dropout(&h, self.cfg.dropout)?;
        if let Some(batch) = gca_batch {
            h = self.gca_at(0, h, batch, ctx)?;
        }
        for (l, blk) in self.blocks.iter().enumerate() {
            let o = blk.attn.forward(&h, &h, &mask, ctx.attn_probs.is_some())?;
            if let (Some(p), Some(rec)) = (o.probs, ctx.attn_probs.as_mut()) {
                rec.push((format!("attn.{l}.{name}"), p));
            }
            let o = ctx.dropout(&o.out, self.cfg.dropout)?;
            h = blk.norm_attn.forward(&(&h + o)?)?.broadcast_mul(&x.mask)?;
            let f = ctx.dropout(&blk.ffn.forward(&h)?, self.cfg.dropout)?;
            h = blk.norm_ffn.forward(&(&h + f)?)?.broadcast_mul(&x.mask)?;
            if let Some(batch) = gca_batch {
                h = self.gca_at(l + 1, h, batch, ctx)?;
            }
        }
        Ok(h)
    }
}
