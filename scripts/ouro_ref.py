#!/usr/bin/python3
"""ouro_ref.py - the independent reference of the Ouro looped language model.

This is the yardstick the C implementation is measured against, so it is
written for obviousness, not speed: plain NumPy, float64 throughout, one
function per step of the model definition, and its own safetensors reader
and writer (no safetensors or torch package).

As a module it provides:
  parse_safetensors(buf, pos)   one safetensors image -> tensors, metadata, end
  read_safetensors(path)        a whole file (memory-mapped)
  read_records(path)            a stream of records back to back ('-': stdin)
  write_safetensors(f, ...)     the Hugging Face layout (sorted, padded header)
  load_model(dir)               config.json + model.safetensors or its index
  forward(model, ids, steps)    hidden states [steps, n, D], float64
  gate(model, hidden)           exit-gate logits, exit pdf and cdf, each [T, n]
  load_lm_head(dir)             the language-model head [V, D] (tied or not)
  log_softmax, topk_logprobs    log-probabilities, the K most likely tokens
  sample(logits, n, ...)        the next token: greedy, temperature, top-k,
                                top-p, min-p, counter-based splitmix64 draw
  sample_distance(...)          how near the reference is to another token
  exit_choice(p, cdf, hidden, rule)  exit steps and exit states of a rule
  lm_exit_choice(head, hidden, rule) exit steps of the rules of the next-token
                                distribution (KL, entropy, stable argmax)
  generate_early(m, head, ...)  greedy generation stopping loops by those rules
  step_losses(head, hidden, tokens)  per-step next-token cross-entropy [T, n-1]
  stage2_loss(w, b, hidden, losses)  the Stage II focused adaptive gate loss
  rolling_windows(tokens, ...)  lm-evaluation-harness loglikelihood_rolling windows
  eval_ppl(...), eval_choice(...)  per-loop, per-rule NLL and choice accuracy

As a program:
  ouro_ref.py check --model DIR [--steps T] --ids FILE --records FILE [--tol X]
      compares the records written by ouro-forward with the reference;
      exit 0 if every step of every record is within the tolerance, 1 if
      not, 2 on bad usage or unreadable input.
  ouro_ref.py forward --model DIR [--steps T] --ids FILE [--out FILE]
      writes the reference's own records (tokens I32 [n], hidden F32
      [T, n, D]) in the same stream format.
  ouro_ref.py gate --model DIR [--gate FILE] --records FILE [--tol X]
      recomputes ouro-gate's tensors from the records' hidden under their
      ouro.exit_rule; exit 0 if all are within the tolerance (absolute)
      and every exit step is the same, 1 if not. Under the rules of the
      next-token distribution (kl, entropy, stable; the model's lm_head),
      positions within 1e-6 of the rule's value are excepted and counted.
  ouro_ref.py generate --model DIR --ids FILE -n N --rule RULE
      prints as JSON {"ids", "loops", "near"}: greedy generation that
      really stops each position's loops under RULE ('kl EPS', 'entropy H'
      or 'stable K'), as ouro-generate --kv full; near is the index of the
      first token decided within 1e-6 of the rule's value, or null.
  ouro_ref.py stage2 --model DIR [--gate FILE] --records FILE [-q Q]
      prints the Stage II loss of a gate on ouro-forward records and the
      mean exit step at threshold Q.
  ouro_ref.py eval-ppl --model DIR --ids FILE --window W [--context C]
             [--prefix ID] [--beta B] [-q Q,...] [-e EPS,...] [--kl EPS,...]
             [--entropy H,...] [--stable K,...]
      prints as JSON the means ouro-eval ppl reports, one document of ids
      a line.
  ouro_ref.py eval-choice --model DIR --requests FILE --window W [-q ..] [-e ..] [--kl ..]
             [--entropy ..] [--stable ..]
      prints as JSON the accuracies ouro-eval choice reports, for requests
      already tokenized.
  ouro_ref.py selftest
      checks the reference against itself: token-by-token decoding with
      one KV slot per (loop, layer) against the batched pass, the
      one-token case against a hand-written v_proj path, GQA against the
      equivalent MHA model, RoPE's relative-position property, causality,
      the gate's distribution, generation with early exit against greedy
      decoding through the batched pass, and the safetensors reader and
      writer.

Shapes are written [d0, d1, ...], row-major, outermost first. Linear
weights are PyTorch's [out, in]: y = x W^T.
"""

import argparse
import io
import json
import mmap
import os
import struct
import sys

import numpy as np

PROG = "ouro_ref.py"

# safetensors dtype name -> NumPy storage type (little-endian). BF16 is kept
# as its raw 16 bits and widened exactly by bf16_to_f32().
STORAGE = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class FormatError(Exception):
    """A file or record that does not follow its format."""


class Tensor:
    """One stored tensor: dtype name, shape and the data in storage form."""

    def __init__(self, dtype, shape, data):
        self.dtype = dtype      # "F32", "BF16", ...
        self.shape = shape      # tuple of ints
        self.data = data        # ndarray of STORAGE[dtype], reshaped to shape

    def floats(self, dt=np.float64):
        """The values as a float array of type dt (bf16 widened exactly)."""
        if self.dtype == "BF16":
            return bf16_to_f32(self.data).astype(dt)
        if self.dtype not in FLOAT_DTYPES:
            raise FormatError("tensor of dtype %s is not floating point"
                              % self.dtype)
        return self.data.astype(dt)

    def ints(self):
        if self.dtype in FLOAT_DTYPES:
            raise FormatError("tensor of dtype %s is not integer" % self.dtype)
        return self.data.astype(np.int64)


