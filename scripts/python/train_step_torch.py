"""PyTorch reference of one ABXI (+ GCA) training step, for the Rust-vs-PyTorch throughput bench.

A line-by-line port of the Rust model and step:
  - model:     src/model/abxi.rs (`Abxi::new`, `Abxi::forward`), src/model/gca.rs
               (`GcaModule`, `GcaLayer`), src/model/nn.rs (Linear, LayerNorm, Embedding,
               SwiGlu, LoRA, AttnMask, MultiHeadAttention, Ctx::dropout), src/model/input.rs
               (positions from the end, masks)
  - loss:      src/model/mod.rs `info_nce`, weights as in src/train/mod.rs `batch_loss`
               (per domain 1 / (#targets of that domain in the row) / batch)
  - optimiser: src/train/optim.rs `AdamW::backward_step` (= torch.optim.AdamW's update)
Parameter shapes and module keys match the Rust ParamStore, so the printed parameter count
equals `Model::params().total_params()` for the same config and vocabulary.

Input: the pinned batch data/fixtures/train_step_batch.npz (scripts/python/export_train_batch.py).
Every step trains on that same batch: forward + InfoNCE + backward + AdamW, timed end to end
(including turning the pinned arrays into tensors and building the masks, as `batch_loss` does).

    python3 scripts/python/train_step_torch.py --config configs/abxi-cpu.toml --threads 2
    python3 scripts/python/train_step_torch.py --config configs/abxi-cpu.toml --gca-positions 0
Prints one JSON line: {"impl":"pytorch","config":...,"threads":N,"params":P,"median_step_s":...,...}
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
import tomllib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch ABXI(+GCA) training-step benchmark")
    ap.add_argument("--config", required=True, help="run config TOML (configs/abxi-cpu.toml, ...)")
    ap.add_argument("--gca-positions", default=None,
                    help="override [gca] positions: '0', '0,1', 'none' (default: the config's)")
    ap.add_argument("--batch", default=os.path.join(ROOT, "data", "fixtures", "train_step_batch.npz"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="cpu or cuda: parameters are initialised on the CPU (the same weights "
                         "on either device), then moved")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="init/dropout seed (default: config's)")
    ap.add_argument("--negative-sharing", choices=["per_row", "per_position"], default=None,
                    help="override [train] negative_sharing; per_position scores every position "
                         "against its own [256, d] gather (the row's pinned negatives repeated)")
    ap.add_argument("--attention", choices=["explicit", "sdpa"], default="explicit",
                    help="explicit: the Rust ops (matmul, additive mask, softmax, matmul); "
                         "sdpa: torch's fused scaled_dot_product_attention with the same mask")
    return ap.parse_args()


args = parse_args()

import torch  # noqa: E402  (threads are set before torch does any parallel work)
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.threads)
DEVICE = torch.device(args.device)


def as_tensor(a):
    """A numpy array of the pinned batch as a tensor on the benchmark's device."""
    return torch.from_numpy(a).to(DEVICE)


# --- config (defaults = the Rust serde defaults: src/model/mod.rs, src/model/gca.rs,
# --- src/train/config.rs) --------------------------------------------------------------------

MODEL_DEFAULTS = dict(kind="abxi", d_model=256, heads=2, ffn_hidden=680, layers=1,
                      rank_domain=8, rank_invariant=8, dropout=0.5, max_len=50)
GCA_DEFAULTS = dict(positions=[], gate="sigmoid", layer_norm=True, heads=4, kv_source="other")
OPTIM_DEFAULTS = dict(lr=1e-4, weight_decay=5.0, beta1=0.9, beta2=0.999, eps=1e-8)
TRAIN_DEFAULTS = dict(seed=3407, negatives_per_domain=128, negative_sharing="per_position",
                      temperature=0.75)


def load_config(path, gca_override):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    model = {**MODEL_DEFAULTS, **raw.get("model", {})}
    gca = {**GCA_DEFAULTS, **raw.get("gca", {})}
    optim = {k: raw.get("optim", {}).get(k, v) for k, v in OPTIM_DEFAULTS.items()}
    train = {k: raw.get("train", {}).get(k, v) for k, v in TRAIN_DEFAULTS.items()}
    if gca_override is not None:
        s = gca_override.strip().lower()
        gca["positions"] = [] if s in ("", "none", "[]") else [
            int(t) for t in s.replace(",", " ").replace("[", " ").replace("]", " ").split()]
    gca["positions"] = sorted(set(gca["positions"]))
    if model["kind"] != "abxi":
        sys.exit(f"{path}: model.kind = {model['kind']!r}; this reference implements ABXI only")
    for p in gca["positions"]:
        if p > model["layers"]:
            sys.exit(f"gca.positions contains {p}, but the model has {model['layers']} block(s)")
    return model, gca, optim, train


