"""PyTorch reference for test/bench/lora-step.bench.ts: one LoRA training step (forward +
backward + AdamW) of a llama decoder with the same config as ours, base frozen, LoRA on the
configured projections (PEFT semantics: y = W x + (alpha/r) * B(A(dropout(x)))), mean token
cross-entropy. Self-contained (no transformers). Modes:
  python3 lora_step_torch.py step  '{"layers":8,"hidden":512,...}'  -> JSON {"tokens_per_s":..., "step_s":[...]}
  python3 lora_step_torch.py sgemm '{"n":2048,"reps":5}'           -> JSON {"gflops":...}
Only benchmarks use this; product code never calls python."""
import json, os, sys, time

import torch
import torch.nn.functional as F
from torch_step_common import Decoder, projection, timed_steps

torch.set_num_threads(os.cpu_count())


class FrozenWeight(torch.nn.Module):
    """A frozen float32 projection without bias, N(0, 0.02) weights."""

    def __init__(self, inf, outf, bias):
        super().__init__()
        assert not bias, "the llama reference has no projection biases"
        self.weight = torch.nn.Parameter(torch.randn(outf, inf) * 0.02, requires_grad=False)

    def forward(self, x):
        return F.linear(x, self.weight)


def step_bench(c):
    torch.manual_seed(0)
    c.setdefault("head_dim", c["hidden"] // c["heads"])
    m = Decoder(c, projection(FrozenWeight, c), 1e-5, 10000.0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, c["vocab"], (c["batch"], c["seq"]), generator=g)
    tgt = torch.roll(ids, -1, dims=1)
    tgt[:, -1] = -100
    params, times, loss = timed_steps(m, ids, tgt, c.get("warmup", 1), c.get("reps", 3))
    return {"tokens_per_s": c["batch"] * c["seq"] / min(times), "step_s": times, "loss": loss, "threads": torch.get_num_threads(),
            "trainable": sum(p.numel() for p in params)}


def sgemm_bench(c):
    n, reps = c.get("n", 2048), c.get("reps", 5)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9, "n": n, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    mode, cfg = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    print(json.dumps(step_bench(cfg) if mode == "step" else sgemm_bench(cfg)))