def bf16_to_f32(raw):
    """Exact widening: the 16 bits are the high half of a float32."""
    return (np.asarray(raw, dtype=np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """Rounds float32 values to bf16 (nearest, ties to even); returns uint16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def encode(x, dtype):
    """Float values -> storage array for dtype "F32", "F16" or "BF16"."""
    if dtype == "BF16":
        return f32_to_bf16(np.asarray(x, dtype=np.float32))
    return np.asarray(x).astype(STORAGE[dtype])


# ---- safetensors ---------------------------------------------------------

def parse_safetensors(buf, pos=0, what="input"):
    """Parses the safetensors image that starts at buf[pos].

    buf is any object supporting the buffer protocol (bytes, mmap). Every
    size and offset is checked against the real length before use. Returns
    (tensors, metadata, end): tensors maps name -> Tensor (views into buf),
    metadata the "__metadata__" strings, end the offset just past the data
    section, where the next record of a stream starts (the data section's
    length is the largest end offset of its tensors).
    """
    view = memoryview(buf)
    total = len(view)
    if total - pos < 8:
        raise FormatError("%s: truncated: %d bytes where an 8-byte header "
                          "length was expected" % (what, total - pos))
    (hlen,) = struct.unpack_from("<Q", view, pos)
    if hlen > total - pos - 8:
        raise FormatError("%s: header length %d exceeds the %d bytes that "
                          "follow" % (what, hlen, total - pos - 8))
    try:
        header = json.loads(bytes(view[pos + 8:pos + 8 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError("%s: header is not JSON: %s" % (what, e))
    if not isinstance(header, dict):
        raise FormatError("%s: header is not a JSON object" % what)
    base = pos + 8 + hlen
    avail = total - base

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in metadata.items()):
        raise FormatError("%s: __metadata__ is not an object of strings" % what)

    tensors = {}
    dlen = 0
    for name, info in header.items():
        if not isinstance(info, dict):
            raise FormatError("%s: entry %s is not an object" % (what, name))
        dtype = info.get("dtype")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if dtype not in STORAGE:
            raise FormatError("%s: tensor %s has unknown dtype %r"
                              % (what, name, dtype))
        if (not isinstance(shape, list) or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in shape)):
            raise FormatError("%s: tensor %s has invalid shape %r"
                              % (what, name, shape))
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool)
                        for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise FormatError("%s: tensor %s has invalid data_offsets %r"
                              % (what, name, offs))
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * STORAGE[dtype].itemsize
        if offs[1] - offs[0] != nbytes:
            raise FormatError("%s: tensor %s: shape %s of %s needs %d bytes, "
                              "data_offsets give %d" % (what, name, shape, dtype,
                                                        nbytes, offs[1] - offs[0]))
        if offs[1] > avail:
            raise FormatError("%s: tensor %s ends at %d, past the %d bytes of "
                              "data" % (what, name, offs[1], avail))
        data = np.frombuffer(view, dtype=STORAGE[dtype], count=numel,
                             offset=base + offs[0]).reshape(shape)
        tensors[name] = Tensor(dtype, tuple(shape), data)
        dlen = max(dlen, offs[1])
    return tensors, metadata, base + dlen


def read_safetensors(path):
    """Reads one safetensors file (memory-mapped); returns (tensors, metadata)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    tensors, metadata, _ = parse_safetensors(buf, 0, path)
    return tensors, metadata


def read_records(path):
    """Reads a stream of records ('-': stdin); returns [(tensors, metadata)]."""
    if path == "-":
        buf = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            buf = f.read()
    records = []
    pos = 0
    while pos < len(buf):
        tensors, metadata, pos = parse_safetensors(
            buf, pos, "%s: record %d" % (path, len(records)))
        records.append((tensors, metadata))
    return records


def write_safetensors(f, tensors, metadata=None):
    """Writes one safetensors image to the binary file f.

    tensors maps name -> (dtype name, array in storage form, e.g. from
    encode()). As Hugging Face writes them: tensors sorted by name, data
    contiguous in that order, the header padded with spaces to a multiple
    of 8 bytes. Returns the number of bytes written.
    """
    header = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    blobs = []
    off = 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        arr = np.ascontiguousarray(arr, dtype=STORAGE[dtype])
        blob = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for blob in blobs:
        f.write(blob)
    return 8 + len(text) + off


# ---- the model -------------------------------------------------------------

class Model:
    """Hyper-parameters from config.json and the weights as float64.

    w["embed"]   [V, D] stored form (rows widened on use)
    w["norm"]    [D]
    w["gate_w"]  [D], w["gate_b"] scalar
    layers[l]    dict: q [H*hd, D], k [KV*hd, D], v [KV*hd, D], o [D, H*hd],
                 gate [F, D], up [F, D], down [D, F], in1, in2, post1, post2 [D]
    """

    def __init__(self, config, weights, where="model"):
        c = config
        self.config = c
        self.where = where

        def need(key):
            if key not in c or c[key] is None:
                raise FormatError("%s: config.json has no %s" % (where, key))
            return c[key]

        self.V = int(need("vocab_size"))
        self.D = int(need("hidden_size"))
        self.F = int(need("intermediate_size"))
        self.N = int(need("num_hidden_layers"))
        self.H = int(need("num_attention_heads"))
        self.KV = int(c.get("num_key_value_heads") or self.H)
        hd = c.get("head_dim")
        self.hd = int(hd) if hd is not None else self.D // self.H
        self.theta = float(need("rope_theta"))
        self.eps = float(need("rms_norm_eps"))
        self.T = int(need("total_ut_steps"))
        self.tie = bool(c.get("tie_word_embeddings", False))
        self.max_pos = int(c.get("max_position_embeddings") or 0)
        for key, val in (("vocab_size", self.V), ("hidden_size", self.D),
                         ("intermediate_size", self.F),
                         ("num_hidden_layers", self.N),
                         ("num_attention_heads", self.H),
                         ("num_key_value_heads", self.KV),
                         ("head_dim", self.hd), ("total_ut_steps", self.T)):
            if val <= 0:
                raise FormatError("%s: config.json: %s is %d, expected > 0"
                                  % (where, key, val))
        if self.H % self.KV:
            raise FormatError("%s: config.json: num_attention_heads %d is not "
                              "a multiple of num_key_value_heads %d"
                              % (where, self.H, self.KV))
        if self.hd % 2:
            raise FormatError("%s: config.json: head_dim %d is odd"
                              % (where, self.hd))

        D, F, H, KV, hd = self.D, self.F, self.H, self.KV, self.hd

        def get(name, shape, floats=True):
            if name not in weights:
                raise FormatError("%s: no tensor %s" % (where, name))
            t = weights[name]
            if tuple(t.shape) != tuple(shape):
                raise FormatError("%s: tensor %s has shape %s, expected %s"
                                  % (where, name, list(t.shape), list(shape)))
            return t.floats() if floats else t

        self.w = {
            "embed": get("model.embed_tokens.weight", (self.V, D), False),
            "norm": get("model.norm.weight", (D,)),
            "gate_w": get("model.early_exit_gate.weight", (1, D))[0],
            "gate_b": get("model.early_exit_gate.bias", (1,))[0],
        }
        self.layers = []
        for l in range(self.N):
            p = "model.layers.%d." % l
            self.layers.append({
                "q": get(p + "self_attn.q_proj.weight", (H * hd, D)),
                "k": get(p + "self_attn.k_proj.weight", (KV * hd, D)),
                "v": get(p + "self_attn.v_proj.weight", (KV * hd, D)),
                "o": get(p + "self_attn.o_proj.weight", (D, H * hd)),
                "gate": get(p + "mlp.gate_proj.weight", (F, D)),
                "up": get(p + "mlp.up_proj.weight", (F, D)),
                "down": get(p + "mlp.down_proj.weight", (D, F)),
                "in1": get(p + "input_layernorm.weight", (D,)),
                "in2": get(p + "input_layernorm_2.weight", (D,)),
                "post1": get(p + "post_attention_layernorm.weight", (D,)),
                "post2": get(p + "post_attention_layernorm_2.weight", (D,)),
            })

    def embed(self, ids):
        """[n] ids -> [n, D] float64 rows of the embedding."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.V):
            bad = ids[(ids < 0) | (ids >= self.V)][0]
            raise FormatError("token id %d is out of range [0, %d)"
                              % (bad, self.V))
        return Tensor(self.w["embed"].dtype, (len(ids), self.D),
                      self.w["embed"].data[ids]).floats()


def load_model(path):
    """Loads a Hugging Face Ouro directory (config.json plus
    model.safetensors or model.safetensors.index.json and its shards)."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    weights = {}
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(single):
        weights, _ = read_safetensors(single)
    elif os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            wmap = json.load(f)["weight_map"]
        shards = {}
        for name, shard in sorted(wmap.items()):
            if shard not in shards:
                shards[shard], _ = read_safetensors(os.path.join(path, shard))
            if name not in shards[shard]:
                raise FormatError("%s: weight_map puts %s in %s, which does not "
                                  "hold it" % (index, name, shard))
            weights[name] = shards[shard][name]
    else:
        raise FormatError("%s: neither model.safetensors nor "
                          "model.safetensors.index.json" % path)
    return Model(config, dequantize(weights, config), path)


def dequantize(weights, config):
    """Replaces every quantized matrix by its float values: q8_0 pairs
    (NAME.q8_0 int8 [out, in], NAME.q8_0_scale [out, in/32]) by NAME = q *
    scale, each scale applying to a block of 32 consecutive weights of a row;
    q4 pairs (NAME.q4, NAME.q4_scale) by dequantize_q4, cut to the row width
    config.json gives the matrix (the formats ouro-quantize writes)."""
    hd = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    out = {}
    for name, value in weights.items():
        if name.endswith(".q8_0_scale") or name.endswith(".q4_scale"):
            continue
        if name.endswith(".q8_0"):
            scale = weights[name + "_scale"].floats(np.float32)
            q = value.ints().astype(np.float32)
            blocks = q.reshape(q.shape[0], -1, 32) * scale[:, :, None]
            out[name[:-len(".q8_0")]] = Tensor("F32", tuple(q.shape),
                                               blocks.reshape(q.shape))
        elif name.endswith(".q4"):
            width = (config["num_attention_heads"] * hd if "o_proj" in name else
                     config["intermediate_size"] if "down_proj" in name else
                     config["hidden_size"])
            out[name[:-len(".q4")]] = dequantize_q4(value.ints(),
                                                    weights[name + "_scale"].ints(), width)
        else:
            out[name] = value
    return out


def dequantize_q4(q, h, width=None):
    """q4 values q [out, nsb*128] and super-block headers h [out, nsb*16]
    (uint8) -> Tensor F32 [out, width] (width: nsb*256 unless given). A
    super-block is 8 sub-blocks of 32 weights; sub-block j's weight i is
    v * d*sc[j] - dmin*mn[j], v its 4-bit value (byte 16j + i%16 of the
    super-block's 128, low nibble for i < 16), d and dmin the header's two
    F16, sc[j] the low 6 bits of header byte 4+j, mn[j] its top 2 bits plus
    4 more bits from nibble j%2 of byte 12 + j//2. Each product is exact in
    float32 and the difference is rounded once, as ouro rounds it."""
    rows = q.shape[0]
    nsb = h.shape[1] // 16
    h = h.reshape(rows, nsb, 16)
    dd = h[:, :, 0:4].astype(np.uint8).copy().view(np.float16).astype(np.float32)
    d, dmin = dd[:, :, 0], dd[:, :, 1]
    hb = h[:, :, 4:12]
    sc = hb & 63
    mn = (hb >> 6) | (((h[:, :, 12 + np.arange(8) // 2] >> (4 * (np.arange(8) % 2))) & 15) << 2)
    ds = (d[:, :, None] * sc.astype(np.float32)).astype(np.float32)      # [rows, nsb, 8]
    ms = (dmin[:, :, None] * mn.astype(np.float32)).astype(np.float32)
    b = q.reshape(rows, nsb, 8, 16)
    v = np.concatenate([b & 15, b >> 4], axis=3).astype(np.float32)      # [rows, nsb, 8, 32]
    w = (v * ds[:, :, :, None]).astype(np.float32) - ms[:, :, :, None]
    w = w.astype(np.float32).reshape(rows, nsb * 256)
    return Tensor("F32", (rows, w.shape[1] if width is None else width),
                  w[:, :w.shape[1] if width is None else width])


# ---- forward pass ---------------------------------------------------------

def rmsnorm(weight, x, eps):
    """x [..., D] -> x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_tables(positions, hd, theta):
    """cos, sin [n, hd] for the rotate-half form: the angle of pair i
    (elements i and i + hd/2) is position * theta^(-2i/hd)."""
    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    ang = np.concatenate([ang, ang], axis=1)
    return np.cos(ang), np.sin(ang)


def rope(x, cos, sin):
    """x [n, heads, hd] rotated: x*cos + rotate_half(x)*sin,
    rotate_half([x1, x2]) = [-x2, x1]."""
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def softmax(s):
    s = s - np.max(s, axis=-1, keepdims=True)
    e = np.exp(s)
    return e / np.sum(e, axis=-1, keepdims=True)


def attention(m, L, x, cos, sin):
    """Causal self-attention of one layer over x [n, D] -> [n, D]."""
    n = x.shape[0]
    H, KV, hd = m.H, m.KV, m.hd
    q = rope((x @ L["q"].T).reshape(n, H, hd), cos, sin)
    k = rope((x @ L["k"].T).reshape(n, KV, hd), cos, sin)
    v = (x @ L["v"].T).reshape(n, KV, hd)
    # query head h reads kv head h // (H / KV)
    group = H // KV
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    s = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / np.sqrt(hd)
    s[:, np.triu(np.ones((n, n), dtype=bool), 1)] = -np.inf   # [H, n, n]
    o = np.matmul(softmax(s), v.transpose(1, 0, 2))          # [H, n, hd]
    return o.transpose(1, 0, 2).reshape(n, H * hd) @ L["o"].T


def mlp(L, x):
    g = x @ L["gate"].T
    return (g / (1.0 + np.exp(-g)) * (x @ L["up"].T)) @ L["down"].T


def forward(m, ids, steps=None):
    """The looped forward pass over one sequence (positions from 0).

    Returns hidden [steps, n, D] float64: the state after each loop's final
    model.norm, which is also the next loop's input.
    """
    steps = m.T if steps is None else steps
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    cos, sin = rope_tables(np.arange(n), m.hd, m.theta)
    h = m.embed(ids)
    hidden = np.empty((steps, n, m.D))
    for t in range(steps):
        for L in m.layers:
            a = attention(m, L, rmsnorm(L["in1"], h, m.eps), cos, sin)
            h = h + rmsnorm(L["in2"], a, m.eps)
            f = mlp(L, rmsnorm(L["post1"], h, m.eps))
            h = h + rmsnorm(L["post2"], f, m.eps)
        h = rmsnorm(m.w["norm"], h, m.eps)
        hidden[t] = h
    return hidden


def gate(m, hidden):
    """Exit gate over hidden [T, n, D]: returns gate logits, the exit pdf
    p and its cdf, each [T, n]. The last step takes what is left."""
    logits = hidden @ m.w["gate_w"] + m.w["gate_b"]
    lam = 1.0 / (1.0 + np.exp(-logits))
    T = hidden.shape[0]
    p = np.empty_like(logits)
    remaining = np.ones(logits.shape[1:])
    for t in range(T):
        p[t] = lam[t] * remaining if t < T - 1 else remaining
        remaining = remaining * (1.0 - lam[t])
    return logits, p, np.cumsum(p, axis=0)


# ---- language-model head and sampling -------------------------------------

def load_lm_head(path):
    """The language-model head [V, D] as float64: lm_head.weight, or the
    embedding when config.json ties them. Reads only what it needs."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    name = ("model.embed_tokens.weight" if config.get("tie_word_embeddings")
            else "lm_head.weight")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        file = single
    else:
        with open(os.path.join(path, "model.safetensors.index.json"),
                  encoding="utf-8") as f:
            file = os.path.join(path, json.load(f)["weight_map"][name])
    tensors, _ = read_safetensors(file)
    if name not in tensors:
        raise FormatError("%s: no tensor %s" % (file, name))
    w = tensors[name].floats()
    want = (config["vocab_size"], config["hidden_size"])
    if w.shape != want:
        raise FormatError("%s: tensor %s has shape %s, expected %s"
                          % (file, name, list(w.shape), list(want)))
    return w


def log_softmax(logits):
    """log p [V] at temperature 1, float64."""
    x = np.asarray(logits, dtype=np.float64)
    mx = np.max(x)
    return x - (mx + np.log(np.sum(np.exp(x - mx))))


def rank_order(logits):
    """Token ids from most to least likely; equal logits: lower id first."""
    x = np.asarray(logits, dtype=np.float64)
    return np.lexsort((np.arange(len(x)), -x))


def topk_logprobs(logits, k):
    """The k most likely ids and their log-probabilities, best first."""
    ids = rank_order(logits)[:k]
    return ids, log_softmax(logits)[ids]


def splitmix_uniform(seed, n):
    """The uniform number in [0, 1) for the token after n tokens: the n-th
    output (from 0) of splitmix64 started at state seed, top 53 bits."""
    mask = (1 << 64) - 1
    z = (seed + (n + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return (z >> 11) * 2.0 ** -53


def sample_filter(logits, temperature, top_k=0, top_p=1.0, min_p=0.0):
    """The distribution that sampling draws from, as Hugging Face generate
    filters it (temperature > 0): temperature, top-k (ties with the k-th
    stay), top-p (HF: drop the tokens whose ascending cumulative
    probability is <= 1 - top_p, keep at least one), min-p (keep
    p >= min_p * max p). Returns (p, near): p [V] normalised, zero where
    dropped, and near [V], how far each token is (in logits over the
    temperature, or in probability) from the threshold of a filter that
    would change its fate; inf where no filter is close."""
    x = np.asarray(logits, dtype=np.float64)
    V = len(x)
    order = rank_order(x)
    near = np.full(V, np.inf)
    keep = np.ones(V, dtype=bool)
    if 0 < top_k < V:
        kth, next_ = x[order[top_k - 1]], x[order[top_k]]
        keep &= x >= kth
        near = np.minimum(near, np.where(keep, x - next_, kth - x) / temperature)
    w = np.where(keep, np.exp((x - x.max()) / temperature), 0.0)
    if top_p < 1:
        asc = order[::-1]    # ascending; among equal logits higher id first
        cum = np.cumsum(w[asc]) / w.sum()
        drop = cum <= 1 - top_p
        drop[-1] = False
        near[asc] = np.minimum(near[asc], np.where(
            keep[asc], np.abs(cum - (1 - top_p)), np.inf))
        keep[asc[drop]] = False
        w[~keep] = 0
    if min_p > 0:
        ratio = np.exp((x - x.max()) / temperature)
        near = np.minimum(near, np.where(keep | (ratio < min_p),
                                         np.abs(ratio - min_p), np.inf))
        keep &= ratio >= min_p
        w[~keep] = 0
    return w / w.sum(), near


def sample(logits, n, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, seed=0):
    """The next token after n tokens: at temperature 0 the most likely
    (lowest id among equals); else, of sample_filter's distribution, the
    first token in id order whose cumulative probability exceeds
    splitmix_uniform(seed, n)."""
    if temperature == 0:
        return int(rank_order(logits)[0])
    p, _ = sample_filter(logits, temperature, top_k, top_p, min_p)
    return int(np.argmax(np.cumsum(p) > splitmix_uniform(seed, n)))


def sample_distance(logits, n, token, temperature=0.0, top_k=0, top_p=1.0,
                    min_p=0.0, seed=0, eps=5e-6):
    """How far the reference's decision is from picking `token` instead,
    for an implementation whose logits may differ by rounding: 0 if
    sample() picks it. Greedy: the gap of logits. Else, if the filters
    drop the token, its distance to their threshold; if they keep it, the
    distance of the uniform number from the token's cumulative interval,
    less the probability of the tokens within eps of a filter threshold
    (whose fate rounding may flip, moving every interval by their mass)."""
    x = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return float(x.max() - x[token])
    p, near = sample_filter(x, temperature, top_k, top_p, min_p)
    if p[token] == 0:
        return float(near[token])
    mass = np.exp((x - x.max()) / temperature)
    unsure = float(np.sum(mass[near < eps]) / np.sum(mass[p > 0]))
    hi = np.cumsum(p)[token]
    lo = hi - p[token]
    u = splitmix_uniform(seed, n)
    return float(max(lo - u, u - hi, 0.0) - 2 * unsure)


# ---- command line ---------------------------------------------------------

class UsageError(Exception):
    pass


def read_ids(path):
    """Text ids, one sequence per line, decimal, separated by blanks.
    Blank lines are skipped. Returns a list of int64 arrays."""
    f = sys.stdin if path == "-" else open(path, encoding="ascii")
    seqs = []
    with f:
        for lineno, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            if not all(w.isascii() and w.isdigit() for w in words):
                raise FormatError("%s:%d: not a list of decimal ids" % (path, lineno))
            seqs.append(np.array([int(w, 10) for w in words], dtype=np.int64))
    return seqs


def cmd_check(args):
    m = load_model(args.model)
    steps = m.T if args.steps is None else args.steps
    seqs = read_ids(args.ids)
    records = read_records(args.records)
    if len(records) != len(seqs):
        print("%s: %d records for %d input lines" % (args.records, len(records),
                                                     len(seqs)))
        return 1
    worst = 0.0
    failures = []
    for r, ((tensors, _), ids) in enumerate(zip(records, seqs)):
        where = "record %d" % r
        if "tokens" not in tensors or "hidden" not in tensors:
            raise FormatError("%s: %s lacks tokens or hidden" % (args.records, where))
        tokens = tensors["tokens"].ints()
        if tokens.shape != ids.shape or not np.array_equal(tokens, ids):
            failures.append("%s: tokens differ from input line %d" % (where, r))
            print(failures[-1])
            continue
        ours = tensors["hidden"].floats()
        want = (steps, len(ids), m.D)
        if ours.shape != want:
            failures.append("%s: hidden has shape %s, expected %s"
                            % (where, list(ours.shape), list(want)))
            print(failures[-1])
            continue
        ref = forward(m, ids, steps)
        for t in range(steps):
            num = np.linalg.norm(ours[t] - ref[t])
            den = np.linalg.norm(ref[t])
            err = num / den if den > 0 else num
            if not err < args.tol:      # catches NaN too
                failures.append("%s (%d tokens) step %d: relative error %.3e "
                                "exceeds %g" % (where, len(ids), t, err, args.tol))
                err = np.inf if np.isnan(err) else err
            worst = max(worst, err)
            print("record %d (%d tokens) step %d: relative error %.3e"
                  % (r, len(ids), t, err))
    for msg in failures:
        print("FAIL " + msg)
    print("max relative error %.3e over %d records, %d steps (tol %g)"
          % (worst, len(records), steps, args.tol))
    return 1 if failures else 0


def cmd_forward(args):
    m = load_model(args.model)
    steps = m.T if args.steps is None else args.steps
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")
    with out:
        for ids in read_ids(args.ids):
            hidden = forward(m, ids, steps)
            write_safetensors(out, {
                "tokens": ("I32", ids.astype(np.int32)),
                "hidden": ("F32", hidden.astype(np.float32)),
            })
    return 0


# ---- exit rules and Stage II gate training (ouro-gate) --------------------

def parse_exit_rule(text):
    """An ouro.exit_rule string -> (kind, value): 'threshold Q', 'static S',
    'diff EPS', 'weighted', 'kl EPS', 'entropy H' or 'stable K'."""
    words = text.split()
    if words == ["weighted"]:
        return "weighted", None
    if len(words) == 2 and words[0] in ("threshold", "diff", "kl", "entropy"):
        return words[0], float(words[1])
    if len(words) == 2 and words[0] in ("static", "stable"):
        return words[0], int(words[1], 10)
    raise FormatError("exit rule %r is not 'threshold Q', 'static S', 'diff EPS', "
                      "'weighted', 'kl EPS', 'entropy H' or 'stable K'" % text)


# The rules of the next-token distribution p_t = softmax(lm_head h[t]) of
# each loop, which need no gate (ouro-model.md section 4 has the others).
LM_RULES = ("kl", "entropy", "stable")


def lm_rule_loop(rule, t, T, lp, prev, state, margin):
    """Loop t of T of one position under an LM_RULES rule: lp [V] is
    log p_t, prev log p_{t-1} (None at t = 0), state a dict carried from
    loop to loop. Returns (exit, near): exit at t, and whether the number
    compared lies within margin of the rule's value (for 'stable': the two
    most likely tokens within margin of each other), so that float
    rounding may decide it either way.
      kl EPS      the first t >= 1 with sum p_t (log p_t - log p_{t-1}) < EPS
      entropy H   the first t >= 1 with -sum p_t log p_t < H
      stable K    the first t whose argmax is that of loops t-K+1 .. t
    and the last loop when none is."""
    kind, val = rule
    top2 = np.argsort(-lp, kind="stable")[:2]
    arg = int(top2[0])
    state["run"] = state["run"] + 1 if t > 0 and arg == state["arg"] else 1
    state["arg"] = arg
    if t == T - 1:
        return True, False
    if kind == "stable":
        near = len(top2) > 1 and lp[top2[0]] - lp[top2[1]] < margin
        return state["run"] >= val, bool(near)
    if t == 0:
        return False, False
    p = np.exp(lp)
    x = float(np.sum(p * (lp - prev))) if kind == "kl" else float(-np.sum(p * lp))
    return x < val, abs(x - val) < margin


def lm_exit_choice(head, hidden, rule, margin=1e-6):
    """Exit steps [n] of hidden [T, n, D] under an LM_RULES rule, and near
    [n]: whether a number compared up to the exit was within margin of the
    rule's value (lm_rule_loop)."""
    T, n, _ = hidden.shape
    lps = [np.array([log_softmax(x) for x in hidden[t] @ head.T]) for t in range(T)]
    steps = np.full(n, T - 1)
    near = np.zeros(n, dtype=bool)
    for i in range(n):
        state = {}
        for t in range(T):
            hit, close = lm_rule_loop(rule, t, T, lps[t][i], lps[t - 1][i] if t else None,
                                      state, margin)
            near[i] |= close
            if hit:
                steps[i] = t
                break
    return steps, near


def generate_early(m, head, prompt, new, rule, margin=1e-6):
    """Greedy generation of `new` tokens after prompt that really stops
    each decoded position's loops at its exit under an LM_RULES rule, as
    ouro-generate --kv full does: the prompt runs every loop, its last
    position's exit state gives the first token; a decoded position's
    skipped loops (t > its exit) hold its exit loop's keys and values for
    the later positions to read. Per (loop, layer) KV caches, position by
    position. Returns the new ids, the loops of each, and the index of the
    first token whose exit had a number within margin of the rule's value
    (None if none)."""
    N, H, hd, group, T = m.N, m.H, m.hd, m.H // m.KV, m.T
    keys = [[] for _ in range(T * N)]
    vals = [[] for _ in range(T * N)]
    ids, loops, near_at = list(prompt), [], None
    for pos in range(len(prompt) + new - 1):
        decides = pos >= len(prompt) - 1
        cos, sin = rope_tables([pos], hd, m.theta)
        h = m.embed([ids[pos]])
        state, prev, exit_t, near = {}, None, None, False
        for t in range(T):
            for l, L in enumerate(m.layers):
                x = rmsnorm(L["in1"], h, m.eps)
                q = rope((x @ L["q"].T).reshape(1, H, hd), cos, sin)[0]
                keys[t * N + l].append(rope((x @ L["k"].T).reshape(1, -1, hd), cos, sin)[0])
                vals[t * N + l].append((x @ L["v"].T).reshape(-1, hd))
                kc, vc = np.array(keys[t * N + l]), np.array(vals[t * N + l])
                o = np.concatenate([softmax(kc[:, hh // group] @ q[hh] / np.sqrt(hd))
                                    @ vc[:, hh // group] for hh in range(H)])
                h = h + rmsnorm(L["in2"], o @ L["o"].T, m.eps)
                h = h + rmsnorm(L["post2"], mlp(L, rmsnorm(L["post1"], h, m.eps)), m.eps)
            h = rmsnorm(m.w["norm"], h, m.eps)
            if decides and exit_t is None:
                lp = log_softmax(head @ h[0])
                hit, close = lm_rule_loop(rule, t, T, lp, prev, state, margin)
                near |= close
                prev = lp
                if hit:
                    exit_t, hexit = t, h[0]
            if exit_t is not None and pos >= len(prompt):
                break
        if pos >= len(prompt):
            for t in range(exit_t + 1, T):
                for l in range(N):
                    keys[t * N + l].append(keys[exit_t * N + l][-1])
                    vals[t * N + l].append(vals[exit_t * N + l][-1])
        if decides:
            if near and near_at is None:
                near_at = len(loops)
            ids.append(int(np.argmax(head @ hexit)))
            loops.append(exit_t + 1)
    return ids[len(prompt):], loops, near_at


def exit_choice(p, cdf, hidden, rule):
    """The exit step [n] (0-based) and the state used for the output [n, D]
    under rule = (kind, value), from the exit pdf and cdf [T, n] and hidden
    [T, n, D] (ouro-model.md section 4):
      static S      step S
      threshold Q   the first t with cdf[t] >= Q, else the last step
      diff EPS      the first t >= 1 with ||h[t] - h[t-1]||_2 < EPS, else last
      weighted      sum_t p[t] * hidden[t] (whose lm_head logits are the
                    p-weighted mixture of the per-step logits); step T-1
    """
    kind, val = rule
    T, n = p.shape
    if kind == "weighted":
        return np.full(n, T - 1), np.einsum("tn,tnd->nd", p, hidden)
    steps = np.full(n, T - 1)
    for i in range(n):
        for t in range(T):
            if kind == "static":
                hit = t == val
            elif kind == "threshold":
                hit = cdf[t, i] >= val
            else:
                hit = t >= 1 and np.linalg.norm(hidden[t, i] - hidden[t - 1, i]) < val
            if hit:
                steps[i] = t
                break
    return steps, hidden[steps, np.arange(n)]


def step_losses(head, hidden, tokens):
    """L[t, i] [T, n-1]: the cross-entropy of tokens[i+1] predicted from
    hidden[t, i] through the language-model head [V, D]."""
    T, n, _ = hidden.shape
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.empty((T, max(n - 1, 0)))
    for t in range(T):
        for i0 in range(0, n - 1, 64):
            i1 = min(n - 1, i0 + 64)
            logits = hidden[t, i0:i1] @ head.T
            mx = logits.max(axis=1)
            lse = mx + np.log(np.exp(logits - mx[:, None]).sum(axis=1))
            out[t, i0:i1] = lse - logits[np.arange(i1 - i0), tokens[i0 + 1:i1 + 1]]
    return out


def stage2_loss(gate_w, gate_b, hidden, losses, k=50.0, gamma=0.005):
    """The Stage II focused adaptive gate loss (ouro-model.md section 6)
    over M tokens: hidden [T, M, D], losses [T, M] (L_i(t) of each token
    that has a next token). With the spec's 1-based t = 2..T, that is
    0-based s = 1..T-1:
        I = max(0, L(s-1) - L(s)),  w = sigmoid(k (I - gamma)),
        L(s) = -mean_i [w log(1 - lambda(s)) + (1 - w) log(lambda(s))],
        loss = (1/T) sum_s L(s)."""
    T = hidden.shape[0]
    total = 0.0
    for s in range(1, T):
        gain = np.maximum(0.0, losses[s - 1] - losses[s])
        w = 1.0 / (1.0 + np.exp(-k * (gain - gamma)))
        lam = 1.0 / (1.0 + np.exp(-(hidden[s] @ gate_w + gate_b)))
        total += -np.mean(w * np.log(1.0 - lam) + (1.0 - w) * np.log(lam))
    return total / T


def load_gate(model_dir, gate_file=None):
    """(w [D], b) as float64: from gate_file (model.early_exit_gate.weight
    [1, D] and .bias [1]) if given, else from the model."""
    if gate_file is None:
        m = load_model(model_dir)
        return m.w["gate_w"], m.w["gate_b"]
    tensors, _ = read_safetensors(gate_file)
    for name in ("model.early_exit_gate.weight", "model.early_exit_gate.bias"):
        if name not in tensors:
            raise FormatError("%s: no tensor %s" % (gate_file, name))
    return (tensors["model.early_exit_gate.weight"].floats()[0],
            tensors["model.early_exit_gate.bias"].floats()[0])


class GateModel:
    """Just enough of a model for gate(): the gate weights."""

    def __init__(self, w, b):
        self.w = {"gate_w": w, "gate_b": b}


def cmd_gate(args):
    """Recomputes every record of ouro-gate (which must keep 'hidden')."""
    gm = GateModel(*load_gate(args.model, args.gate))
    records = read_records(args.records)
    if not records:
        raise FormatError("%s: no records" % args.records)
    worst = {"gate_logits": 0.0, "exit_pdf": 0.0, "exit_cdf": 0.0,
             "exit_hidden": 0.0}
    differ = total = near = 0
    head = None
    for r, (tensors, meta) in enumerate(records):
        where = "%s: record %d" % (args.records, r)
        for name in ("hidden", "exit_step", *worst):
            if name not in tensors:
                raise FormatError("%s: no tensor %s" % (where, name))
        if "ouro.exit_rule" not in meta:
            raise FormatError("%s: no metadata ouro.exit_rule" % where)
        hidden = tensors["hidden"].floats()
        logits, p, cdf = gate(gm, hidden)
        rule = parse_exit_rule(meta["ouro.exit_rule"])
        if rule[0] in LM_RULES:
            if head is None:
                head = load_lm_head(args.model)
            steps, close = lm_exit_choice(head, hidden, rule)
            # a position near the rule's value may go either way: it is
            # counted, and its exit state is read at the step ouro-gate chose
            near += int(close.sum())
            steps[close] = tensors["exit_step"].ints()[close]
            xh = hidden[steps, np.arange(len(steps))]
        else:
            steps, xh = exit_choice(p, cdf, hidden, rule)
        for name, ref in (("gate_logits", logits), ("exit_pdf", p),
                          ("exit_cdf", cdf), ("exit_hidden", xh)):
            ours = tensors[name].floats()
            if ours.shape != ref.shape:
                raise FormatError("%s: %s has shape %s, expected %s"
                                  % (where, name, list(ours.shape), list(ref.shape)))
            err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
            worst[name] = max(worst[name], np.inf if np.isnan(err) else err)
        ours = tensors["exit_step"].ints()
        differ += int(np.sum(ours != steps))
        total += len(steps)
        if np.any(ours != steps):
            i = int(np.argmax(ours != steps))
            print("%s: token %d exits at step %d, the reference at %d"
                  % (where, i, ours[i], steps[i]))
    print("max abs error " + ", ".join("%s %.3e" % kv for kv in worst.items())
          + " (tol %g); exit steps differing: %d of %d, near the rule's value: %d"
          % (args.tol, differ, total, near))
    return 0 if differ == 0 and all(v <= args.tol for v in worst.values()) else 1


def cmd_generate(args):
    """Greedy generation with real early exit under an LM_RULES rule."""
    m = load_model(args.model)
    rule = parse_exit_rule(args.rule)
    if rule[0] not in LM_RULES:
        raise FormatError("--rule %r is not a rule of %s" % (args.rule, ", ".join(LM_RULES)))
    prompt = read_ids(args.ids)[0]
    new, loops, near_at = generate_early(m, load_lm_head(args.model), list(prompt), args.n, rule)
    print(json.dumps({"ids": new, "loops": loops, "near": near_at}))
    return 0


def cmd_stage2(args):
    """The Stage II loss of a gate on ouro-forward records (step_loss from
    the records where present, else from lm_head) and the mean exit step
    of all tokens at threshold q."""
    w, b = load_gate(args.model, args.gate)
    head = None
    hs, ls, steps = [], [], []
    for r, (tensors, _) in enumerate(read_records(args.records)):
        hidden = tensors["hidden"].floats()
        if "step_loss" in tensors:
            losses = tensors["step_loss"].floats()
        else:
            if head is None:
                head = load_lm_head(args.model)
            losses = step_losses(head, hidden, tensors["tokens"].ints())
        hs.append(hidden[:, :-1])
        ls.append(losses)
        _, p, cdf = gate(GateModel(w, b), hidden)
        steps.append(exit_choice(p, cdf, hidden, ("threshold", args.q))[0])
    loss = stage2_loss(w, b, np.concatenate(hs, axis=1), np.concatenate(ls, axis=1))
    print("loss %.9f" % loss)
    print("mean exit step %.6f" % np.mean(np.concatenate(steps)))
    return 0


# ---- evaluation: per-loop perplexity and multiple choice (ouro-eval) -------
#
# Written from lm-evaluation-harness's definitions, not from ouro-eval's C:
# loglikelihood_rolling windows as get_rolling_token_windows followed by
# make_disjoint_window, every request scored as HFLM scores one (the input
# is (context + continuation)[-(max_len + 1):][:-1], the continuation's
# tokens are the last ones), and the exit rules of exit_choice().

def rolling_windows(tokens, prefix, max_len, context_len=1):
    """The (context, continuation) token lists of loglikelihood_rolling
    over one document: every token is in exactly one continuation."""
    tokens = [int(x) for x in tokens]
    if not tokens:
        return []
    pred_len = max_len - context_len + 1
    first = min(max_len, len(tokens))
    pairs = [([prefix] + tokens[:first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        take = min(len(tokens) - predicted, pred_len)
        end = predicted + take
        pairs.append((tokens[end - max_len - 1:end - 1], tokens[end - take:end]))
        predicted += take
    # make_disjoint_window: the context loses what the continuation repeats
    return [(a[:len(a) - (len(b) - 1)], b) for a, b in pairs]


def score_request(m, head, gm, context, continuation, max_len, steps, rules):
    """One loglikelihood request at every loop and under every rule.

    Returns (loss [T, k], greedy [T, k], pdf [T, k], exits [R, k]) for the k
    continuation tokens: the cross-entropy of each from hidden[t] of the
    position before it, whether it is the argmax there, the exit pdf of
    that position and its exit step (0-based) under each rule."""
    whole = (list(context) + list(continuation))[-(max_len + 1):]
    inp = whole[:-1]
    n, k = len(inp), len(continuation)
    hidden = forward(m, inp, steps)
    _, p, cdf = gate(gm, hidden)
    pos = np.arange(n - k, n)
    target = np.asarray(continuation, dtype=np.int64)
    loss = np.empty((steps, k))
    greedy = np.empty((steps, k), dtype=bool)
    for t in range(steps):
        logits = hidden[t, pos] @ head.T                    # [k, V]
        for j in range(k):
            lp = log_softmax(logits[j])
            loss[t, j] = -lp[target[j]]
            greedy[t, j] = int(np.argmax(logits[j])) == target[j]
    exits = np.array([(lm_exit_choice(head, hidden, r) if r[0] in LM_RULES
                       else exit_choice(p, cdf, hidden, r))[0][pos] for r in rules],
                     dtype=np.int64).reshape(len(rules), k)
    return loss, greedy, p[:, pos], exits


def eval_ppl(m, head, gm, docs, steps, max_len, context_len, prefix, beta, rules):
    """Means over every token of every document: per-loop NLL, the exit
    distribution's entropy, expected NLL and loops, the Stage I objective
    (expected NLL - beta * entropy) and, per rule, NLL and average loops."""
    T = steps
    nll = np.zeros(T)
    ent = exp_nll = exp_loops = 0.0
    rule_nll = np.zeros(len(rules))
    rule_loops = np.zeros(len(rules))
    ntok = 0
    for doc in docs:
        for ctx, cont in rolling_windows(doc, prefix, max_len, context_len):
            loss, _, p, exits = score_request(m, head, gm, ctx, cont, max_len, T, rules)
            ntok += len(cont)
            nll += loss.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ent += float(-np.sum(np.where(p > 0, p * np.log(p), 0.0)))
            exp_nll += float(np.sum(p * loss))
            exp_loops += float(np.sum(p * np.arange(1, T + 1)[:, None]))
            for r in range(len(rules)):
                rule_nll[r] += loss[exits[r], np.arange(len(cont))].sum()
                rule_loops[r] += (exits[r] + 1).sum()
    return {"tokens": ntok,
            "nll": list(nll / ntok),
            "entropy": ent / ntok,
            "expected_nll": exp_nll / ntok,
            "stage1": (exp_nll - beta * ent) / ntok,
            "expected_loops": exp_loops / ntok,
            "rule_nll": list(rule_nll / ntok),
            "rule_loops": list(rule_loops / ntok)}


def eval_choice(m, head, gm, examples, steps, max_len, rules):
    """Multiple choice as lm-evaluation-harness scores it. examples: dicts
    with "gold" and "pairs", each pair {"context": ids, "continuation":
    ids, "chars": length of the choice}. For every loop and then every rule
    (columns c = 0..T+R-1): acc (argmax of the summed log-likelihoods is
    gold), acc_norm (argmax of log-likelihood / chars), greedy (the gold
    continuation is the greedy decode), the gold log-likelihood, and per
    rule the average loops per continuation token; plus every example's
    log-likelihoods [choices, T+R]."""
    T, R = steps, len(rules)
    acc = np.zeros(T + R)
    acc_norm = np.zeros(T + R)
    greedy = np.zeros(T + R)
    gold_ll = np.zeros(T + R)
    loops = np.zeros(R)
    ntok = 0
    lls = []
    for ex in examples:
        ll = np.empty((len(ex["pairs"]), T + R))
        gr = np.empty((len(ex["pairs"]), T + R), dtype=bool)
        for c, pair in enumerate(ex["pairs"]):
            loss, g, _, exits = score_request(m, head, gm, pair["context"],
                                              pair["continuation"], max_len, T, rules)
            k = len(pair["continuation"])
            ntok += k
            ll[c, :T] = -loss.sum(axis=1)
            gr[c, :T] = g.all(axis=1)
            for r in range(R):
                ll[c, T + r] = -loss[exits[r], np.arange(k)].sum()
                gr[c, T + r] = g[exits[r], np.arange(k)].all()
                loops[r] += (exits[r] + 1).sum()
        chars = np.array([float(pair["chars"]) for pair in ex["pairs"]])
        gold = ex["gold"]
        for col in range(T + R):
            acc[col] += int(np.argmax(ll[:, col])) == gold
            acc_norm[col] += int(np.argmax(ll[:, col] / chars)) == gold
            greedy[col] += gr[gold, col]
            gold_ll[col] += ll[gold, col]
        lls.append(ll.tolist())
    E = len(examples)
    return {"examples": E, "tokens": ntok, "acc": list(acc / E),
            "acc_norm": list(acc_norm / E), "greedy": list(greedy / E),
            "gold_ll": list(gold_ll / E), "avg_loops": list(loops / max(ntok, 1)),
            "ll": lls}


def eval_rules(args):
    """The rules of the lists, in this order: -q, -e, --kl, --entropy,
    --stable."""
    return ([("threshold", float(q)) for q in args.q.split(",") if q] +
            [("diff", float(e)) for e in args.e.split(",") if e] +
            [("kl", float(x)) for x in args.kl.split(",") if x] +
            [("entropy", float(x)) for x in args.entropy.split(",") if x] +
            [("stable", int(x, 10)) for x in args.stable.split(",") if x])


def cmd_eval_ppl(args):
    m = load_model(args.model)
    gm = GateModel(*load_gate(args.model, args.gate)) if args.gate else m
    steps = m.T if args.steps is None else args.steps
    res = eval_ppl(m, load_lm_head(args.model), gm, read_ids(args.ids), steps,
                   args.window, args.context, args.prefix, args.beta, eval_rules(args))
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


def cmd_eval_choice(args):
    m = load_model(args.model)
    gm = GateModel(*load_gate(args.model, args.gate)) if args.gate else m
    steps = m.T if args.steps is None else args.steps
    with open(args.requests, encoding="utf-8") as f:
        examples = json.load(f)
    res = eval_choice(m, load_lm_head(args.model), gm, examples, steps, args.window,
                      eval_rules(args))
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


# ---- self-test ---------------------------------------------------------------

def random_model(rng, V=50, D=24, F=40, N=2, H=4, KV=2, hd=8, T=3,
                 theta=10000.0, eps=1e-6):
    """A small in-memory model with random F32 weights, for the self-test."""
    def lin(o, i):
        return rng.normal(0, 1 / np.sqrt(i), (o, i)).astype(np.float32)

    def vec(d):
        return (1 + 0.1 * rng.normal(size=d)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.normal(size=(V, D)).astype(np.float32),
         "model.norm.weight": vec(D),
         "model.early_exit_gate.weight": lin(1, D),
         "model.early_exit_gate.bias": rng.normal(size=1).astype(np.float32)}
    for l in range(N):
        p = "model.layers.%d." % l
        w[p + "self_attn.q_proj.weight"] = lin(H * hd, D)
        w[p + "self_attn.k_proj.weight"] = lin(KV * hd, D)
        w[p + "self_attn.v_proj.weight"] = lin(KV * hd, D)
        w[p + "self_attn.o_proj.weight"] = lin(D, H * hd)
        w[p + "mlp.gate_proj.weight"] = lin(F, D)
        w[p + "mlp.up_proj.weight"] = lin(F, D)
        w[p + "mlp.down_proj.weight"] = lin(D, F)
        for nm in ("input_layernorm", "input_layernorm_2",
                   "post_attention_layernorm", "post_attention_layernorm_2"):
            w[p + nm + ".weight"] = vec(D)
    config = {"vocab_size": V, "hidden_size": D, "intermediate_size": F,
              "num_hidden_layers": N, "num_attention_heads": H,
              "num_key_value_heads": KV, "head_dim": hd, "rope_theta": theta,
              "rms_norm_eps": eps, "total_ut_steps": T}
    return config, w


def build(config, w):
    return Model(config, {k: Tensor("F32", a.shape, a) for k, a in w.items()},
                 "selftest")


def decode_incremental(m, ids, steps):
    """The forward pass token by token, with one KV cache per (loop, layer)
    slot t*N + l, written independently of forward(): per-head loops,
    explicit softmax. Returns hidden [steps, n, D]."""
    N, H, hd, group = m.N, m.H, m.hd, m.H // m.KV
    cache_k = [[] for _ in range(steps * N)]    # slot -> list of [KV, hd]
    cache_v = [[] for _ in range(steps * N)]
    hidden = np.empty((steps, len(ids), m.D))
    inv_freq = [m.theta ** (-2.0 * i / hd) for i in range(hd // 2)]
    for pos, tok in enumerate(ids):
        cos = np.array([np.cos(pos * f) for f in inv_freq] * 2)
        sin = np.array([np.sin(pos * f) for f in inv_freq] * 2)

        def rot(x):
            return x * cos + np.concatenate([-x[hd // 2:], x[:hd // 2]]) * sin

        h = m.embed([tok])[0]
        for t in range(steps):
            for l, L in enumerate(m.layers):
                slot = t * N + l
                x = rmsnorm(L["in1"], h, m.eps)
                q = (L["q"] @ x).reshape(H, hd)
                k = (L["k"] @ x).reshape(-1, hd)
                v = (L["v"] @ x).reshape(-1, hd)
                cache_k[slot].append(np.array([rot(kh) for kh in k]))
                cache_v[slot].append(v)
                out = np.zeros(H * hd)
                for hh in range(H):
                    qh = rot(q[hh])
                    scores = [float(qh @ kk[hh // group]) / np.sqrt(hd)
                              for kk in cache_k[slot]]
                    top = max(scores)
                    e = [np.exp(s - top) for s in scores]
                    z = sum(e)
                    acc = np.zeros(hd)
                    for ei, vv in zip(e, cache_v[slot]):
                        acc += ei / z * vv[hh // group]
                    out[hh * hd:(hh + 1) * hd] = acc
                h = h + rmsnorm(L["in2"], L["o"] @ out, m.eps)
                x = rmsnorm(L["post1"], h, m.eps)
                g = L["gate"] @ x
                f = L["down"] @ (g / (1 + np.exp(-g)) * (L["up"] @ x))
                h = h + rmsnorm(L["post2"], f, m.eps)
            h = rmsnorm(m.w["norm"], h, m.eps)
            hidden[t, pos] = h
    return hidden


def cmd_selftest(args):
    rng = np.random.default_rng(args.seed)
    worst = {}

    def expect(name, a, b, tol=1e-12):
        err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        worst[name] = max(worst.get(name, 0.0), err)
        if not err <= tol:
            raise AssertionError("%s: max difference %.3e exceeds %g"
                                 % (name, err, tol))

    # 1. token-by-token decoding with per-slot KV caches == batched pass
    for KV, hd, N in ((2, 8, 2), (4, 6, 1), (1, 4, 3)):
        config, w = random_model(rng, KV=KV, hd=hd, N=N)
        m = build(config, w)
        ids = rng.integers(0, m.V, 9)
        expect("incremental decode vs batched", decode_incremental(m, ids, 3),
               forward(m, ids, 3))

    # 2. one token, one loop: attention is the v_proj/o_proj path
    config, w = random_model(rng, N=1, T=1)
    m = build(config, w)
    L = m.layers[0]
    tok = 7
    h = m.embed([tok])[0]
    v = (L["v"] @ rmsnorm(L["in1"], h, m.eps)).reshape(m.KV, m.hd)
    a = L["o"] @ np.concatenate([v[hh // (m.H // m.KV)] for hh in range(m.H)])
    h = h + rmsnorm(L["in2"], a, m.eps)
    x = rmsnorm(L["post1"], h, m.eps)
    g = L["gate"] @ x
    h = h + rmsnorm(L["post2"], L["down"] @ (g / (1 + np.exp(-g)) * (L["up"] @ x)), m.eps)
    expect("one token = v path", forward(m, [tok], 1)[0, 0],
           rmsnorm(m.w["norm"], h, m.eps))

    # 3. GQA == MHA with each kv head repeated for its query group
    config, w = random_model(rng, H=6, KV=2, hd=4, D=20)
    m = build(config, w)
    group = 3
    w2 = dict(w)
    for l in range(m.N):
        for p in ("k", "v"):
            name = "model.layers.%d.self_attn.%s_proj.weight" % (l, p)
            blocks = w[name].reshape(m.KV, m.hd, m.D)
            w2[name] = np.repeat(blocks, group, axis=0).reshape(-1, m.D)
    m2 = build(dict(config, num_key_value_heads=6), w2)
    ids = rng.integers(0, m.V, 11)
    expect("GQA vs expanded MHA", forward(m, ids), forward(m2, ids))

    # 4. RoPE: q.k depends only on the position difference
    q = rng.normal(size=(1, 1, 16))
    k = rng.normal(size=(1, 1, 16))
    dots = []
    for p0 in (0, 5, 123, 4000):
        c, s = rope_tables([p0, p0 + 7], 16, 10000.0)
        dots.append(float(rope(q, c[:1], s[:1]).ravel() @ rope(k, c[1:], s[1:]).ravel()))
    expect("RoPE relative position", dots, [dots[0]] * len(dots), 1e-9)
    c, s = rope_tables([0], 16, 10000.0)
    expect("RoPE at position 0", rope(q, c, s), q)

    # 5. causality, and loops are a prefix of more loops
    config, w = random_model(rng)
    m = build(config, w)
    ids = rng.integers(0, m.V, 13)
    full = forward(m, ids, 5)
    expect("causal prefix", full[:, :6], forward(m, ids[:6], 5))
    expect("steps prefix", full[:2], forward(m, ids, 2))
    norms = np.sqrt(np.mean((full / m.w["norm"]) ** 2, axis=-1))
    expect("state is model.norm output", norms, np.ones_like(norms), 1e-5)

    # 6. gate: p is a distribution, cdf ends at 1
    logits, p, cdf = gate(m, full)
    expect("gate pdf sums to 1", p.sum(axis=0), np.ones(len(ids)))
    expect("gate cdf ends at 1", cdf[-1], np.ones(len(ids)))
    expect("gate logits", logits[2], full[2] @ w["model.early_exit_gate.weight"][0]
           + w["model.early_exit_gate.bias"][0], 1e-6)

    # 6b. generation that stops loops early: a rule that never fires (KL
    # below 0) is greedy decoding of the whole sequence through forward();
    # a rule that fires at loop 1 gives every decoded token 2 loops, and its
    # token is the argmax of loop 1's state where that position's
    # later-loop caches repeat loop 1's (the batched pass cannot say this,
    # so only the loop counts and the first token, whose prompt ran every
    # loop, are checked against forward)
    head = w["model.embed_tokens.weight"].astype(np.float64)   # any [V, D] head will do
    prompt = list(rng.integers(0, m.V, 5))
    new, loops, near = generate_early(m, head, prompt, 6, ("kl", 0.0))
    seq = list(prompt)
    for _ in range(6):
        seq.append(int(np.argmax(head @ forward(m, seq)[-1, -1])))
    assert new == seq[len(prompt):] and loops == [m.T] * 6 and near is None, (new, seq, loops)
    new, loops, _ = generate_early(m, head, prompt, 6, ("kl", 1e9))
    assert loops == [2] * 6, loops
    assert new[0] == int(np.argmax(head @ forward(m, prompt)[1, -1])), new

    # 7. safetensors: writer/reader round trip, streams, bf16
    x = rng.normal(size=(3, 5)).astype(np.float32)
    buf = io.BytesIO()
    write_safetensors(buf, {"b": ("BF16", encode(x, "BF16")), "a": ("F16", encode(x, "F16")),
                            "i": ("I32", np.arange(4, dtype=np.int32))}, {"format": "pt"})
    write_safetensors(buf, {"z": ("F32", x)})
    write_safetensors(buf, {})
    data = buf.getvalue()
    (hlen,) = struct.unpack_from("<Q", data, 0)
    assert hlen % 8 == 0, "header not padded to 8"
    assert list(json.loads(data[8:8 + hlen]))[1:] == ["a", "b", "i"], "not sorted"
    recs = []
    pos = 0
    while pos < len(data):
        t, meta, pos = parse_safetensors(data, pos)
        recs.append((t, meta))
    assert len(recs) == 3 and recs[0][1] == {"format": "pt"} and recs[2][0] == {}
    expect("F32 round trip", recs[1][0]["z"].floats(), x, 0)
    expect("F16 round trip", recs[0][0]["a"].floats(), x, 2e-3)
    expect("BF16 round trip", recs[0][0]["b"].floats(), x, 2e-2)
    assert np.array_equal(recs[0][0]["i"].ints(), np.arange(4))
    # ties go to even: 1 + 2^-8 -> 1, 1 + 3*2^-8 -> 1 + 2^-6
    vals = np.array([1.0, -2.5, 1 + 2 ** -7, 1 + 2 ** -8, 1 + 3 * 2 ** -8,
                     1 + 2 ** -8 + 2 ** -20], dtype=np.float32)
    expect("bf16 rounding", bf16_to_f32(f32_to_bf16(vals)),
           np.array([1.0, -2.5, 1 + 2 ** -7, 1.0, 1 + 2 ** -6, 1 + 2 ** -7],
                    dtype=np.float32), 0)
    for bad in (data[:7], data[:20], struct.pack("<Q", 2) + b"[]",
                struct.pack("<Q", 40) + b'{"t":{"dtype":"F32","shape":[2],'
                b'"data_offsets":[0,4]}}'.ljust(40) + b"\0" * 4):
        try:
            parse_safetensors(bad)
        except FormatError:
            continue
        raise AssertionError("a malformed image was accepted: %r" % bad[:40])

    for name, err in worst.items():
        print("# selftest %-30s max difference %.2e" % (name, err))
    print("# selftest: %d checks passed" % len(worst))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def positive(s):
        v = int(s, 10)
        if v <= 0:
            raise argparse.ArgumentTypeError("%s is not a positive integer" % s)
        return v

    p = sub.add_parser("check", help="compare ouro-forward records with the reference")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--steps", type=positive, metavar="T",
                   help="loops (default: total_ut_steps of config.json)")
    p.add_argument("--ids", required=True, metavar="FILE")
    p.add_argument("--records", required=True, metavar="FILE")
    p.add_argument("--tol", type=float, default=1e-4)
    p = sub.add_parser("forward", help="write the reference's records")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--steps", type=positive, metavar="T")
    p.add_argument("--ids", required=True, metavar="FILE")
    p.add_argument("--out", default="-", metavar="FILE")
    p = sub.add_parser("gate", help="check ouro-gate records against the reference")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--gate", metavar="FILE", help="gate weights instead of the model's")
    p.add_argument("--records", required=True, metavar="FILE")
    p.add_argument("--tol", type=float, default=1e-5)
    p = sub.add_parser("generate", help="greedy generation with early exit by an lm_head rule")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--ids", required=True, metavar="FILE", help="the prompt's ids, one line")
    p.add_argument("-n", type=positive, required=True, metavar="N", help="new tokens")
    p.add_argument("--rule", required=True, metavar="RULE", help="'kl EPS', 'entropy H' or 'stable K'")
    p = sub.add_parser("stage2", help="Stage II gate loss of records")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--gate", metavar="FILE", help="gate weights instead of the model's")
    p.add_argument("--records", required=True, metavar="FILE")
    p.add_argument("-q", type=float, default=1.0, help="threshold for the mean exit step")
    p = sub.add_parser("eval-ppl", help="per-loop perplexity as ouro-eval ppl")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--gate", metavar="FILE", help="gate weights instead of the model's")
    p.add_argument("--steps", type=positive, metavar="T")
    p.add_argument("--ids", required=True, metavar="FILE", help="one document of ids a line")
    p.add_argument("--window", type=positive, required=True, metavar="W")
    p.add_argument("--context", type=positive, default=1, metavar="C")
    p.add_argument("--prefix", type=int, default=0, metavar="ID")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("-q", default="", metavar="Q,...", help="threshold rules")
    p.add_argument("-e", default="", metavar="EPS,...", help="hidden-difference rules")
    p.add_argument("--kl", default="", metavar="EPS,...", help="KL rules")
    p.add_argument("--entropy", default="", metavar="H,...", help="entropy rules")
    p.add_argument("--stable", default="", metavar="K,...", help="stable-argmax rules")
    p = sub.add_parser("eval-choice", help="multiple-choice scores as ouro-eval choice")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--gate", metavar="FILE", help="gate weights instead of the model's")
    p.add_argument("--steps", type=positive, metavar="T")
    p.add_argument("--requests", required=True, metavar="FILE",
                   help='JSON: [{"gold": g, "pairs": [{"context": ids, '
                   '"continuation": ids, "chars": n}, ...]}, ...]')
    p.add_argument("--window", type=positive, required=True, metavar="W")
    p.add_argument("-q", default="", metavar="Q,...", help="threshold rules")
    p.add_argument("-e", default="", metavar="EPS,...", help="hidden-difference rules")
    p.add_argument("--kl", default="", metavar="EPS,...", help="KL rules")
    p.add_argument("--entropy", default="", metavar="H,...", help="entropy rules")
    p.add_argument("--stable", default="", metavar="K,...", help="stable-argmax rules")
    p = sub.add_parser("selftest", help="check the reference against itself")
    p.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        return {"check": cmd_check, "forward": cmd_forward,
                "selftest": cmd_selftest,
                "gate": cmd_gate, "stage2": cmd_stage2, "generate": cmd_generate,
                "eval-ppl": cmd_eval_ppl, "eval-choice": cmd_eval_choice}[args.cmd](args)
    except (FormatError, OSError, ValueError, KeyError) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 2
    except AssertionError as e:
        print("%s: selftest failed: %s" % (PROG, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
