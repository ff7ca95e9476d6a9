//! The project's thin layer over the tensor engine (candle, CPU; see README "Design notes:
//! training engine"). Every model in [`crate::model`] is written against this module only, so a
//! switch of engine stays local to this file.
//!
//! Owns: the parameter store ([`ParamStore`]: named, seeded, counted per module, saved as
//! safetensors), the seeded initialisers, and the layers the models share (linear, layer norm,
//! embedding, SwiGLU feed-forward, low-rank adapter, multi-head attention with masks, dropout).
//! Everything here is differentiable with candle's autograd and works in f32 and f64 (the
//! gradient checks run in f64).

mod attention;
mod fused;
mod matmul;
mod packing;
#[cfg(test)]
mod test_tensors;
mod unfused;

use std::collections::BTreeMap;

pub use attention::{attention, attention_probs, attention_with_probs, weighted_probs_sum};
pub use candle_core::backprop::GradStore;
pub use candle_core::{bail, DType, Device, Tensor, Var, D};
pub use fused::{
    adamw_update, dropout, gated_residual, layer_norm, mask_mul, masked_softmax,
    sampled_softmax_nll, silu_mul, AdamWStep, GateActivation,
};
pub use matmul::{bmm, linear};
pub use packing::{gather_rows, Packing, NO_ROW};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Engine errors, re-exported so callers need not name candle.
pub type Error = candle_core::Error;
pub type Result<T> = candle_core::Result<T>;

/// Calls `f` with the elements of an f32 tensor in row-major order: borrowed from its CPU
/// storage when it is contiguous (a gradient nearly always is), copied otherwise. Reductions
/// over whole gradients (AutoCDSR's Gram matrix) read them in place instead of copying each.
pub fn with_f32_elements<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&data[a..b]));
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

/// `dst += src * c` in place, with the rounding of candle's `dst + src * c` (`c` rounded to
/// f32, then `src * c + 0`, then the sum), skipping the elements where `src` is zero: there
/// the sum is `dst + 0`, which is `dst` unless `dst` is -0 (a gradient summed from +0 never
/// is). For AutoCDSR's combined gradient of the item table, whose `a_cd` gradient is zero but
/// for the rows of the batch's items: no pass that writes the whole table, no new buffer.
/// `dst` must own its buffer alone (a gradient that candle's backward pass made: no other
/// tensor sees the change). f32 CPU tensors of one shape, contiguous.
pub fn add_scaled_in_place(dst: &Tensor, src: &Tensor, c: f64) -> Result<()> {
    if dst.shape() != src.shape() {
        bail!(
            "add_scaled_in_place: shapes {:?} and {:?} differ",
            dst.dims(),
            src.dims()
        );
    }
    dst.inplace_op2(src, &AddScaled(c as f32))
}

struct AddScaled(f32);

impl candle_core::InplaceOp2 for AddScaled {
    fn name(&self) -> &'static str {
        "add-scaled"
    }

    fn cpu_fwd(
        &self,
        dst: &mut candle_core::CpuStorage,
        dst_l: &candle_core::Layout,
        src: &candle_core::CpuStorage,
        src_l: &candle_core::Layout,
    ) -> Result<()> {
        use candle_core::CpuStorage::F32;
        let (F32(d), F32(s)) = (dst, src) else {
            bail!("add_scaled_in_place: f32 tensors only");
        };
        let (Some((d0, d1)), Some((s0, s1))) =
            (dst_l.contiguous_offsets(), src_l.contiguous_offsets())
        else {
            bail!("add_scaled_in_place: contiguous tensors only");
        };
        let c = self.0;
        for (d, &s) in d[d0..d1].iter_mut().zip(&s[s0..s1]) {
            if s != 0.0 {
                *d += s * c + 0.0;
            }
        }
        Ok(())
    }
}

