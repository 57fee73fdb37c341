"""PyTorch CPU reference for test/bench/quant-*.bench.ts: one LoRA training step (forward + backward +
AdamW on the LoRA parameters) of a decoder with the shapes of a real DeepSeek model (qwen2: q/k/v
biases, GQA, SwiGLU, untied lm_head), LoRA on the configured projections, batch 1.
  weights "f32":  frozen float32 base weights.
  weights "int8": every base Linear from torch.ao.nn.quantized.dynamic.Linear.from_float, the module
                  torch.ao.quantization.quantize_dynamic puts in place of nn.Linear (int8 weights,
                  activations quantized at run time). Built one layer at a time (a 7B float model
                  does not fit in memory), so quantize_dynamic's per-module conversion is called
                  directly. Dynamic quantized Linear has no backward; the input gradient goes through
                  the dequantized weight, one layer at a time (what QLoRA does).
  python3 quant_step_torch.py '{"layers":28,"hidden":1536,...,"weights":"int8"}'
  -> JSON {"tokens_per_s", "step_s", "load_s", "peak_rss_bytes", "loss"}
Only benchmarks use this; product code never calls python."""
import json, math, os, resource, sys, time

import torch
import torch.nn.functional as F
from torch_step_common import causal_mask, rms_norm, rope, rope_tables, timed_steps

torch.set_num_threads(os.cpu_count())
if "onednn" in torch.backends.quantized.supported_engines:
    torch.backends.quantized.engine = "onednn"  # the x86 engine this torch build has (no fbgemm)


class DequantGrad(torch.autograd.Function):
    """y = dynamic int8 linear(x); dx = dy · dequant(W)."""

    @staticmethod
    def forward(ctx, x, qlin):
        ctx.qlin = qlin
        return qlin(x)

    @staticmethod
    def backward(ctx, g):
        w = ctx.qlin.weight().dequantize()
        return g.reshape(-1, g.shape[-1]).matmul(w).reshape(*g.shape[:-1], w.shape[1]), None


class Frozen(torch.nn.Module):
    def __init__(self, inf, outf, bias, int8):
        super().__init__()
        lin = torch.nn.Linear(inf, outf, bias=bias)
        with torch.no_grad():
            lin.weight.normal_(0, 0.02)
            if bias:
                lin.bias.zero_()
        lin.requires_grad_(False)
        if int8:
            lin.qconfig = torch.ao.quantization.default_dynamic_qconfig  # quantize_dynamic's default
            self.q = torch.ao.nn.quantized.dynamic.Linear.from_float(lin)
            self.lin = None
        else:
            self.q = None
            self.lin = lin

    def forward(self, x):
        return DequantGrad.apply(x, self.q) if self.q is not None else self.lin(x)


class LoraLinear(torch.nn.Module):
    def __init__(self, inf, outf, bias, c, target):
        super().__init__()
        self.base = Frozen(inf, outf, bias, c["weights"] == "int8")
        self.lora = target in c["targets"]
        if self.lora:
            self.A = torch.nn.Parameter(torch.empty(c["r"], inf))
            torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            self.B = torch.nn.Parameter(torch.zeros(outf, c["r"]))
            self.scaling = c["alpha"] / c["r"]

    def forward(self, x):
        y = self.base(x)
        if self.lora:
            y = y + F.linear(F.linear(x, self.A), self.B) * self.scaling
        return y


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd, nh, nkv, i, bias = c["hidden"], c["head_dim"], c["heads"], c["kv_heads"], c["intermediate"], c["qkv_bias"]
        self.c = c
        self.ln1 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.ln2 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.q = LoraLinear(h, nh * hd, bias, c, "q_proj")
        self.k = LoraLinear(h, nkv * hd, bias, c, "k_proj")
        self.v = LoraLinear(h, nkv * hd, bias, c, "v_proj")
        self.o = LoraLinear(nh * hd, h, False, c, "o_proj")
        self.gate = LoraLinear(h, i, False, c, "gate_proj")
        self.up = LoraLinear(h, i, False, c, "up_proj")
        self.down = LoraLinear(i, h, False, c, "down_proj")

    def forward(self, x, cos, sin, mask):
        c = self.c
        b, s, _ = x.shape
        hx = rms_norm(x, self.ln1, 1e-6)
        q = self.q(hx).view(b, s, c["heads"], c["head_dim"]).transpose(1, 2)
        k = self.k(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        v = self.v(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = c["heads"] // c["kv_heads"]
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(c["head_dim"]) + mask, dim=-1), v)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        hx = rms_norm(x, self.ln2, 1e-6)
        return x + self.down(F.silu(self.gate(hx)) * self.up(hx))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.emb = torch.nn.Parameter(torch.randn(c["vocab"], c["hidden"]) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList([Layer(c) for _ in range(c["layers"])])
        self.norm = torch.nn.Parameter(torch.ones(c["hidden"]), requires_grad=False)
        self.head = Frozen(c["hidden"], c["vocab"], False, c["weights"] == "int8")
        self.cos, self.sin = rope_tables(c["head_dim"], c["seq"], c["rope_theta"])
        self.mask = causal_mask(c["seq"])

    def forward(self, ids, targets):
        x = F.embedding(ids, self.emb)
        for l in self.layers:
            x = l(x, self.cos, self.sin, self.mask)
        logits = self.head(rms_norm(x, self.norm, 1e-6))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)


def main(c):
    torch.manual_seed(0)
    c.setdefault("head_dim", c["hidden"] // c["heads"])
    t0 = time.perf_counter()
    m = Model(c)
    load_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, c["vocab"], (1, c["seq"]), generator=g)
    tgt = torch.roll(ids, -1, dims=1)
    tgt[:, -1] = -100
    _, times, loss = timed_steps(m, ids, tgt, c.get("warmup", 1), c.get("reps", 2))
    return {"tokens_per_s": c["seq"] / min(times), "step_s": times, "load_s": load_s, "loss": loss,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "threads": torch.get_num_threads(),
            "engine": torch.backends.quantized.engine, "torch": torch.__version__}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
