//! ABXI (WWW 2025; code DiMarzioBian/ABXI): one shared causal attention block applied to the
//! merged stream x and the per-domain streams a and b, a shared SwiGLU FFN with per-stream
//! low-rank adapters (dLoRA), and a projector from x into each domain with invariant low-rank
//! adapters (iLoRA). Optional GCA layers sit after the embedding (position 0) and after each
//! block (position i); they update streams a and b.

use super::gca::{GcaConfig, GcaInputs, GcaLayer, KvSource};
use super::input::{SeqBatch, StreamInput};
use super::nn::{
    last_position, mask_mul, AttentionMap, AttentionStream, AttnMask, Ctx, Embedding, LayerNorm,
    LoRA, MultiHeadAttention, ParamStore, Result, SwiGlu, Tensor,
};
use super::ModelConfig;

/// One encoder block (ABXI has one): shared attention + post-norm, shared FFN + dLoRA.
struct Block {
    attn: MultiHeadAttention,
    norm_attn: LayerNorm,
    ffn: SwiGlu,
    dlora: [LoRA; 3],
    norm_ffn: [LayerNorm; 3],
}

/// The ABXI model.
pub struct Abxi {
    pub(crate) store: ParamStore,
    cfg: ModelConfig,
    item: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    gca: Vec<GcaLayer>,
    proj_i: SwiGlu,
    proj_d: [SwiGlu; 2],
    ilora: [LoRA; 2],
    norm_i2d: [LayerNorm; 2],
    norm_d2d: [LayerNorm; 2],
}

/// The three streams in the order of the model's per-stream parts (`x`, `a`, `b`).
const STREAMS: [AttentionStream; 3] = [
    AttentionStream::Merged,
    AttentionStream::A,
    AttentionStream::B,
];

impl Abxi {
    /// Built through [`super::Model::new`], which checks the options first.
    pub(crate) fn new(
        cfg: &ModelConfig,
        gca: &GcaConfig,
        vocab: usize,
        mut store: ParamStore,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let item;
        let pos;
        {
            let mut s = store.scope("embedding", "embedding");
            item = Embedding::new(&mut s, "item", vocab, d)?;
            pos = Embedding::new(&mut s, "position", cfg.max_len + 1, d)?;
        }
        let mut gca_layers = Vec::new();
        let mut blocks = Vec::new();
        let mut positions = gca.positions.clone();
        positions.sort_unstable();
        positions.dedup();
        let make_gca = |store: &mut ParamStore, p: usize| -> Result<Option<GcaLayer>> {
            if positions.contains(&p) {
                let key = format!("gca.{p}");
                let mut s = store.scope(&key, &key);
                Ok(Some(GcaLayer::new(&mut s, p, d, gca)?))
            } else {
                Ok(None)
            }
        };
        if let Some(g) = make_gca(&mut store, 0)? {
            gca_layers.push(g);
        }
        for l in 0..cfg.layers {
            let attn;
            let norm_attn;
            {
                let mut s = store.scope("attention", &format!("block{l}.attention"));
                attn = MultiHeadAttention::new(&mut s, "mha", d, cfg.heads)?;
                norm_attn = LayerNorm::new(&mut s, "norm", d)?;
            }
            let ffn = SwiGlu::new(
                &mut store.scope("ffn", &format!("block{l}")),
                "ffn",
                d,
                cfg.ffn_hidden,
            )?;
            let mut s = store.scope("dlora", &format!("block{l}.dlora"));
            let dlora = [
                LoRA::new(&mut s, STREAMS[0].as_str(), d, cfg.rank_domain)?,
                LoRA::new(&mut s, STREAMS[1].as_str(), d, cfg.rank_domain)?,
                LoRA::new(&mut s, STREAMS[2].as_str(), d, cfg.rank_domain)?,
            ];
            let mut s = store.scope("norm", &format!("block{l}.norm_ffn"));
            let norm_ffn = [
                LayerNorm::new(&mut s, STREAMS[0].as_str(), d)?,
                LayerNorm::new(&mut s, STREAMS[1].as_str(), d)?,
                LayerNorm::new(&mut s, STREAMS[2].as_str(), d)?,
            ];
            blocks.push(Block {
                attn,
                norm_attn,
                ffn,
                dlora,
                norm_ffn,
            });
            if let Some(g) = make_gca(&mut store, l + 1)? {
                gca_layers.push(g);
            }
        }
        let mut s = store.scope("projector", "projector");
        let proj_i = SwiGlu::new(&mut s, "i", d, cfg.ffn_hidden)?;
        let proj_d = [
            SwiGlu::new(&mut s, "a", d, cfg.ffn_hidden)?,
            SwiGlu::new(&mut s, "b", d, cfg.ffn_hidden)?,
        ];
        let norm_i2d = [
            LayerNorm::new(&mut s, "norm_i2a", d)?,
            LayerNorm::new(&mut s, "norm_i2b", d)?,
        ];
        let norm_d2d = [
            LayerNorm::new(&mut s, "norm_a2a", d)?,
            LayerNorm::new(&mut s, "norm_b2b", d)?,
        ];
        let mut s = store.scope("ilora", "ilora");
        let ilora = [
            LoRA::new(&mut s, "a", d, cfg.rank_invariant)?,
            LoRA::new(&mut s, "b", d, cfg.rank_invariant)?,
        ];
        Ok(Self {
            store,
            cfg: cfg.clone(),
            item,
            pos,
            blocks,
            gca: gca_layers,
            proj_i,
            proj_d,
            ilora,
            norm_i2d,
            norm_d2d,
        })
    }

