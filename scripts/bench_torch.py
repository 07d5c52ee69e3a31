#!/usr/bin/python3
"""bench_torch.py - the Ouro forward pass in PyTorch float32, timed.

The yardstick of `make bench`: a plain, reasonable PyTorch implementation
of the model as documented for Ouro (sandwich RMSNorm, rotate-half RoPE,
causal multi-head attention, SiLU MLP, the whole layer stack applied T
times with a norm after every loop) with one KV cache per (loop, layer),
written directly from the model definition. Weights are read from
model.safetensors by the small reader below (numpy, then torch) and widened
to float32 once, before anything is timed.

Measured, each REPEAT times, in this order:
  prefill  all T loops over a prompt of --prompt-tokens ids, returning the
           last position's state (what ouro-generate times as its prefill);
  decode   after a prefill of the --decode-prompt ids, --decode-tokens
           greedy tokens, every one through all T loops: N lm_head products
           and N-1 forward steps, reported as (N-1) / seconds, the way
           ouro-generate -v reports its decode speed;
  batch    for each B of --batch, the first B prompts of --batch-prompts
           (one line of ids each, all of one length) prefilled together,
           then --batch-tokens greedy tokens for each, all B sequences
           through each forward step together: B * tokens / seconds over
           the whole (prefill included), as `make bench` counts the
           engine's runs (--batch-only: these alone).

Prompt ids are read from files of decimal ids. Output, one line per
figure on stdout:
  load seconds=S
  prefill tokens=P seconds=S tokens_per_s=R
  decode tokens=N seconds=S tokens_per_s=R ids=I,I,...
  batch size=B tokens=N seconds=S tokens_per_s=R
  peak_rss_mib=M
Needs python3-torch (Debian) and numpy.

usage: bench_torch.py -m DIR --prompt FILE --decode-prompt FILE
                      [--decode-tokens N] [--steps T] [--threads J]
                      [--repeat R] [--batch B,... --batch-prompts FILE
                      --batch-tokens N [--batch-only]]
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

PROG = "bench_torch.py"


def die(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """name -> float32 numpy array, for a bf16, f16 or f32 safetensors file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            die("%s: too short for a safetensors header" % path)
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            die("%s: header length %d exceeds the file" % (path, n))
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    kinds = {"BF16": 2, "F16": 2, "F32": 4}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = t["dtype"], t["shape"], t["data_offsets"]
        if dt not in kinds:
            die("%s: %s has dtype %s; only BF16, F16 and F32 are read" % (path, name, dt))
        if not 0 <= a <= b <= raw.size or b - a != kinds[dt] * math.prod(shape):
            die("%s: %s: data offsets [%d, %d] do not fit" % (path, name, a, b))
        buf = raw[a:b]
        if dt == "BF16":
            x = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            x = buf.view(np.float16).astype(np.float32)
        else:
            x = np.array(buf.view(np.float32))
        out[name] = x.reshape(shape)
    return out


def read_ids(path):
    with open(path) as f:
        ids = [int(w) for w in f.read().split()]
    if not ids:
        die("%s: no token ids" % path)
    return ids


def read_prompts(path):
    """The prompts of path, one line of ids each, all of one length."""
    with open(path) as f:
        rows = [[int(w) for w in line.split()] for line in f if line.strip()]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        die("%s: expected lines of ids, all of one length" % path)
    return rows


