"""What both PyTorch step references share (lora_step_torch.py, quant_step_torch.py): the decoder
(llama/qwen2: RMSNorm, rotate-half RoPE, GQA causal attention written out, SwiGLU MLP, untied head,
mean token cross-entropy), PEFT's LoRA around a frozen projection, and the timed LoRA training step
(AdamW on the trainable parameters, warm-up steps untimed; callers report the best timed step: the
machine is shared, the fastest step is the least disturbed). The two references differ only in
their frozen projections (float32 weights, or int8 dynamic quantization), passed in as `linear`.
Only benchmarks use this; product code never calls python."""
import math
import time

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    d = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., d:], x[..., :d]), dim=-1) * sin


def rope_tables(head_dim, seq, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    f = torch.outer(torch.arange(seq).float(), inv)
    emb = torch.cat((f, f), dim=-1)
    return emb.cos(), emb.sin()


def causal_mask(seq):
    return torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)


def timed_steps(model, ids, targets, warmup=1, reps=3):
    """Run warmup + reps steps of loss = model(ids, targets); backward; AdamW.
    -> (params, times of the timed steps in seconds, last loss)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    times, loss = [], None
    for i in range(warmup + reps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return params, times, float(loss)


class LoraLinear(torch.nn.Module):
    """PEFT semantics (dropout 0): y = base(x) + (alpha/r) * B(A(x)), A Kaiming-uniform, B zero."""

    def __init__(self, base, inf, outf, r, alpha):
        super().__init__()
        self.base = base
        self.A = torch.nn.Parameter(torch.empty(r, inf))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = torch.nn.Parameter(torch.zeros(outf, r))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.A), self.B) * self.scaling


def projection(frozen, c):
    """linear(inf, outf, bias, target) for Decoder: frozen(inf, outf, bias), with LoRA when target is in c["targets"]
    (target None: the lm_head, never adapted). The frozen base is made first, then A (the order the seed fills them)."""

    def linear(inf, outf, bias, target):
        base = frozen(inf, outf, bias)
        return LoraLinear(base, inf, outf, c["r"], c["alpha"]) if target in c["targets"] else base

    return linear


class DecoderLayer(torch.nn.Module):
    def __init__(self, c, linear, eps):
        super().__init__()
        h, hd, nh, nkv, i, bias = c["hidden"], c["head_dim"], c["heads"], c["kv_heads"], c["intermediate"], c.get("qkv_bias", False)
        self.c, self.eps = c, eps
        self.ln1 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.ln2 = torch.nn.Parameter(torch.ones(h), requires_grad=False)
        self.q = linear(h, nh * hd, bias, "q_proj")
        self.k = linear(h, nkv * hd, bias, "k_proj")
        self.v = linear(h, nkv * hd, bias, "v_proj")
        self.o = linear(nh * hd, h, False, "o_proj")
        self.gate = linear(h, i, False, "gate_proj")
        self.up = linear(h, i, False, "up_proj")
        self.down = linear(i, h, False, "down_proj")

    def forward(self, x, cos, sin, mask):
        c = self.c
        b, s, _ = x.shape
        hx = rms_norm(x, self.ln1, self.eps)
        q = self.q(hx).view(b, s, c["heads"], c["head_dim"]).transpose(1, 2)
        k = self.k(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        v = self.v(hx).view(b, s, c["kv_heads"], c["head_dim"]).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = c["heads"] // c["kv_heads"]
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # explicit causal attention (torch 1.13 has no scaled_dot_product_attention; ours is explicit too)
        a = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(c["head_dim"]) + mask[:s, :s], dim=-1), v)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        hx = rms_norm(x, self.ln2, self.eps)
        return x + self.down(F.silu(self.gate(hx)) * self.up(hx))


class Decoder(torch.nn.Module):
    """Embedding, c["layers"] decoder layers, final norm, lm_head; forward(ids, targets) -> mean cross-entropy
    (targets -100 ignored). `linear` makes every projection (see projection())."""

    def __init__(self, c, linear, eps, rope_theta):
        super().__init__()
        self.emb = torch.nn.Parameter(torch.randn(c["vocab"], c["hidden"]) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList([DecoderLayer(c, linear, eps) for _ in range(c["layers"])])
        self.norm = torch.nn.Parameter(torch.ones(c["hidden"]), requires_grad=False)
        self.head = linear(c["hidden"], c["vocab"], False, None)
        self.eps = eps
        self.cos, self.sin = rope_tables(c["head_dim"], c["seq"], rope_theta)
        self.mask = causal_mask(c["seq"])

    def forward(self, ids, targets):
        x = F.embedding(ids, self.emb)
        for l in self.layers:
            x = l(x, self.cos, self.sin, self.mask)
        logits = self.head(rms_norm(x, self.norm, self.eps))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1), ignore_index=-100)
