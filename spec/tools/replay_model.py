#!/usr/bin/env python3
"""An independent model of the trace replay of lua/kvbm/replay.lua with the LRU
backend, for spec/replay_spec.lua. It shares no code with kvbm: blocks are
identified by their whole token prefix (not by hashes), and the pool is a
few dicts and an OrderedDict.

Usage: replay_model.py TRACE BLOCK_COUNT WINDOW
Prints: hits allocations rejected evictions
"""
import sys
from collections import OrderedDict, deque

BLOCK = 16


def replay(path, count, window):
    reset = deque(range(count))      # reset pool, FIFO
    inactive = OrderedDict()         # slot -> None, oldest release first
    owner = {}                       # block identity -> slot (primary or inactive)
    state, ident, refs, keeps = {}, {}, {}, {}
    hits = allocs = rejected = evictions = 0
    held = deque()

    def acquire(key):
        s = owner.get(key)
        if s is None:
            return None
        if state[s] == "inactive":
            del inactive[s]
            state[s], refs[s] = "primary", 1
        else:
            refs[s] += 1
        return s

    def release(s):
        while s is not None:
            refs[s] -= 1
            if refs[s]:
                return
            if state[s] == "duplicate":
                state[s] = "reset"
                reset.append(s)
                s = keeps.pop(s)
            else:
                state[s] = "inactive"
                inactive[s] = None
                s = None

    with open(path) as f:
        for line in f:
            nums = list(map(int, line.split()))
            if len(nums) < 3:
                continue
            salt, n, toks = nums[1], nums[2], nums[3:]
            if len(held) == window:
                for s in held.popleft():
                    release(s)
            keys, key = [], (salt,)
            for i in range(n // BLOCK):
                key = (key, tuple(toks[i * BLOCK:(i + 1) * BLOCK]))
                keys.append(key)
            mine = []
            for key in keys:
                s = acquire(key)
                if s is None:
                    break
                mine.append(s)
            h = len(mine)
            hits += h
            need = len(keys) - h
            if need > len(reset) + len(inactive):
                rejected += 1
                for s in mine:
                    release(s)
                continue
            new = []
            for _ in range(need):
                if reset:
                    s = reset.popleft()
                else:
                    s, _ = inactive.popitem(last=False)
                    del owner[ident[s]]
                    evictions += 1
                state[s] = "mutable"
                new.append(s)
            allocs += need
            for s, key in zip(new, keys[h:]):
                existing = acquire(key)
                ident[s], refs[s] = key, 1
                if existing is None:
                    state[s], owner[key] = "primary", s
                else:                       # Allow: a duplicate keeps the primary alive
                    state[s], keeps[s] = "duplicate", existing
                mine.append(s)
            held.append(mine)
    return hits, allocs, rejected, evictions


if __name__ == "__main__":
    print(*replay(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