# --- parameters (src/model/nn.rs ParamStore / Init) -------------------------------------------

class Store:
    """Named parameters counted per module key, initialised like nn.rs `Init`."""

    def __init__(self, seed):
        self.params = []  # (module, name, tensor)
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, module, name, shape, init):
        if init == "zeros":
            t = torch.zeros(shape)
        elif init == "ones":
            t = torch.ones(shape)
        elif init == "normal":  # Normal(0, 0.02)
            t = torch.randn(shape, generator=self.gen) * 0.02
        elif init == "trunc_normal":  # Normal(0, 0.02) truncated to +-2 std (by resampling)
            t = torch.randn(shape, generator=self.gen)
            bad = t.abs() > 2.0
            while bad.any():
                t[bad] = torch.randn(int(bad.sum()), generator=self.gen)
                bad = t.abs() > 2.0
            t = t * 0.02
        else:
            raise ValueError(init)
        p = torch.nn.Parameter(t.float())
        self.params.append((module, name, p))
        return p

    def by_module(self):
        out = {}
        for m, _, p in self.params:
            out[m] = out.get(m, 0) + p.numel()
        return dict(sorted(out.items()))

    def total(self):
        return sum(p.numel() for _, _, p in self.params)


class Scope:
    def __init__(self, store, module, prefix):
        self.store, self.module, self.prefix = store, module, prefix

    def add(self, name, shape, init):
        return self.store.add(self.module, f"{self.prefix}.{name}", shape, init)

    def sub(self, name):
        return Scope(self.store, self.module, f"{self.prefix}.{name}")


class Linear:
    """nn.rs Linear: weight [out, in] ~ N(0, 0.02), optional zero bias."""

    def __init__(self, s, name, d_in, d_out, bias):
        s = s.sub(name)
        self.w = s.add("weight", [d_out, d_in], "normal")
        self.b = s.add("bias", [d_out], "zeros") if bias else None

    def __call__(self, x):
        return F.linear(x, self.w, self.b)


class LayerNorm:
    """nn.rs LayerNorm: last axis, eps 1e-5, biased variance, affine."""

    def __init__(self, s, name, d):
        s = s.sub(name)
        self.w = s.add("weight", [d], "ones")
        self.b = s.add("bias", [d], "zeros")

    def __call__(self, x):
        return F.layer_norm(x, x.shape[-1:], self.w, self.b, 1e-5)


class Embedding:
    def __init__(self, s, name, n, d):
        self.w = s.sub(name).add("weight", [n, d], "trunc_normal")

    def __call__(self, ids):
        return F.embedding(ids, self.w)


class SwiGlu:
    """nn.rs SwiGlu: w3(silu(w2 x) * w1 x), no biases."""

    def __init__(self, s, name, d, hidden):
        s = s.sub(name)
        self.w1 = Linear(s, "w1", d, hidden, False)
        self.w2 = Linear(s, "w2", d, hidden, False)
        self.w3 = Linear(s, "w3", hidden, d, False)

    def __call__(self, x):
        return self.w3(F.silu(self.w2(x)) * self.w1(x))


class LoRA:
    """nn.rs LoRA: x (A B)^T computed as (x B^T) A^T; A [d, r] ~ N(0, 0.02), B [r, d] = 0."""

    def __init__(self, s, name, d, rank):
        s = s.sub(name)
        self.a = s.add("a", [d, rank], "normal")
        self.b = s.add("b", [rank, d], "zeros")

    def __call__(self, x):
        return (x @ self.b.t()) @ self.a.t()


class AttnMask:
    """nn.rs AttnMask: key valid and (causal) j <= i; -1e9 additive bias; rows with no usable
    key give exactly zero output."""

    def __init__(self, key_valid, len_q, causal=True):
        lk = key_valid.shape[1]
        allowed = key_valid[:, None, :].expand(-1, len_q, -1)  # [b, lq, lk]
        if causal:
            tri = torch.ones(len_q, lk, dtype=torch.bool).tril()
            allowed = allowed & tri
        any_ = allowed.any(-1)  # [b, lq]
        self.allowed = allowed[:, None]  # [b, 1, lq, lk]
        self.bias = torch.zeros(allowed.shape).masked_fill_(~allowed, -1e9)[:, None]
        self.row_valid = any_.float()[:, None, :, None]  # [b, 1, lq, 1]
        self.out_valid = any_.float()[:, :, None]  # [b, lq, 1]


