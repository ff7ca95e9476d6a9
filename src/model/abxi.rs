//! ABXI (WWW 2025; code DiMarzioBian/ABXI): one shared causal attention block applied to the
//! merged stream x and the per-domain streams a and b, a shared SwiGLU FFN with per-stream
//! low-rank adapters (dLoRA), and a projector from x into each domain with invariant low-rank
//! adapters (iLoRA). Optional GCA layers sit after the embedding (position 0) and after each
//! block (position i); they update streams a and b.

use super::gca::{GcaConfig, GcaInputs, GcaLayer, GcaPacking, KvSource};
use super::input::{SeqBatch, StreamInput};
use super::nn::{
    AttentionMap, AttentionStream, AttnMask, Ctx, Embedding, LayerNorm, LoRA, MultiHeadAttention,
    Packing, ParamStore, Result, SwiGlu, Tensor,
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

    /// The embedded valid rows of a stream, packed by `rows`.
    fn embed(&self, s: &StreamInput, rows: &Packing, ctx: &mut Ctx) -> Result<Tensor> {
        let (ids, pos) = s.packed_ids(rows, self.store.device())?;
        let h = (self.item.forward(&ids)? + self.pos.forward(&pos)?)?;
        ctx.dropout_packed(&h, self.cfg.dropout, rows)
    }

    /// GCA at position `p` on the streams' packed rows (`a` and `b` updated).
    fn gca_at(
        &self,
        p: usize,
        h: &mut [Tensor; 3],
        rows: &[Packing; 3],
        batch: &SeqBatch,
        masks: &GcaMasks,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(layer) = self.gca.iter().find(|g| g.position == p) else {
            return Ok(());
        };
        let (kv, kv_rows) = match layer.kv_source {
            KvSource::Other => ([&h[2], &h[1]], [&rows[2], &rows[1]]),
            KvSource::Merged => ([&h[0], &h[0]], [&rows[0], &rows[0]]),
        };
        let inp = GcaInputs {
            queries: [&h[1], &h[2]],
            kv,
            masks: [&masks.a, &masks.b],
            query_valid: [&batch.a.mask, &batch.b.mask],
            query_valid_host: [&batch.a.valid, &batch.b.valid],
            packed: Some(GcaPacking {
                queries: [&rows[1], &rows[2]],
                kv: kv_rows,
            }),
        };
        let [a, b] = layer.forward(&inp, ctx)?;
        h[1] = a;
        h[2] = b;
        Ok(())
    }

    /// Final representation per position `[b, l, d]`, mixed by the position's target domain
    /// (zero at positions without a target; `[b, 1, d]` of the last position when
    /// `ctx.last_only`).
    ///
    /// The per-position layers run on the valid positions of each stream only ([`Packing`]),
    /// and the projector on the positions with a target; every value is the one the padded
    /// layout gives there, padding positions being masked to zero in ABXI.
    pub fn forward(&self, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let (dtype, dev) = (self.store.dtype(), self.store.device());
        let streams = [&batch.x, &batch.a, &batch.b];
        let rows = streams.map(|s| Packing::of_valid(&s.valid));
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
            self.embed(&batch.x, &rows[0], ctx)?,
            self.embed(&batch.a, &rows[1], ctx)?,
            self.embed(&batch.b, &rows[2], ctx)?,
        ];
        if let Some(m) = &gca_masks {
            self.gca_at(0, &mut h, &rows, batch, m, ctx)?;
        }
        for (l, blk) in self.blocks.iter().enumerate() {
            for s in 0..3 {
                let want = ctx.attn_probs.is_some();
                let pk = &rows[s];
                let o = blk
                    .attn
                    .forward_packed(&h[s], &h[s], pk, pk, &self_masks[s], want)?;
                if let (Some(p), Some(rec)) = (o.probs, ctx.attn_probs.as_mut()) {
                    rec.push(AttentionMap {
                        layer: l,
                        stream: STREAMS[s],
                        probs: p,
                    });
                }
                let o = ctx.dropout_packed(&o.out, self.cfg.dropout, pk)?;
                let hs = blk.norm_attn.forward(&(&h[s] + o)?)?;
                let f = ctx.dropout_packed(&blk.ffn.forward(&hs)?, self.cfg.dropout, pk)?;
                let r = ctx.dropout_packed(&blk.dlora[s].forward(&hs)?, self.cfg.dropout, pk)?;
                h[s] = blk.norm_ffn[s].forward(&((&hs + f)? + r)?)?;
            }
            if let Some(m) = &gca_masks {
                self.gca_at(l + 1, &mut h, &rows, batch, m, ctx)?;
            }
        }
        self.project(batch, &h, &rows, ctx)
    }

    /// The projector on the positions with a target: x into each domain (invariant part) plus
    /// the domain's own stream, scattered to `[b, l, d]` (`[b, 1, d]` when `ctx.last_only`).
    fn project(
        &self,
        batch: &SeqBatch,
        h: &[Tensor; 3],
        rows: &[Packing; 3],
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let by_domain = batch.target_packings(ctx.last_only)?;
        let (bsz, l) = (batch.x.batch(), batch.x.len());
        let mut union: Vec<u32> = by_domain
            .iter()
            .flat_map(|p| p.flat_rows())
            .copied()
            .collect();
        union.sort_unstable();
        let all = Packing::of_rows(bsz, l, union)?;
        let hx_all = all.gather_from(&rows[0], &h[0])?;
        let hi_all = ctx.dropout_packed(&self.proj_i.forward(&hx_all)?, self.cfg.dropout, &all)?;
        let mut out = Vec::with_capacity(2);
        for (d, pk) in by_domain.iter().enumerate() {
            let hx = &pk.gather_from(&rows[0], &h[0])?;
            let hi = pk.gather_from(&all, &hi_all)?;
            let il = ctx.dropout_packed(&self.ilora[d].forward(hx)?, self.cfg.dropout, pk)?;
            let inv = self.norm_i2d[d].forward(&((hx + hi)? + il)?)?;
            let hd = &pk.gather_from(&rows[d + 1], &h[d + 1])?;
            let pd = ctx.dropout_packed(&self.proj_d[d].forward(hd)?, self.cfg.dropout, pk)?;
            let spe = self.norm_d2d[d].forward(&(hd + pd)?)?;
            out.push((inv + spe)?);
        }
        let out: [Tensor; 2] = out.try_into().expect("two domains");
        batch.place_targets(out, &by_domain, ctx.last_only)
    }

    fn cfg_kv(&self) -> KvSource {
        self.gca.first().map_or(KvSource::Other, |g| g.kv_source)
    }
}

struct GcaMasks {
    a: AttnMask,
    b: AttnMask,
}
