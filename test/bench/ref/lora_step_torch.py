"""PyTorch reference for test/bench/lora-step.bench.ts: one LoRA training step (forward +
backward + AdamW) of a llama decoder with the same config as ours, base frozen, LoRA on the
configured projections (PEFT semantics: y = W x + (alpha/r) * B(A(dropout(x)))), mean token
cross-entropy. Self-contained (no transformers). Modes:
  python3 lora_step_torch.py step  '{"layers":8,"hidden":512,...}'  -> JSON {"tokens_per_s":..., "step_s":[...]}
  python3 lora_step_torch.py sgemm '{"n":2048,"reps":5}'           -> JSON {"gflops":...}
Only benchmarks use this; product code never calls python."""
import json, math, os, sys, time

import torch
import torch.nn.functional as F
from torch_step_common import causal_mask, rms_norm, rope, rope_tables, timed_steps

torch.set_num_threads(os.cpu_count())


class LoraLinear(torch.nn.Module):
    def __init__(self, inf, outf, r, alpha, lora):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(outf, inf) * 0.02, requires_grad=False)
        self.lora = lora
        if lora:
            self.A = torch.nn.Parameter(torch.empty(r, inf))
            torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            self.B = torch.nn.Parameter(torch.zeros(outf, r))
            self.scaling = alpha / r

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora:
            y = y + F.linear(F.linear(x, self.A), self.B) * self.scaling
        return y


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd, nh, nkv, r, a, t = c["hidden"], c["head_dim"], c["heads"], c["kv_heads"], c["r"], c["alpha"], c["targets"]
        self.c = c
        self.ln1 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.ln2 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.q = LoraLinear(h, nh * hd, r, a, "q_proj" in t)
        self.k = LoraLinear(h, nkv * hd, r, a, "k_proj" in t)
        self.v = LoraLinear(h, nkv * hd, r, a, "v_proj" in t)
        self.o = LoraLinear(nh * hd, h, r, a, "o_proj" in t)
        self.gate = LoraLinear(h, c["intermediate"], r, a, "gate_proj" in t)
        self.up = LoraLinear(h, c["intermediate"], r, a, "up_proj" in t)
        self.down = LoraLinear(c["intermediate"], h, r, a, "down_proj" in t)

    mask = None

    def forward(self, x, cos, sin):
        c = self.c
        b, s, _ = x.shape
        hx = rms_norm(x, self.ln1, 1e-5)
        q = self.q(hx).view(b, s, c["heads"], c["head_dim"]).transpose(1, 2)
        k = self.k(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        v = self.v(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = c["heads"] // c["kv_heads"]
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        # explicit causal attention (torch 1.13 has no scaled_dot_product_attention; ours is explicit too)
        sc = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(c["head_dim"]) + self.mask[:s, :s]
        a = torch.matmul(torch.softmax(sc, dim=-1), v)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        hx = rms_norm(x, self.ln2, 1e-5)
        return x + self.down(F.silu(self.gate(hx)) * self.up(hx))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = torch.nn.Parameter(torch.randn(c["vocab"], c["hidden"]) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList([Layer(c) for _ in range(c["layers"])])
        self.norm = torch.nn.Parameter(torch.ones(c["hidden"]), requires_grad=False)
        self.head = torch.nn.Parameter(torch.randn(c["vocab"], c["hidden"]) * 0.02, requires_grad=False)
        self.cos, self.sin = rope_tables(c["head_dim"], c["seq"], 10000.0)
        Layer.mask = causal_mask(c["seq"])

    def forward(self, ids, targets):
        x = F.embedding(ids, self.emb)
        for l in self.layers:
            x = l(x, self.cos, self.sin)
        logits = F.linear(rms_norm(x, self.norm, 1e-5), self.head)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1), ignore_index=-100)


def step_bench(c):
    torch.manual_seed(0)
    c.setdefault("head_dim", c["hidden"] // c["heads"])
    m = Model(c)
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