class MultiHeadAttention:
    """nn.rs MultiHeadAttention: separate q/k/v/o projections with biases."""

    def __init__(self, s, name, d, heads, impl):
        assert heads > 0 and d % heads == 0, f"width {d} not divisible by {heads} heads"
        s = s.sub(name)
        self.q = Linear(s, "q", d, d, True)
        self.k = Linear(s, "k", d, d, True)
        self.v = Linear(s, "v", d, d, True)
        self.o = Linear(s, "o", d, d, True)
        self.h = heads
        self.impl = impl

    def __call__(self, xq, xkv, mask):
        b, lq, d = xq.shape
        lk = xkv.shape[1]
        h, dh = self.h, d // self.h
        q = self.q(xq).reshape(b, lq, h, dh).transpose(1, 2)
        k = self.k(xkv).reshape(b, lk, h, dh).transpose(1, 2)
        v = self.v(xkv).reshape(b, lk, h, dh).transpose(1, 2)
        if self.impl == "sdpa":
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bias) * mask.row_valid
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh) + mask.bias
            probs = torch.softmax(scores, dim=-1) * mask.row_valid
            ctx = probs @ v
        ctx = ctx.transpose(1, 2).reshape(b, lq, d)
        return self.o(ctx) * mask.out_valid


class GcaModule:
    """gca.rs GcaModule: X' = MHA(X, Y); g = act(Linear_2d->d([X; X'])); out = LN?(X + g X')."""

    def __init__(self, s, d, cfg, impl):
        self.attn = MultiHeadAttention(s, "attn", d, cfg["heads"], impl)
        self.gate = Linear(s, "gate", 2 * d, d, True)
        self.norm = LayerNorm(s, "norm", d) if cfg["layer_norm"] else None
        self.act = cfg["gate"]

    def __call__(self, x, y, mask):
        xp = self.attn(x, y, mask)
        pre = self.gate(torch.cat([x, xp], dim=2))
        g = torch.sigmoid(pre) if self.act == "sigmoid" else torch.tanh(pre)
        out = x + g * xp
        return self.norm(out) if self.norm is not None else out


class GcaLayer:
    def __init__(self, s, position, d, cfg, impl):
        self.position = position
        self.modules = [GcaModule(s.sub("A"), d, cfg, impl), GcaModule(s.sub("B"), d, cfg, impl)]

    def __call__(self, queries, kv, masks, query_valid):
        return [self.modules[i](queries[i], kv[i], masks[i]) * query_valid[i] for i in range(2)]


class Block:
    pass


STREAMS = ["x", "a", "b"]


