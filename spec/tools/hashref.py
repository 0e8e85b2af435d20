#!/usr/bin/env python3
"""Random hashing cases for spec/hash_property_spec.lua.

Prints one case per line:  <block_size> <salt> <n> <tok>... | <plh hex>...
(salt as an unsigned decimal; one 32-hex-digit lineage hash per full block).

The expected hashes come from the reference model dynamo_tokens_ref.py when it
can be found (KVBM_REF_MODEL, or ../shared/vectors next to the source tree),
else from the small model below, written from tokens-hashing.md; both need
Debian's python3-xxhash. The first line says which model answered.
"""
import argparse
import importlib.util
import os
import random
import struct
import sys

import xxhash

U64 = (1 << 64) - 1


def own_model_plhs(tokens, bs, salt):
    """Layout B: block hash seeded by salt, chain seed 1337, (P, R) by mode."""
    out, parent = [], None
    for i in range(len(tokens) // bs):
        chunk = tokens[i * bs:(i + 1) * bs]
        bh = xxhash.xxh3_64_intdigest(struct.pack("<%dI" % bs, *chunk), seed=salt)
        seq = bh if parent is None else xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent, bh), seed=1337)
        mode = 0 if i < 256 else 1 if i < 65536 else 2
        r = (54, 46, 38)[mode]
        plh = (mode << 126) | (i << (64 + r)) | (seq << r) | ((parent or 0) & ((1 << r) - 1))
        out.append(plh)
        parent = seq
    return out


def load_reference():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("KVBM_REF_MODEL", "")]
    for up in ("../../..", "../.."):
        candidates.append(os.path.join(here, up, "shared/vectors/dynamo_tokens_ref.py"))
    for path in candidates:
        if path and os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("dynamo_tokens_ref", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return os.path.normpath(path), mod
    return None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    path, ref = load_reference()
    print("# model: %s" % (path or "spec/tools/hashref.py (built-in)"))
    rng = random.Random(a.seed)
    for _ in range(a.cases):
        bs = rng.choice([1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 64, rng.randrange(1, 130)])
        salt = rng.choice([0, 1337, 42, rng.getrandbits(64), rng.getrandbits(16)])
        n = rng.randrange(0, 12 * bs + 1) if bs > 1 else rng.randrange(0, 400)
        hi = rng.choice([50000, 1 << 32])
        toks = [rng.randrange(0, hi) for _ in range(n)]
        if ref is not None:
            blocks, _ = ref.from_slice(toks, bs, salt)
            plhs = [b["plh"] for b in blocks]
            assert plhs == own_model_plhs(toks, bs, salt), "built-in model disagrees with the reference"
        else:
            plhs = own_model_plhs(toks, bs, salt)
        print("%d %d %d %s | %s" % (bs, salt, n, " ".join(map(str, toks)),
                                    " ".join("%032x" % p for p in plhs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
