"""Reference for test/bench/aggregate.bench.ts: Flower's FedAvg aggregate (flwr.server.strategy.
aggregate.aggregate): a list of arrays per client, weighted average
reduce(np.add, [w * x ...]) / sum(w). Loads the same stored updates (the float32 tensor data of
each safetensors file, which starts at byte `offset`), reports seconds (best of reps), peak RSS
growth and a checksum of the result."""
import json
import resource
import sys
import time
from functools import reduce

import numpy as np


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def aggregate(results):
    num_examples_total = sum(n for _, n in results)
    weighted_weights = [[layer * n for layer in weights] for weights, n in results]
    return [reduce(np.add, layer_updates) / num_examples_total for layer_updates in zip(*weighted_weights)]


def main():
    cfg = json.loads(sys.argv[1])
    files, weights, p, reps, offset = cfg['files'], cfg['weights'], cfg['P'], cfg['reps'], cfg['offset']
    base = rss_bytes()
    best = float('inf')
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        results = [([np.fromfile(f, dtype=np.float32, count=p, offset=offset)], w) for f, w in zip(files, weights)]
        out = aggregate(results)[0]
        best = min(best, time.perf_counter() - t0)
        del results
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'seconds': best, 'peakRssDelta': peak - base, 'checksum': float(np.sum(out[:100000], dtype=np.float64))}))


if __name__ == '__main__':
    main()