class Abxi:
    """abxi.rs Abxi, parameters created in the same order and under the same module keys."""

    def __init__(self, cfg, gca, vocab, seed, impl):
        self.cfg, self.gcfg = cfg, gca
        d = cfg["d_model"]
        self.store = st = Store(seed)
        s = Scope(st, "embedding", "embedding")
        self.item = Embedding(s, "item", vocab, d)
        self.pos = Embedding(s, "position", cfg["max_len"] + 1, d)
        self.gca = []

        def make_gca(p):
            if p in gca["positions"]:
                key = f"gca.{p}"
                self.gca.append(GcaLayer(Scope(st, key, key), p, d, gca, impl))

        make_gca(0)
        self.blocks = []
        for l in range(cfg["layers"]):
            blk = Block()
            s = Scope(st, "attention", f"block{l}.attention")
            blk.attn = MultiHeadAttention(s, "mha", d, cfg["heads"], impl)
            blk.norm_attn = LayerNorm(s, "norm", d)
            blk.ffn = SwiGlu(Scope(st, "ffn", f"block{l}"), "ffn", d, cfg["ffn_hidden"])
            s = Scope(st, "dlora", f"block{l}.dlora")
            blk.dlora = [LoRA(s, n, d, cfg["rank_domain"]) for n in STREAMS]
            s = Scope(st, "norm", f"block{l}.norm_ffn")
            blk.norm_ffn = [LayerNorm(s, n, d) for n in STREAMS]
            self.blocks.append(blk)
            make_gca(l + 1)
        s = Scope(st, "projector", "projector")
        self.proj_i = SwiGlu(s, "i", d, cfg["ffn_hidden"])
        self.proj_d = [SwiGlu(s, "a", d, cfg["ffn_hidden"]), SwiGlu(s, "b", d, cfg["ffn_hidden"])]
        self.norm_i2d = [LayerNorm(s, "norm_i2a", d), LayerNorm(s, "norm_i2b", d)]
        self.norm_d2d = [LayerNorm(s, "norm_a2a", d), LayerNorm(s, "norm_b2b", d)]
        s = Scope(st, "ilora", "ilora")
        self.ilora = [LoRA(s, "a", d, cfg["rank_invariant"]), LoRA(s, "b", d, cfg["rank_invariant"])]

    def parameters(self):
        return [p for _, _, p in self.store.params]

    def drop(self, x):
        return F.dropout(x, self.cfg["dropout"], training=True)

    def embed(self, s):
        return self.drop((self.item(s["ids"]) + self.pos(s["pos"])) * s["mask"])

    def gca_at(self, p, h, batch, masks):
        layer = next((g for g in self.gca if g.position == p), None)
        if layer is None:
            return
        kv = [h[2], h[1]] if self.gcfg["kv_source"] == "other" else [h[0], h[0]]
        a, b = layer([h[1], h[2]], kv, masks, [batch["a"]["mask"], batch["b"]["mask"]])
        h[1], h[2] = a, b

    def forward(self, batch):
        streams = [batch["x"], batch["a"], batch["b"]]
        self_masks = [AttnMask(s["valid"], s["valid"].shape[1], True) for s in streams]
        gca_masks = None
        if self.gca:
            def kv_valid(q):
                return (streams[3 - q] if self.gcfg["kv_source"] == "other" else streams[0])["valid"]
            gca_masks = [AttnMask(kv_valid(1), streams[1]["valid"].shape[1], True),
                         AttnMask(kv_valid(2), streams[2]["valid"].shape[1], True)]
        h = [self.embed(s) for s in streams]
        if gca_masks:
            self.gca_at(0, h, batch, gca_masks)
        for l, blk in enumerate(self.blocks):
            for s in range(3):
                o = self.drop(blk.attn(h[s], h[s], self_masks[s]))
                hs = blk.norm_attn(h[s] + o) * streams[s]["mask"]
                f = self.drop(blk.ffn(hs))
                r = self.drop(blk.dlora[s](hs))
                h[s] = blk.norm_ffn[s](hs + f + r) * streams[s]["mask"]
            if gca_masks:
                self.gca_at(l + 1, h, batch, gca_masks)
        hx = h[0]
        hi = self.drop(self.proj_i(hx))
        out = None
        for d in range(2):
            gt = batch["target_domain"][d]
            il = self.drop(self.ilora[d](hx))
            inv = self.norm_i2d[d]((hx + hi + il) * gt)
            hd = h[d + 1]
            pd = self.drop(self.proj_d[d](hd))
            spe = self.norm_d2d[d]((hd + pd) * gt)
            hd_out = (inv + spe) * gt
            out = hd_out if out is None else out + hd_out
        return out


# --- inputs (src/model/input.rs, src/train/mod.rs train_input) --------------------------------

def stream_input(ids, max_pos):
    valid = ids != 0
    # position from the end: 1 at the last real item, counting real items backwards; 0 on pad
    pos = valid.flip(1).long().cumsum(1).flip(1) * valid
    return {"ids": ids, "pos": pos.clamp(max=max_pos), "valid": valid,
            "mask": valid.float()[:, :, None]}


def seq_batch(npz):
    x = as_tensor(npz["x"])
    l = x.shape[1]
    td = as_tensor(npz["target_domain"])
    return {
        "x": stream_input(x, l),
        "a": stream_input(as_tensor(npz["a"]), l),
        "b": stream_input(as_tensor(npz["b"]), l),
        "target_domain": [(td == 1).float()[:, :, None], (td == 2).float()[:, :, None]],
    }


