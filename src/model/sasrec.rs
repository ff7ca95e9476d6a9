//! SASRec-style merged-sequence baseline: causal self-attention blocks (post-norm, SwiGLU FFN)
//! over the merged stream x only, with a per-domain output head (layer norm) so each target
//! domain is scored by its own head.
//!
//! With `kind = "sasrec-single"` the same blocks encode each domain's own stream (a for A
//! targets, b for B targets) instead of the merged one: a single-domain model with no
//! cross-domain attention, the reference of AutoCDSR's success/failure diagnostic.
//!
//! With `kind = "bert4rec"` the blocks attend both ways (BERT4Rec) over masked sequences
//! ([`crate::data::cloze`]); the item table has two more rows, the domains' mask tokens. Given
//! AutoCDSR+'s IB config, each domain's subsequence is encoded on its own behind K shared
//! information-bottleneck tokens, whose states are averaged across the two domains after the
//! configured layers: the only way information crosses domains. Each position's output comes
//! from its own domain's stream.
//!
//! GCA inside SASRec works on the merged timeline: at position p the stream is split by the
//! domain of each position's item; the A positions query the B positions (or the whole merged
//! stream, [`KvSource::Merged`]) and vice versa, causally; the two outputs are merged back.

use super::autocdsr::IbConfig;
use super::gca::{GcaConfig, GcaInputs, GcaLayer, KvSource};
use super::input::{SeqBatch, StreamInput};
use super::nn::{
    mask_mul, AttentionMap, AttentionStream, AttnMask, Ctx, Embedding, LayerNorm,
    MultiHeadAttention, Packing, ParamStore, Result, SwiGlu, Tensor,
};
use super::{ModelConfig, ModelKind};

struct Block {
    attn: MultiHeadAttention,
    norm_attn: LayerNorm,
    ffn: SwiGlu,
    norm_ffn: LayerNorm,
}

/// AutoCDSR+'s information-bottleneck tokens.
struct IbTokens {
    /// `[tokens, d]`: their learned initial states.
    init: Embedding,
    comm_layers: Vec<usize>,
}

impl IbTokens {
    fn count(&self) -> usize {
        self.init.weight.dim(0).expect("IB table is 2-D")
    }
}

/// The SASRec baseline (and its single-domain and BERT4Rec variants).
pub struct SasRec {
    pub(crate) store: ParamStore,
    cfg: ModelConfig,
    n_items_a: u32,
    /// The dataset's vocabulary size: a masked model's mask tokens are `vocab` (A) and
    /// `vocab + 1` (B).
    vocab: u32,
    causal: bool,
    ib: Option<IbTokens>,
    item: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    gca: Vec<GcaLayer>,
    head: [LayerNorm; 2],
}

