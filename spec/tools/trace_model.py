#!/usr/bin/env python3
"""Independent model of the JSONL trace loader, for spec/trace_spec.lua.

usage: trace_model.py TRACE.jsonl TRACE_BLOCK_SIZE

Reads a Mooncake/Dynamo JSONL trace with Python's json module and builds the
prompts as Dynamo's loader does: hash id h becomes TRACE_BLOCK_SIZE copies of
the token h, the concatenation cut to min(input_length, TRACE_BLOCK_SIZE *
len(hash_ids)). Prints "requests total_tokens", then one line per request:
"n_tokens timestamp input_length output_length" followed by the prompt as
runs "token count token count ...".
"""
import json
import sys


def first(obj, *names):
    for name in names:
        if name in obj:
            return obj[name]
    raise KeyError(names[0])


def main():
    path, bs = sys.argv[1], int(sys.argv[2])
    rows, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            obj = json.loads(line)
            ids = obj["hash_ids"]
            inp = first(obj, "input_length", "input_tokens")
            out = first(obj, "output_length", "output_tokens")
            ts = first(obj, "timestamp", "created_time")
            n = min(inp, bs * len(ids))
            runs, left = [], n
            for h in ids:
                if left == 0:
                    break
                k = min(bs, left)
                runs += [h, k]
                left -= k
            total += n
            rows.append(" ".join(str(x) for x in [n, ts, inp, out] + runs))
    print(len(rows), total)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
