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
import json, os, resource, sys, time

import torch
from torch_step_common import Decoder, projection, timed_steps

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


def main(c):
    torch.manual_seed(0)
    c.setdefault("head_dim", c["hidden"] // c["heads"])
    t0 = time.perf_counter()
    frozen = lambda inf, outf, bias: Frozen(inf, outf, bias, c["weights"] == "int8")
    m = Decoder(c, projection(frozen, c), 1e-6, c["rope_theta"])
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