impl SasRec {
    /// Built through [`super::Model::new`], which checks the options first.
    pub(crate) fn new(
        cfg: &ModelConfig,
        gca: &GcaConfig,
        ib: Option<&IbConfig>,
        vocab: usize,
        n_items_a: usize,
        mut store: ParamStore,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let masked = cfg.kind.is_masked();
        let (item, pos) = {
            let mut s = store.scope("embedding", "embedding");
            (
                Embedding::new(&mut s, "item", vocab + if masked { 2 } else { 0 }, d)?,
                Embedding::new(&mut s, "position", cfg.max_len + 1, d)?,
            )
        };
        let ib = match ib {
            None => None,
            Some(c) => {
                let mut s = store.scope("ib", "ib");
                Some(IbTokens {
                    init: Embedding::new(&mut s, "tokens", c.tokens, d)?,
                    comm_layers: c.comm_layers.clone(),
                })
            }
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
            vocab: vocab as u32,
            causal: !masked,
            ib,
            item,
            pos,
            blocks,
            gca: gca_layers,
            head,
        })
    }

    pub fn kind(&self) -> ModelKind {
        self.cfg.kind
    }

    /// AutoCDSR+'s IB token count, if the model has them.
    pub fn ib_tokens(&self) -> Option<usize> {
        self.ib.as_ref().map(IbTokens::count)
    }

    pub fn item_embedding(&self) -> &Embedding {
        &self.item
    }

    fn gca_at(&self, p: usize, h: Tensor, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let Some(layer) = self.gca.iter().find(|g| g.position == p) else {
            return Ok(h);
        };
        let (dtype, dev) = (self.store.dtype(), self.store.device());
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
            Tensor::from_vec(f, (b, l, 1), dev)?.to_dtype(dtype)
        };
        let (ma, mb) = (col(&va)?, col(&vb)?);
        let (xa, xb) = (mask_mul(&h, &ma)?, mask_mul(&h, &mb)?);
        let (mask_a, mask_b, kv) = match layer.kv_source {
            KvSource::Other => (
                AttnMask::new(&vb, x.len(), true, dtype, dev)?,
                AttnMask::new(&va, x.len(), true, dtype, dev)?,
                [&xb, &xa],
            ),
            KvSource::Merged => (
                AttnMask::new(&x.valid, x.len(), true, dtype, dev)?,
                AttnMask::new(&x.valid, x.len(), true, dtype, dev)?,
                [&h, &h],
            ),
        };
        let inp = GcaInputs {
            queries: [&xa, &xb],
            kv,
            masks: [&mask_a, &mask_b],
            query_valid: [&ma, &mb],
            query_valid_host: [&va, &vb],
            packed: None,
        };
        let [a, b] = layer.forward(&inp, ctx)?;
        a + b
    }

    /// Final representation per position `[b, l, d]`, through the target domain's head.
    pub fn forward(&self, batch: &SeqBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let (ha, hb) = if self.cfg.kind == ModelKind::SasrecSingle {
            (
                self.encode(&batch.a, AttentionStream::A, None, ctx)?,
                self.encode(&batch.b, AttentionStream::B, None, ctx)?,
            )
        } else if let Some(ib) = &self.ib {
            let h = self.encode_ib(&batch.x, ib, ctx)?;
            (h.clone(), h)
        } else {
            let h = self.encode(&batch.x, AttentionStream::Merged, Some(batch), ctx)?;
            (h.clone(), h)
        };
        // Each domain's head on the positions with a target there only.
        let targets = batch.target_packings(ctx.last_only)?;
        let a = self.head[0].forward(&targets[0].pack(&ha)?)?;
        let b = self.head[1].forward(&targets[1].pack(&hb)?)?;
        batch.place_targets([a, b], &targets, ctx.last_only)
    }

    /// The blocks over one stream (its attention maps recorded as `stream`); GCA layers run
    /// when `gca_batch` is given (the merged stream).
    fn encode(
        &self,
        x: &StreamInput,
        stream: AttentionStream,
        gca_batch: Option<&SeqBatch>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let mask = AttnMask::new(
            &x.valid,
            x.len(),
            self.causal,
            self.store.dtype(),
            self.store.device(),
        )?;
        // The blocks run on the valid rows; GCA on the padded layout.
        let rows = Packing::of_valid(&x.valid);
        let mut h = self.embed(x, &rows, ctx)?;
        let gca = |p: usize, h: Tensor, ctx: &mut Ctx| -> Result<Tensor> {
            match gca_batch {
                Some(batch) if self.gca.iter().any(|g| g.position == p) => {
                    rows.pack(&self.gca_at(p, rows.unpack(&h)?, batch, ctx)?)
                }
                _ => Ok(h),
            }
        };
        h = gca(0, h, ctx)?;
        for (l, blk) in self.blocks.iter().enumerate() {
            h = self.block(l, blk, &h, &rows, &mask, stream, ctx)?;
            h = gca(l + 1, h, ctx)?;
        }
        rows.unpack(&h)
    }

    /// Item plus position embedding of a stream's valid rows (packed by `rows`), dropout
    /// applied.
    fn embed(&self, x: &StreamInput, rows: &Packing, ctx: &mut Ctx) -> Result<Tensor> {
        let (ids, pos) = x.packed_ids(rows, self.store.device())?;
        let items = match &ctx.item_lookup_leaf {
            Some(leaf) => self.item.forward_as_leaf(&ids, leaf)?,
            None => self.item.forward(&ids)?,
        };
        let h = (items + self.pos.forward(&pos)?)?;
        ctx.dropout_packed(&h, self.cfg.dropout, rows)
    }

    /// One post-norm block over the rows packed by `rows` (attention map recorded as layer `l`
    /// of `stream`).
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        l: usize,
        blk: &Block,
        h: &Tensor,
        rows: &Packing,
        mask: &AttnMask,
        stream: AttentionStream,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let want = ctx.attn_probs.is_some();
        let o = blk.attn.forward_packed(h, h, rows, rows, mask, want)?;
        if let (Some(p), Some(rec)) = (o.probs, ctx.attn_probs.as_mut()) {
            rec.push(AttentionMap {
                layer: l,
                stream,
                probs: p,
            });
        }
        let o = ctx.dropout_packed(&o.out, self.cfg.dropout, rows)?;
        let h = blk.norm_attn.forward(&(h + o)?)?;
        let f = ctx.dropout_packed(&blk.ffn.forward(&h)?, self.cfg.dropout, rows)?;
        blk.norm_ffn.forward(&(&h + f)?)
    }

    /// The domain (0 = A, 1 = B) of an input token, mask tokens included; `None` on padding.
    fn token_domain(&self, id: u32) -> Option<usize> {
        match id {
            0 => None,
            i if i == self.vocab => Some(0),
            i if i == self.vocab + 1 => Some(1),
            i => Some((i > self.n_items_a) as usize),
        }
    }

    /// AutoCDSR+: each domain's subsequence of `x` encoded behind the IB tokens (attention maps
    /// `attn.L.a` / `attn.L.b` of shape `[b, h, K + l_d, K + l_d]`, IB tokens first, `l_d` the
    /// batch's most tokens of that domain), IB states
    /// averaged across domains after the communication layers; returns `[b, l, d]` on the
    /// merged timeline, each position from its own domain's stream.
    fn encode_ib(&self, x: &StreamInput, ib: &IbTokens, ctx: &mut Ctx) -> Result<Tensor> {
        let (bsz, l) = (x.batch(), x.len());
        let (k, d) = ib.init.weight.dims2()?;
        let (dtype, dev) = (self.store.dtype(), self.store.device());
        // Each domain's subsequence, left padded to the batch's longest (at least 1;
        // [`crate::model::autocdsr::ib_streams`] gives the same lengths), and where each merged
        // position landed in the concatenation [stream A | stream B] of its row.
        let mine: Vec<[Vec<usize>; 2]> = x
            .host_ids
            .iter()
            .map(|ids| {
                [0, 1].map(|dom| {
                    (0..l)
                        .filter(|&t| self.token_domain(ids[t]) == Some(dom))
                        .collect()
                })
            })
            .collect();
        let lens = [0, 1].map(|dom| mine.iter().map(|m| m[dom].len()).max().unwrap_or(0).max(1));
        let width = lens[0] + lens[1];
        let mut rows = lens.map(|n| vec![vec![0u32; n]; bsz]);
        let mut landed = vec![0u32; bsz * l];
        for (r, (ids, mine)) in x.host_ids.iter().zip(&mine).enumerate() {
            for (dom, stream) in rows.iter_mut().enumerate() {
                let offset = lens[dom] - mine[dom].len();
                let start = r * width + dom * lens[0] + offset;
                for (j, &t) in mine[dom].iter().enumerate() {
                    stream[r][offset + j] = ids[t];
                    landed[r * l + t] = (start + j) as u32;
                }
            }
        }
        let init = ib.init.weight.unsqueeze(0)?.broadcast_as((bsz, k, d))?;
        let mut hs = Vec::with_capacity(2);
        let mut masks = Vec::with_capacity(2);
        let mut packings = Vec::with_capacity(2);
        for (stream, n) in rows.iter().zip(lens) {
            let s = StreamInput::new(stream, self.cfg.max_len, dtype, dev)?;
            let s_rows = Packing::of_valid(&s.valid);
            let tokens = s_rows.unpack(&self.embed(&s, &s_rows, ctx)?)?;
            let keys: Vec<Vec<bool>> = s
                .valid
                .iter()
                .map(|v| {
                    std::iter::repeat_n(true, k)
                        .chain(v.iter().copied())
                        .collect()
                })
                .collect();
            masks.push(AttnMask::new(&keys, k + n, false, dtype, dev)?);
            // The IB tokens and the valid items: the rows the blocks compute.
            let pk = Packing::of_valid(&keys);
            hs.push(pk.pack(&Tensor::cat(&[&init, &tokens], 1)?)?);
            packings.push(pk);
        }
        for (li, blk) in self.blocks.iter().enumerate() {
            for (dom, stream) in [AttentionStream::A, AttentionStream::B]
                .into_iter()
                .enumerate()
            {
                hs[dom] =
                    self.block(li, blk, &hs[dom], &packings[dom], &masks[dom], stream, ctx)?;
            }
            if ib.comm_layers.contains(&li) {
                let dense = [packings[0].unpack(&hs[0])?, packings[1].unpack(&hs[1])?];
                let mean = ((dense[0].narrow(1, 0, k)? + dense[1].narrow(1, 0, k)?)? * 0.5)?;
                for dom in 0..2 {
                    let h = Tensor::cat(&[&mean, &dense[dom].narrow(1, k, lens[dom])?], 1)?;
                    hs[dom] = packings[dom].pack(&h)?;
                }
            }
        }
        let dense = [packings[0].unpack(&hs[0])?, packings[1].unpack(&hs[1])?];
        let seq = Tensor::cat(
            &[
                &dense[0].narrow(1, k, lens[0])?,
                &dense[1].narrow(1, k, lens[1])?,
            ],
            1,
        )?;
        let landed = Tensor::from_vec(landed, bsz * l, dev)?;
        seq.reshape((bsz * width, d))?
            .index_select(&landed, 0)?
            .reshape((bsz, l, d))
    }
}
