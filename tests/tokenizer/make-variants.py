#!/usr/bin/env python3
"""make-variants.py - writes tokenizer.json variants of the Ouro tokenizer.

    python3 tests/tokenizer/make-variants.py TOKENIZER.json OUTDIR

The same vocabulary and merges under the pipelines of other byte-level BPE
tokenizers, so that the features Ouro's file does not use are compared
with the reference too: a Llama-3-style Split regex with ignore_merges and
a BOS template, a Qwen2-style regex with NFC and "a b" string merges, a
GPT-2-style prefix space with NFKC + Lowercase and added tokens with
lstrip / rstrip / single_word / normalized, and a chain of Split
behaviours, Digits runs and normalizers. Deterministic; the files are made
at test time, only their reference ids are kept (variant-NAME.ids).
"""
import copy
import json
import os
import sys

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(prefix=False, regex=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": regex}


def split(pattern, behavior, kind="Regex", invert=False):
    return {"type": "Split", "pattern": {kind: pattern}, "behavior": behavior, "invert": invert}


def variants(base):
    out = {}

    t = copy.deepcopy(base)
    t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split(LLAMA3, "Isolated"), byte_level()]}
    t["model"]["ignore_merges"] = True
    t["post_processor"] = {
        "type": "Sequence", "processors": [
            byte_level(),
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                                  "tokens": ["<|endoftext|>"]}}}]}
    out["llama3"] = t

    t = copy.deepcopy(base)
    t["normalizer"] = {"type": "NFC"}
    t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split(QWEN2, "Isolated"), byte_level()]}
    t["model"]["merges"] = [" ".join(m) for m in t["model"]["merges"]]
    out["qwen2"] = t

    t = copy.deepcopy(base)
    t["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}
    t["pre_tokenizer"] = byte_level(prefix=True, regex=True)
    for a in t["added_tokens"]:
        if a["content"] == "<think>":
            a["lstrip"] = True
        if a["content"] == "</think>":
            a["rstrip"] = True
        if a["content"] == "<|im_start|>":
            a["single_word"] = True
    n = len(t["model"]["vocab"])
    t["added_tokens"] += [
        {"id": n, "content": "hello world", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": True, "special": False},
        {"id": n + 1, "content": "the", "single_word": True, "lstrip": False,
         "rstrip": False, "normalized": True, "special": False},
        {"id": n + 2, "content": "İ", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": False},
    ]
    out["gpt2"] = t

    t = copy.deepcopy(base)
    t["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"String": "\t"}, "content": "    "},
        {"type": "Replace", "pattern": {"Regex": "[0-9]{4,}"}, "content": "#"},
        {"type": "NFD"},
        {"type": "Prepend", "prepend": "\u00bb"}]}
    t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        split("-", "MergedWithPrevious", kind="String"),
        split("[,;]", "Removed"),
        split(r"\p{Lu}", "MergedWithNext"),
        split(r"\s+", "Contiguous", invert=True),
        {"type": "Digits", "individual_digits": False},
        byte_level(regex=True)]}
    out["chain"] = t
    return out


def main():
    base = json.load(open(sys.argv[1], encoding="utf-8"))
    os.makedirs(sys.argv[2], exist_ok=True)
    for name, t in variants(base).items():
        with open(os.path.join(sys.argv[2], name + ".json"), "w", encoding="utf-8") as f:
            json.dump(t, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