    pub fn item_embedding(&self) -> &Embedding {
        &self.item
    }

    fn embed(&self, s: &StreamInput, ctx: &mut Ctx) -> Result<Tensor> {
        let h = mask_mul(
            &(self.item.forward(&s.ids)? + self.pos.forward(&s.pos)?)?,
            &s.mask,
        )?;
        ctx.dropout(&h, self.cfg.dropout)
    }

    fn gca_at(
        &self,
        p: usize,
        h: &mut [Tensor; 3],
        batch: &SeqBatch,
        masks: &GcaMasks,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(layer) = self.gca.iter().find(|g| g.position == p) else {
            return Ok(());
        };
        let kv = match layer.kv_source {
            KvSource::Other => [&h[2], &h[1]],
            KvSource::Merged => [&h[0], &h[0]],
        };
        let inp = GcaInputs {
            queries: [&h[1], &h[2]],
            kv,
            masks: [&masks.a, &masks.b],
            query_valid: [&batch.a.mask, &batch.b.mask],
            query_valid_host: [&batch.a.valid, &batch.b.valid],
        };
        let [a, b] = layer.forward(&inp, ctx)?;
        h[1] = a;
        h[2] = b;
        Ok(())
    }

    /// Final representation per position `[b, l, d]`, mixed by the position's target domain.
    pub fn forward(&self, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let (dtype, dev) = (self.store.dtype(), self.store.device());
        let streams = [&batch.x, &batch.a, &batch.b];
        let self_masks: Vec<AttnMask> = streams
            .iter()
            .map(|s| AttnMask::new(&s.valid, s.len(), true, dtype, dev))
            .collect::<Result<_>>()?;
        let gca_masks = if self.gca.is_empty() {
            None
        } else {
            let kv_valid = |q: usize| match self.cfg_kv() {
                KvSource::Other => &streams[3 - q].valid,
                KvSource::Merged => &streams[0].valid,
            };
            Some(GcaMasks {
                a: AttnMask::new(kv_valid(1), batch.a.len(), true, dtype, dev)?,
                b: AttnMask::new(kv_valid(2), batch.b.len(), true, dtype, dev)?,
            })
        };
        let mut h = [
            self.embed(&batch.x, ctx)?,
            self.embed(&batch.a, ctx)?,
            self.embed(&batch.b, ctx)?,
        ];
        if let Some(m) = &gca_masks {
            self.gca_at(0, &mut h, batch, m, ctx)?;
        }
        for (l, blk) in self.blocks.iter().enumerate() {
            for s in 0..3 {
                let want = ctx.attn_probs.is_some();
                let o = blk.attn.forward(&h[s], &h[s], &self_masks[s], want)?;
                if let (Some(p), Some(rec)) = (o.probs, ctx.attn_probs.as_mut()) {
                    rec.push(AttentionMap {
                        layer: l,
                        stream: STREAMS[s],
                        probs: p,
                    });
                }
                let o = ctx.dropout(&o.out, self.cfg.dropout)?;
                let hs = mask_mul(&blk.norm_attn.forward(&(&h[s] + o)?)?, &streams[s].mask)?;
                let f = ctx.dropout(&blk.ffn.forward(&hs)?, self.cfg.dropout)?;
                let r = ctx.dropout(&blk.dlora[s].forward(&hs)?, self.cfg.dropout)?;
                h[s] = mask_mul(
                    &blk.norm_ffn[s].forward(&((&hs + f)? + r)?)?,
                    &streams[s].mask,
                )?;
            }
            if let Some(m) = &gca_masks {
                self.gca_at(l + 1, &mut h, batch, m, ctx)?;
            }
        }
        // Projector: x into each domain (invariant part) plus the domain's own stream.
        let last = |t: &Tensor| last_position(t, ctx.last_only);
        let hx = &last(&h[0])?;
        let hi = ctx.dropout(&self.proj_i.forward(hx)?, self.cfg.dropout)?;
        let mut out: Option<Tensor> = None;
        for d in 0..2 {
            let gt = &last_position(&batch.target_domain[d], ctx.last_only)?;
            let il = ctx.dropout(&self.ilora[d].forward(hx)?, self.cfg.dropout)?;
            let inv = self.norm_i2d[d].forward(&mask_mul(&((hx + &hi)? + il)?, gt)?)?;
            let hd = &last_position(&h[d + 1], ctx.last_only)?;
            let pd = ctx.dropout(&self.proj_d[d].forward(hd)?, self.cfg.dropout)?;
            let spe = self.norm_d2d[d].forward(&mask_mul(&(hd + pd)?, gt)?)?;
            let hd_out = mask_mul(&(inv + spe)?, gt)?;
            out = Some(match out {
                None => hd_out,
                Some(o) => (o + hd_out)?,
            });
        }
        Ok(out.expect("two domains"))
    }

    fn cfg_kv(&self) -> KvSource {
        self.gca.first().map_or(KvSource::Other, |g| g.kv_source)
    }
}

struct GcaMasks {
    a: AttnMask,
    b: AttnMask,
}