/// `dst += zeros_like(dst).index_add(ids, src, 0) * c` in place, with the rounding of candle's
/// ops (each row's sum of `src` rows in the order of `ids`, from zero, then as
/// [`add_scaled_in_place`]), touching only the rows `ids` names. The item table's combined
/// gradient from the `a_cd` gradient of its looked-up rows ([`LookupLeaf`]), without the
/// table-sized buffers of candle's `index_add`. Same requirements on `dst` as [`add_scaled_in_place`];
/// `ids` u32 `[n]`, `src` f32 `[n, d]`.
pub fn index_add_scaled_in_place(dst: &Tensor, ids: &Tensor, src: &Tensor, c: f64) -> Result<()> {
    let (n, d) = src.dims2()?;
    if ids.dims() != [n] || dst.rank() != 2 || dst.dim(1)? != d {
        bail!(
            "index_add_scaled_in_place: table {:?}, ids {:?} and rows {:?} do not fit",
            dst.dims(),
            ids.dims(),
            src.dims()
        );
    }
    dst.inplace_op3(ids, src, &IndexAddScaled(c as f32))
}

struct IndexAddScaled(f32);

impl candle_core::InplaceOp3 for IndexAddScaled {
    fn name(&self) -> &'static str {
        "index-add-scaled"
    }

    fn cpu_fwd(
        &self,
        dst: &mut candle_core::CpuStorage,
        dst_l: &candle_core::Layout,
        ids: &candle_core::CpuStorage,
        ids_l: &candle_core::Layout,
        src: &candle_core::CpuStorage,
        src_l: &candle_core::Layout,
    ) -> Result<()> {
        use candle_core::CpuStorage::{F32, U32};
        let (F32(table), U32(ids), F32(rows)) = (dst, ids, src) else {
            bail!("index_add_scaled_in_place: an f32 table, u32 ids and f32 rows");
        };
        let (Some((t0, t1)), Some((i0, i1)), Some((r0, r1))) = (
            dst_l.contiguous_offsets(),
            ids_l.contiguous_offsets(),
            src_l.contiguous_offsets(),
        ) else {
            bail!("index_add_scaled_in_place: contiguous tensors only");
        };
        let (table, ids, rows) = (&mut table[t0..t1], &ids[i0..i1], &rows[r0..r1]);
        let d = dst_l.dims()[1];
        // each named row's sum, in first-appearance order, accumulated as index_add does
        let mut slot_of = std::collections::HashMap::new();
        let mut named: Vec<usize> = Vec::new();
        let mut sums: Vec<f32> = Vec::new();
        for (j, &id) in ids.iter().enumerate() {
            let row = id as usize;
            if row * d + d > table.len() {
                bail!("index_add_scaled_in_place: id {id} outside the table");
            }
            let slot = *slot_of.entry(row).or_insert_with(|| {
                named.push(row);
                sums.resize(sums.len() + d, 0.0);
                named.len() - 1
            });
            for (acc, &x) in sums[slot * d..][..d].iter_mut().zip(&rows[j * d..][..d]) {
                *acc += x;
            }
        }
        let c = self.0;
        for (slot, &row) in named.iter().enumerate() {
            for (t, &s) in table[row * d..][..d].iter_mut().zip(&sums[slot * d..][..d]) {
                if s != 0.0 {
                    *t += s * c + 0.0;
                }
            }
        }
        Ok(())
    }
}

/// The rows one table lookup took ([`Embedding::forward_as_leaf`]), as a leaf of the graph
/// instead of a node over the table: a backward pass ends there, and the caller adds the
/// rows' gradient to the table's ([`index_add_scaled_in_place`], or candle's `index_add` as
/// the lookup's backward pass would). AutoCDSR's `a_cd` backward pass then never fills a
/// gradient of the whole item table (KuaiRand-1K: a million rows).
#[derive(Clone, Default)]
pub struct LookupLeaf(std::sync::Arc<std::sync::Mutex<Vec<(Tensor, Var)>>>);

