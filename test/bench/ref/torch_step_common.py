"""What both PyTorch step references share (lora_step_torch.py, quant_step_torch.py): the decoder's
RMSNorm, rotate-half RoPE and its tables, the causal mask, and the timed LoRA training step (AdamW
on the trainable parameters, warm-up steps untimed; callers report the best timed step: the machine
is shared, the fastest step is the least disturbed).
Only benchmarks use this; product code never calls python."""
import time

import torch


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