class Ouro:
    """The looped model with a per-(loop, layer) KV cache of cap positions
    for a batch of sequences (alloc)."""

    def __init__(self, d, steps, cap):
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        self.D, self.N = c["hidden_size"], c["num_hidden_layers"]
        self.H, self.KV = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or self.D // self.H
        self.eps, self.T = c["rms_norm_eps"], steps
        t = {k: torch.from_numpy(np.ascontiguousarray(v))
             for k, v in read_safetensors(os.path.join(d, "model.safetensors")).items()}
        self.embed = t["model.embed_tokens.weight"]
        self.head = t.get("lm_head.weight", self.embed)
        self.norm = t["model.norm.weight"]
        self.layers = []
        for l in range(self.N):
            p = "model.layers.%d." % l
            self.layers.append([t[p + n + ".weight"] for n in (
                "input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                "self_attn.v_proj", "self_attn.o_proj", "input_layernorm_2",
                "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                "mlp.down_proj", "post_attention_layernorm_2")])
        inv = c["rope_theta"] ** (-torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd)
        ang = torch.arange(cap, dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat([ang, ang], dim=1)                      # [cap, hd]
        self.cos, self.sin = ang.cos().float(), ang.sin().float()
        self.cap = cap
        self.alloc(1)

    def alloc(self, batch):
        """A cache for batch sequences, [T*N, batch, KV, cap, hd] keys and values."""
        self.kc = self.vc = None
        shape = (self.T * self.N, batch, self.KV, self.cap, self.hd)
        self.kc, self.vc = torch.zeros(shape), torch.zeros(shape)

    def rmsnorm(self, w, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos, s):                                  # x [B, heads, S, hd]
        cos, sin = self.cos[pos:pos + s], self.sin[pos:pos + s]
        h = self.hd // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
        return x * cos + rot * sin

    def layer(self, x, w, slot, pos):                           # x [B, S, D]
        ln1, wq, wk, wv, wo, ln1b, ln2, wg, wu, wd, ln2b = w
        B, S, H, KV, hd = x.shape[0], x.shape[1], self.H, self.KV, self.hd
        a = self.rmsnorm(ln1, x)
        q = self.rope(F.linear(a, wq).view(B, S, H, hd).transpose(1, 2), pos, S)
        k = self.rope(F.linear(a, wk).view(B, S, KV, hd).transpose(1, 2), pos, S)
        v = F.linear(a, wv).view(B, S, KV, hd).transpose(1, 2)
        self.kc[slot, :B, :, pos:pos + S] = k
        self.vc[slot, :B, :, pos:pos + S] = v
        keys, vals = self.kc[slot, :B, :, :pos + S], self.vc[slot, :B, :, :pos + S]
        if KV != H:
            keys = keys.repeat_interleave(H // KV, dim=1)
            vals = vals.repeat_interleave(H // KV, dim=1)
        s = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(hd)  # [B, H, S, pos+S]
        if S > 1:
            mask = torch.ones(S, pos + S, dtype=torch.bool).tril(pos)
            s = s.masked_fill(~mask, float("-inf"))
        o = torch.matmul(torch.softmax(s, dim=-1), vals)        # [B, H, S, hd]
        o = o.transpose(1, 2).reshape(B, S, H * hd)
        x = x + self.rmsnorm(ln1b, F.linear(o, wo))
        m = self.rmsnorm(ln2, x)
        m = F.linear(F.silu(F.linear(m, wg)) * F.linear(m, wu), wd)
        return x + self.rmsnorm(ln2b, m)

    def forward(self, ids, pos):
        """All T loops over ids [B, S] at positions pos..; the states of each
        sequence's last position, [B, D]."""
        h = self.embed[torch.as_tensor(ids)]
        for t in range(self.T):
            for l, w in enumerate(self.layers):
                h = self.layer(h, w, t * self.N + l, pos)
            h = self.rmsnorm(self.norm, h)
        return h[:, -1]


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--decode-prompt", required=True)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", default="")
    ap.add_argument("--batch-prompts")
    ap.add_argument("--batch-tokens", type=int, default=0)
    ap.add_argument("--batch-only", action="store_true")
    a = ap.parse_args()
    if a.decode_tokens < 2 or a.threads < 1 or a.repeat < 1 or a.steps < 0:
        die("--decode-tokens must be at least 2, --threads and --repeat at least 1")
    try:
        batches = [int(b) for b in a.batch.split(",") if b]
    except ValueError:
        die("--batch: expected sizes separated by commas, not '%s'" % a.batch)
    bprompts = read_prompts(a.batch_prompts) if batches else []
    if batches and (a.batch_tokens < 1 or min(batches) < 1 or max(batches) > len(bprompts)):
        die("--batch needs sizes from 1 to the lines of --batch-prompts, and --batch-tokens")
    torch.set_num_threads(a.threads)
    prompt, dprompt = read_ids(a.prompt), read_ids(a.decode_prompt)
    if not a.steps:
        with open(os.path.join(a.model, "config.json")) as f:
            a.steps = json.load(f)["total_ut_steps"]
    t0 = time.perf_counter()
    m = Ouro(a.model, a.steps, max(len(prompt), len(dprompt) + a.decode_tokens,
                                   len(bprompts[0]) + a.batch_tokens if batches else 0))
    print("load seconds=%.3f" % (time.perf_counter() - t0), flush=True)
    with torch.inference_mode():
        for _ in range(0 if a.batch_only else a.repeat):
            t0 = time.perf_counter()
            m.forward([prompt], 0)
            sec = time.perf_counter() - t0
            print("prefill tokens=%d seconds=%.4f tokens_per_s=%.4f"
                  % (len(prompt), sec, len(prompt) / sec), flush=True)
        for _ in range(0 if a.batch_only else a.repeat):
            h = m.forward([dprompt], 0)
            pos, out = len(dprompt), []
            t0 = time.perf_counter()
            for i in range(a.decode_tokens):
                nxt = int(torch.argmax(F.linear(h[0], m.head)))
                out.append(nxt)
                if i + 1 < a.decode_tokens:
                    h = m.forward([[nxt]], pos)
                    pos += 1
            sec = time.perf_counter() - t0
            print("decode tokens=%d seconds=%.4f tokens_per_s=%.4f ids=%s"
                  % (a.decode_tokens, sec, (a.decode_tokens - 1) / sec,
                     ",".join(map(str, out))), flush=True)
        for B in batches:
            m.alloc(B)
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                h = m.forward(bprompts[:B], 0)
                pos = len(bprompts[0])
                for i in range(a.batch_tokens):
                    nxt = torch.argmax(F.linear(h, m.head), dim=-1)     # [B]
                    if i + 1 < a.batch_tokens:
                        h = m.forward(nxt.view(B, 1), pos)
                        pos += 1
                sec = time.perf_counter() - t0
                print("batch size=%d tokens=%d seconds=%.4f tokens_per_s=%.4f"
                      % (B, B * a.batch_tokens, sec, B * a.batch_tokens / sec), flush=True)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print("peak_rss_mib=%.1f" % (int(line.split()[1]) / 1024))


if __name__ == "__main__":
    main()