impl LookupLeaf {
    /// The flat ids and the rows (`[n, d]`, a variable) of each lookup made through this leaf.
    pub fn lookups(&self) -> Vec<(Tensor, Var)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Makes the C allocator keep freed memory instead of returning it to the system.
///
/// Candle allocates a fresh buffer for every op's output; most are a few MB, above glibc's
/// default mmap threshold, so each one was mapped, zero-faulted page by page and unmapped
/// again. On the study configuration that cost a quarter of the run time (page faults and
/// `clear_page` in the kernel; 82.7 s -> 62.8 s per epoch at d 32, see README "Design notes:
/// training engine"). Idempotent; a no-op on non-glibc targets.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // The largest threshold glibc accepts on 64-bit (32 MiB); above it buffers are still
        // mapped (full-ranking score matrices), which is rare enough not to matter.
        const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

/// One trainable tensor, named `module.rest` and counted under `module`.
#[derive(Clone)]
pub struct Param {
    /// Module key used for per-module parameter counts (e.g. `embedding`, `gca.0`).
    pub module: String,
    /// Unique full name (e.g. `gca.0.A.attn.q.weight`).
    pub name: String,
    pub var: Var,
}

/// All trainable parameters of a model, in creation order (which fixes the initialisation
/// stream, so a seed fully determines the weights).
pub struct ParamStore {
    params: Vec<Param>,
    dtype: DType,
    device: Device,
    rng: ChaCha8Rng,
}

/// How a new parameter is initialised.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    /// Normal(0, std).
    Normal(f64),
    /// Normal(0, std) truncated to `[-2 std, 2 std]` (ABXI's embedding init).
    TruncNormal(f64),
}

impl ParamStore {
    /// Parameters of `dtype` on `device`, initialised from `rng` on the host (so a seed gives
    /// the same initial weights on every device).
    pub fn new(dtype: DType, device: Device, rng: ChaCha8Rng) -> Self {
        Self {
            params: Vec::new(),
            dtype,
            device,
            rng,
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Creates a parameter; `name` must be unique.
    pub fn add(&mut self, module: &str, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        if self.params.iter().any(|p| p.name == name) {
            candle_core::bail!("parameter {name} defined twice");
        }
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n)
                .map(|_| std * std_normal(&mut self.rng))
                .collect::<Vec<f64>>(),
            Init::TruncNormal(std) => (0..n)
                .map(|_| loop {
                    let z = std_normal(&mut self.rng);
                    if z.abs() <= 2.0 {
                        break std * z;
                    }
                })
                .collect(),
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.params.push(Param {
            module: module.to_string(),
            name: name.to_string(),
            var,
        });
        Ok(out)
    }

    /// A scope that prefixes names and counts parameters under `module`.
    pub fn scope<'a>(&'a mut self, module: &str, prefix: &str) -> Scope<'a> {
        Scope {
            store: self,
            module: module.to_string(),
            prefix: prefix.to_string(),
        }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }

    /// Parameter count per module key, plus nothing else (sum it for the total).
    pub fn param_count(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in &self.params {
            *m.entry(p.module.clone()).or_insert(0) += p.var.elem_count();
        }
        m
    }

    pub fn total_params(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Named tensors (for checkpoints).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }

    /// Overwrites every parameter from `tensors` (checked by name, shape and count), moved to
    /// the store's device.
    pub fn load_named(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for p in &self.params {
            let t = tensors.get(&p.name).ok_or_else(|| {
                Error::Msg(format!("checkpoint has no tensor for parameter {}", p.name))
            })?;
            if t.dims() != p.var.dims() {
                candle_core::bail!(
                    "checkpoint tensor {} has shape {:?}, the model expects {:?}",
                    p.name,
                    t.dims(),
                    p.var.dims()
                );
            }
            p.var
                .set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

/// A naming scope inside a [`ParamStore`].
pub struct Scope<'a> {
    store: &'a mut ParamStore,
    module: String,
    prefix: String,
}

impl Scope<'_> {
    pub fn add(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = format!("{}.{name}", self.prefix);
        self.store.add(&self.module, &full, shape, init)
    }

    /// A nested scope under the same module key.
    pub fn sub(&mut self, name: &str) -> Scope<'_> {
        Scope {
            store: self.store,
            module: self.module.clone(),
            prefix: format!("{}.{name}", self.prefix),
        }
    }

    pub fn dtype(&self) -> DType {
        self.store.dtype
    }
}