def info_nce(h, item_w, npz, sharing, temperature):
    """src/model/mod.rs info_nce with the positions / weights / negatives of batch_loss."""
    b, l, d = h.shape
    td = as_tensor(npz["target_domain"]).long()  # 0 none, 1 A, 2 B
    flat_td = td.reshape(-1)
    positions = torch.nonzero(flat_td).squeeze(1)  # row-major b*l + t
    counts = torch.stack([(td == 1).sum(1), (td == 2).sum(1)], 1)  # [b, 2]
    rows = positions // l
    dom = flat_td[positions] - 1
    weights = 1.0 / (counts[rows, dom].double() * b)
    targets = as_tensor(npz["target"]).reshape(-1)[positions]
    negs = as_tensor(npz["negatives"])  # [b, k]
    flat = h.reshape(b * l, d)
    hv = flat[positions]  # [n, d]
    pos_logit = (hv * F.embedding(targets, item_w)).sum(1, keepdim=True)  # [n, 1]
    if sharing == "per_row":
        e = F.embedding(negs, item_w)  # [b, k, d]
        allp = h @ e.transpose(1, 2)  # [b, l, k]
        neg_logit = allp.reshape(b * l, -1)[positions]
    else:
        e = F.embedding(negs[rows], item_w)  # [n, k, d]
        neg_logit = (hv[:, None, :] @ e.transpose(1, 2)).squeeze(1)  # [n, k]
    logits = torch.cat([pos_logit, neg_logit], 1) / temperature
    nll = -torch.log_softmax(logits, dim=-1)[:, 0]
    return (nll * weights.float()).sum()


def proc_status_bytes(field):
    """A kB field of /proc/self/status (VmRSS, VmHWM) in bytes; None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main():
    model_cfg, gca_cfg, optim_cfg, train_cfg = load_config(args.config, args.gca_positions)
    sharing = args.negative_sharing or train_cfg["negative_sharing"]
    seed = args.seed if args.seed is not None else int(train_cfg["seed"])
    with np.load(args.batch) as z:
        npz = {k: z[k] for k in z.files}
    vocab = int(npz["vocab_size"])
    k_file = npz["negatives"].shape[1] // 2
    if k_file != train_cfg["negatives_per_domain"]:
        print(f"note: the pinned batch has {k_file} negatives per domain, the config "
              f"{train_cfg['negatives_per_domain']}; the batch's are used", file=sys.stderr)
    torch.manual_seed(seed)
    model = Abxi(model_cfg, gca_cfg, vocab, seed, args.attention)
    # Initialised on the CPU from the seeded generator, then moved: the same weights on any
    # device; masks and other tensors made during the step go to the default device.
    for _, _, p in model.store.params:
        p.data = p.data.to(DEVICE)
    torch.set_default_device(DEVICE)
    params = model.parameters()
    opt = torch.optim.AdamW(params, lr=optim_cfg["lr"],
                            betas=(optim_cfg["beta1"], optim_cfg["beta2"]),
                            eps=optim_cfg["eps"], weight_decay=optim_cfg["weight_decay"])

    def step():
        batch = seq_batch(npz)
        h = model.forward(batch)
        loss = info_nce(h, model.item.w, npz, sharing, train_cfg["temperature"])
        lv = loss.item()
        if not math.isfinite(lv):
            sys.exit(f"loss became {lv}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels have run, not just been launched
        return lv

    # Resident memory as the Rust bench measures it (src/train/step_bench.rs): before the first
    # step, and the high-water mark during the steps ("5" to clear_refs resets it, Linux 4.0+).
    rss_before = proc_status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    losses, times = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        lv = step()
        dt = time.perf_counter() - t0
        losses.append(lv)
        if i >= args.warmup:
            times.append(dt)
    peak_rss = proc_status_bytes("VmHWM")
    print(json.dumps({
        "impl": "pytorch",
        "device": str(DEVICE),
        "config": os.path.relpath(os.path.abspath(args.config), ROOT),
        "gca_positions": gca_cfg["positions"],
        "threads": args.threads,
        "params": model.store.total(),
        "median_step_s": statistics.median(times) if times else None,
        "steps": len(times),
        "warmup": args.warmup,
        "min_step_s": min(times) if times else None,
        "negative_sharing": sharing,
        "attention": args.attention,
        "batch": [int(npz["x"].shape[0]), int(npz["x"].shape[1])],
        "params_by_module": model.store.by_module(),
        "rss_before_steps_bytes": rss_before,
        "peak_rss_bytes": peak_rss,
        "step_peak_rss_bytes": (peak_rss - rss_before) if peak_rss and rss_before else None,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "step_times_s": [round(t, 6) for t in times],
    }))


if __name__ == "__main__":
    main()
