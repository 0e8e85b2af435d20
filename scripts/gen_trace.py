#!/usr/bin/env python3
"""Write a request trace for `kvbm sim` and scripts/bench.

One request per line: <request_id> <salt> <n_tokens> <tok0> <tok1> ...
(u32 tokens). Each request is a cut of one of P shared prefixes (system
prompts, few-shot contexts), chosen with Zipf popularity, followed by a
fresh suffix; so prefix reuse, duplicates and eviction all happen.
"""
import argparse
import random
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--prefixes", type=int, default=64, help="distinct shared prefixes")
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--suffix", type=int, nargs=2, default=(64, 1024), metavar=("MIN", "MAX"))
    ap.add_argument("--zipf", type=float, default=1.1, help="popularity skew of the prefixes")
    ap.add_argument("--salt", type=int, default=0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if a.requests < 0 or a.prefixes < 1 or a.prefix_tokens < 2 or not 0 <= a.suffix[0] <= a.suffix[1]:
        ap.error("need requests >= 0, prefixes >= 1, prefix-tokens >= 2, 0 <= suffix MIN <= MAX")
    rng = random.Random(a.seed)
    prefixes = [[rng.randrange(1, 50000) for _ in range(a.prefix_tokens)] for _ in range(a.prefixes)]
    popularity = [1.0 / (rank + 1) ** a.zipf for rank in range(a.prefixes)]
    out = sys.stdout
    for rid in range(a.requests):
        shared = rng.choices(prefixes, popularity)[0]
        tokens = shared[:rng.randint(a.prefix_tokens // 2, a.prefix_tokens)]
        tokens += [rng.randrange(1, 50000) for _ in range(rng.randint(*a.suffix))]
        out.write("%d %d %d %s\n" % (rid, a.salt, len(tokens), " ".join(map(str, tokens))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