/// A standard normal draw (Box-Muller), so initialisation depends only on the seeded stream.
pub fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Forward-pass context: training mode, the dropout random stream, and optional recorders.
pub struct Ctx<'a> {
    pub train: bool,
    pub rng: &'a mut ChaCha8Rng,
    /// When `Some`, GCA layers record `gca.P.D.{x,x_prime,y,mask}` here (detached).
    pub capture: Option<Vec<(String, Tensor)>>,
    /// When `Some`, self-attention layers push their maps here, *not* detached, so a loss may
    /// be put on them (AutoCDSR).
    pub attn_probs: Option<Vec<AttentionMap>>,
    /// When true (evaluation scores only the last position), a model may return `[b, 1, d]`:
    /// its output layers (ABXI's projector, SASRec's heads) then skip the other positions.
    pub last_only: bool,
    /// When `Some`, every GCA module pushes its `Σ |cos(X, X')|` over valid query rows here,
    /// *not* detached (the trainer's `gca.cos_penalty` puts a loss on it).
    pub gca_cos: Option<Vec<AbsCosSum>>,
    /// When `Some`, the merged stream's item lookup is a leaf of the graph recorded here
    /// (AutoCDSR's backward passes stop there; [`LookupLeaf`]).
    pub item_lookup_leaf: Option<LookupLeaf>,
}

/// The sequence a self-attention map was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttentionStream {
    /// The merged sequence of both domains (`x`).
    Merged,
    /// Domain A's own sequence (`a`).
    A,
    /// Domain B's own sequence (`b`).
    B,
}

impl AttentionStream {
    /// `x`, `a`, `b`: the stream's short name in messages and parameter names.
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionStream::Merged => "x",
            AttentionStream::A => "a",
            AttentionStream::B => "b",
        }
    }
}

impl std::fmt::Display for AttentionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One self-attention map recorded by a forward pass ([`Ctx::attn_probs`]).
#[derive(Debug, Clone)]
pub struct AttentionMap {
    /// The block it was computed in (0-based).
    pub layer: usize,
    pub stream: AttentionStream,
    /// Attention probabilities `[batch, heads, q, k]`.
    pub probs: Tensor,
}

/// `Σ |cos(X, X')|` over the valid query rows of one GCA module and the number of those rows.
pub struct AbsCosSum {
    /// Differentiable scalar.
    pub sum: Tensor,
    pub rows: usize,
}

impl<'a> Ctx<'a> {
    /// A plain context (no recorders).
    pub fn new(train: bool, rng: &'a mut ChaCha8Rng) -> Self {
        Self {
            train,
            rng,
            capture: None,
            attn_probs: None,
            last_only: false,
            gca_cos: None,
            item_lookup_leaf: None,
        }
    }

    /// Inverted dropout with rate `p` (identity when not training or `p == 0`).
    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        // One draw from the context's stream seeds the mask of this call (see `dropout`).
        dropout(x, p, self.rng.random::<u64>())
    }

    /// [`Ctx::dropout`] of rows packed by `packing`: the mask the padded tensor would get
    /// there, from the same draw of the context's stream.
    pub fn dropout_packed(&mut self, x: &Tensor, p: f64, packing: &Packing) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        packing.dropout(x, p, self.rng.random::<u64>())
    }
}

/// `y = x W^T (+ b)` over the last axis, any leading shape.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weight ~ Normal(0, 0.02), bias zero (ABXI's `init_weights`).
    pub fn new(s: &mut Scope, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let mut s = s.sub(name);
        let weight = s.add("weight", &[d_out, d_in], Init::Normal(0.02))?;
        let bias = if bias {
            Some(s.add("bias", &[d_out], Init::Zeros)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// Layer normalisation over the last axis (eps 1e-5, affine), one fused op with an analytic
/// backward ([`layer_norm`]) in f32 and f64.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm {
    pub fn new(s: &mut Scope, name: &str, d: usize) -> Result<Self> {
        let mut s = s.sub(name);
        Ok(Self {
            weight: s.add("weight", &[d], Init::Ones)?,
            bias: s.add("bias", &[d], Init::Zeros)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, 1e-5)
    }
}

/// Embedding table; row 0 is padding by convention of the callers (they mask it out).
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(s: &mut Scope, name: &str, n: usize, d: usize) -> Result<Self> {
        let mut s = s.sub(name);
        Ok(Self {
            weight: s.add("weight", &[n, d], Init::TruncNormal(0.02))?,
        })
    }

    /// [`Embedding::forward`] whose rows are a new variable recorded in `leaf` (the table gets
    /// no gradient through this lookup: the caller adds it).
    pub fn forward_as_leaf(&self, ids: &Tensor, leaf: &LookupLeaf) -> Result<Tensor> {
        let mut shape = ids.dims().to_vec();
        shape.push(self.weight.dim(1)?);
        let flat = ids.flatten_all()?.contiguous()?;
        let rows = Var::from_tensor(&self.weight.detach().index_select(&flat, 0)?)?;
        let out = rows.as_tensor().reshape(shape)?;
        leaf.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((flat, rows));
        Ok(out)
    }

    /// Looks up `ids` (u32, any shape) and returns `ids.shape + [d]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut shape = ids.dims().to_vec();
        shape.push(self.weight.dim(1)?);
        self.weight
            .index_select(&ids.flatten_all()?, 0)?
            .reshape(shape)
    }
}

/// SwiGLU feed-forward `W3 (silu(W2 x) * W1 x)`, no biases (ABXI's `FeedForward`).
pub struct SwiGlu {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

impl SwiGlu {
    pub fn new(s: &mut Scope, name: &str, d: usize, hidden: usize) -> Result<Self> {
        let mut s = s.sub(name);
        Ok(Self {
            w1: Linear::new(&mut s, "w1", d, hidden, false)?,
            w2: Linear::new(&mut s, "w2", d, hidden, false)?,
            w3: Linear::new(&mut s, "w3", hidden, d, false)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.w3
            .forward(&silu_mul(&self.w2.forward(x)?, &self.w1.forward(x)?)?)
    }
}

/// Low-rank adapter `x (A B)^T` with `A: [d, r] ~ N(0, 1/50^2)`, `B: [r, d] = 0` (ABXI's LoRA),
/// computed as `(x B^T) A^T` so the `d x d` product is never formed.
pub struct LoRA {
    a: Tensor,
    b: Tensor,
}

impl LoRA {
    pub fn new(s: &mut Scope, name: &str, d: usize, rank: usize) -> Result<Self> {
        let mut s = s.sub(name);
        Ok(Self {
            a: s.add("a", &[d, rank], Init::Normal(0.02))?,
            b: s.add("b", &[rank, d], Init::Zeros)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(&linear(x, &self.b, None)?, &self.a, None)
    }
}

/// Which (query, key) pairs attention may use, for a batch.
///
/// Built on the host from per-position validity: a key is usable when it is valid (not
/// padding) and, if causal, its index is at most the query's. A query row with no usable key
/// gets an all-zero output (never NaN): [`masked_softmax`] zeroes its probabilities (it reads
/// that from `bias`) and `out_valid` its output.
pub struct AttnMask {
    /// Additive bias `[batch, 1, len_q, len_k]`: 0 where allowed, -1e9 where not.
    pub bias: Tensor,
    /// `[batch, len_q, 1]`: 1 where the query row has at least one usable key.
    pub out_valid: Tensor,
}

impl AttnMask {
    /// `key_valid[b][j]`: key `j` of sample `b` is a real item. `len_q` query rows.
    pub fn new(
        key_valid: &[Vec<bool>],
        len_q: usize,
        causal: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let b = key_valid.len();
        let len_k = key_valid.first().map_or(0, |v| v.len());
        let mut bias = vec![0f32; b * len_q * len_k];
        let mut row = vec![0f32; b * len_q];
        for (bi, kv) in key_valid.iter().enumerate() {
            for i in 0..len_q {
                let mut any = false;
                for (j, &ok) in kv.iter().enumerate() {
                    let allowed = ok && (!causal || j <= i);
                    any |= allowed;
                    if !allowed {
                        bias[(bi * len_q + i) * len_k + j] = -1e9;
                    }
                }
                row[bi * len_q + i] = if any { 1.0 } else { 0.0 };
            }
        }
        Ok(Self {
            bias: Tensor::from_vec(bias, (b, 1, len_q, len_k), device)?.to_dtype(dtype)?,
            out_valid: Tensor::from_vec(row, (b, len_q, 1), device)?.to_dtype(dtype)?,
        })
    }
}

/// Multi-head attention (PyTorch `nn.MultiheadAttention` layout: separate q/k/v/out
/// projections with biases). Self-attention passes the same tensor as query and key/value.
/// The heads run as one fused node ([`attention`]); when the probabilities are asked for
/// (AutoCDSR puts a loss on them) they come from [`attention_with_probs`] as a second graph
/// node.
pub struct MultiHeadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

#[cfg(test)]
thread_local! {
    /// The tests' reference for [`MultiHeadAttention`]: the probabilities from their own node
    /// ([`attention_probs`], computed again) instead of [`attention_with_probs`].
    pub(crate) static SEPARATE_PROBS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Attention output plus, when asked for, the attention probabilities `[batch, heads, q, k]`.
pub struct AttnOutput {
    pub out: Tensor,
    pub probs: Option<Tensor>,
}

impl MultiHeadAttention {
    pub fn new(s: &mut Scope, name: &str, d: usize, heads: usize) -> Result<Self> {
        if heads == 0 || d % heads != 0 {
            candle_core::bail!("attention width {d} is not divisible by {heads} heads");
        }
        let mut s = s.sub(name);
        Ok(Self {
            q: Linear::new(&mut s, "q", d, d, true)?,
            k: Linear::new(&mut s, "k", d, d, true)?,
            v: Linear::new(&mut s, "v", d, d, true)?,
            o: Linear::new(&mut s, "o", d, d, true)?,
            heads,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// `xq: [b, lq, d]`, `xkv: [b, lk, d]`. Rows without a usable key output exactly zero.
    pub fn forward(
        &self,
        xq: &Tensor,
        xkv: &Tensor,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<AttnOutput> {
        let (q, k, v) = (
            self.q.forward(xq)?,
            self.k.forward(xkv)?,
            self.v.forward(xkv)?,
        );
        let (ctx, probs) = self.attend(&q, &k, &v, mask, want_probs)?;
        let out = mask_mul(&self.o.forward(&ctx)?, &mask.out_valid)?;
        Ok(AttnOutput { out, probs })
    }

    /// [`MultiHeadAttention::forward`] of packed rows: `xq: [nq, d]` packed by `q_rows`,
    /// `xkv: [nk, d]` by `kv_rows`; the projections run on the packed rows, the heads on the
    /// padded layout (zeros at padding); the output is packed like `xq`. The packed rows'
    /// values and the probabilities at valid queries are those of `forward` on the padded
    /// tensors.
    pub fn forward_packed(
        &self,
        xq: &Tensor,
        xkv: &Tensor,
        q_rows: &Packing,
        kv_rows: &Packing,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<AttnOutput> {
        let q = q_rows.unpack(&self.q.forward(xq)?)?;
        let k = kv_rows.unpack(&self.k.forward(xkv)?)?;
        let v = kv_rows.unpack(&self.v.forward(xkv)?)?;
        let (ctx, probs) = self.attend(&q, &k, &v, mask, want_probs)?;
        let ctx = q_rows.pack(&ctx)?;
        let out = mask_mul(&self.o.forward(&ctx)?, &q_rows.pack(&mask.out_valid)?)?;
        Ok(AttnOutput { out, probs })
    }

    /// The heads' context `[b, lq, d]` from projected `q`, `k`, `v` (and the probabilities).
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let d = q.dim(2)?;
        let h = self.heads;
        let scale = 1.0 / ((d / h) as f64).sqrt();
        // The probabilities, when asked for, are a second node over q and k: the output's
        // node keeps its own backward, and a loss on the probabilities (AutoCDSR) adds only
        // their gradient with respect to q and k. Both nodes share one computation of them.
        #[cfg(test)]
        if want_probs && SEPARATE_PROBS.with(|s| s.get()) {
            let probs = attention_probs(q, k, &mask.bias, h, scale)?;
            let ctx = attention(q, k, v, &mask.bias, h, scale)?;
            return Ok((ctx, Some(probs)));
        }
        if want_probs {
            let (ctx, probs) = attention_with_probs(q, k, v, &mask.bias, h, scale)?;
            Ok((ctx, Some(probs)))
        } else {
            Ok((attention(q, k, v, &mask.bias, h, scale)?, None))
        }
    }
}

/// The last position `[b, 1, ..]` of a `[b, l, ..]` tensor when `last_only`, else itself.
pub fn last_position(t: &Tensor, last_only: bool) -> Result<Tensor> {
    if last_only {
        let l = t.dim(1)?;
        t.narrow(1, l - 1, 1)
    } else {
        Ok(t.clone())
    }
}

/// Builds a `[rows, cols]`-shaped `f` tensor column `[.., 1]` from a host vector of 0/1.
pub fn column(values: &[f32], shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), shape, device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::test_tensors::{gap, seeded};
    use super::*;

    /// The engine's backward pass (candle-core with the vendored `backprop.rs`, which stores a
    /// node's first gradient instead of adding it to zeros) against closed forms: fan-in (x
    /// reaches the loss four ways), subtraction and negation (the `accumulate_neg` rules),
    /// broadcast, transpose and narrow (views whose gradients are strided).
    #[test]
    fn backprop_accumulates_fan_in_views_and_subtractions() {
        let x = Var::from_tensor(&seeded(&[3, 4], 30)).unwrap();
        let y = Var::from_tensor(&seeded(&[3, 4], 31)).unwrap();
        let r = Var::from_tensor(&seeded(&[4], 32)).unwrap();
        let w = seeded(&[3, 2], 33);
        let (xt, yt) = (x.as_tensor(), y.as_tensor());
        // c = -(x + y - x y) + x + r = x y - y + r; the loss reads columns 1 and 2 of c
        // through a transposed copy of c.
        let b = ((xt + yt).unwrap() - (xt * yt).unwrap()).unwrap();
        let c = ((b.neg().unwrap() + xt).unwrap())
            .broadcast_add(r.as_tensor())
            .unwrap();
        let e = c.t().unwrap().t().unwrap().narrow(1, 1, 2).unwrap();
        let g = (e * &w).unwrap().sum_all().unwrap().backward().unwrap();
        // dL/dc is w in columns 1..3 and zero elsewhere.
        let zero = Tensor::zeros((3, 1), DType::F64, &Device::Cpu).unwrap();
        let wc = Tensor::cat(&[&zero, &w, &zero], 1).unwrap();
        let expect_x = (&wc * yt).unwrap();
        let expect_y = (&wc * (xt - 1.0).unwrap()).unwrap();
        let expect_r = wc.sum(0).unwrap();
        for (v, expect) in [(&x, &expect_x), (&y, &expect_y), (&r, &expect_r)] {
            let got = g.get(v).unwrap();
            assert!(got.is_contiguous(), "a parameter's gradient is contiguous");
            assert_eq!(got.dims(), v.dims());
            assert!(gap(got, expect) < 1e-12, "gradient {got} != {expect}");
        }
        // A tensor that reaches the loss only through a negation: its gradient is -dL/dout.
        let z = Var::from_tensor(&seeded(&[5], 34)).unwrap();
        let v = seeded(&[5], 35);
        let gz = (z.as_tensor().neg().unwrap() * &v)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(gap(gz.get(&z).unwrap(), &v.neg().unwrap()), 0.0);
    }
}
