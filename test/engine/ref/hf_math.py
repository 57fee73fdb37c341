#!/usr/bin/env python3
"""Reference forward of transformers' LlamaForCausalLM / Qwen2ForCausalLM (+ PEFT LoRA) in torch,
written from modeling_llama.py / modeling_qwen2.py / modeling_rope_utils.py, reading config.json
and safetensors with plain python (safetensors_torch.py). Used by test/engine/parity*.test.ts.

stdin: JSON request (or a list of them, answered by a list, to pay torch's import once):
{model_dir, adapter (safetensors path or null), lora {r, alpha, use_rslora, targets} or
null, batch {B, S, input_ids, position_ids, segment_ids, targets} (flat lists), denominator}
stdout: JSON {token_logprobs: [B*S] log p(target) (target -100 -> 0), loss: float}
"""
import json, math, os, sys
import torch

sys.dont_write_bytecode = True  # nothing written into the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_torch import read_safetensors  # noqa: E402,F401  (also imported from here by other references)

torch.set_grad_enabled(False)


def inv_freq_of(cfg, dim):
    base = float(cfg.get('rope_theta', 10000.0))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get('rope_scaling')
    if not rs:
        return inv_freq
    kind = rs.get('rope_type', rs.get('type'))
    if kind == 'linear':
        return inv_freq / rs['factor']
    if kind == 'llama3':  # _compute_llama3_parameters
        factor = rs['factor']; low = rs['low_freq_factor']; high = rs['high_freq_factor']
        old = rs['original_max_position_embeddings']
        low_freq_wavelen = old / low
        high_freq_wavelen = old / high
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, inv_freq_llama)
    if kind == 'default':
        return inv_freq
    raise ValueError(kind)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def main():
    req = json.load(sys.stdin)
    out = [run(r) for r in req] if isinstance(req, list) else run(req)
    json.dump(out, sys.stdout)


def run(req):
    d = req['model_dir']
    cfg = json.load(open(os.path.join(d, 'config.json')))
    W = read_safetensors(os.path.join(d, 'model.safetensors'))
    qwen = cfg['model_type'] == 'qwen2'
    H = cfg['num_attention_heads']; KV = cfg.get('num_key_value_heads', H)
    hidden = cfg['hidden_size']; D = cfg.get('head_dim') or hidden // H
    eps = cfg['rms_norm_eps']
    qkv_bias = qwen or cfg.get('attention_bias', False)
    o_bias = (not qwen) and cfg.get('attention_bias', False)

    lora = req.get('lora')
    A = read_safetensors(req['adapter']) if req.get('adapter') else {}
    scaling = 0.0
    if lora:
        scaling = lora['alpha'] / math.sqrt(lora['r']) if lora.get('use_rslora') else lora['alpha'] / lora['r']

    def linear(x, layer, parent, name, bias):
        w = W[f'model.layers.{layer}.{parent}.{name}.weight']
        y = x @ w.T
        if bias:
            y = y + W[f'model.layers.{layer}.{parent}.{name}.bias']
        ka = f'base_model.model.model.layers.{layer}.{parent}.{name}.lora_A.weight'
        if ka in A:
            kb = ka.replace('lora_A', 'lora_B')
            y = y + (x @ A[ka].T @ A[kb].T) * scaling
        return y

    def rms(x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + eps))

    b = req['batch']
    B, S = b['B'], b['S']
    ids = torch.tensor(b['input_ids'], dtype=torch.int64).reshape(B, S)
    pos = torch.tensor(b['position_ids'], dtype=torch.int64).reshape(B, S)
    seg = torch.tensor(b['segment_ids'], dtype=torch.int64).reshape(B, S)
    tgt = torch.tensor(b['targets'], dtype=torch.int64).reshape(B, S)

    inv_freq = inv_freq_of(cfg, D)
    freqs = (inv_freq[None, :, None].float() @ pos[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [B, 1, S, D]

    # causal + same-segment mask; padding (segment 0) attends only to itself
    i = torch.arange(S)
    allowed = (i[None, :, None] >= i[None, None, :]) & (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] != 0)
    allowed = allowed | ((seg[:, :, None] == 0) & (i[None, :, None] == i[None, None, :]))
    mask = torch.zeros(B, 1, S, S)
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)

    x = W['model.embed_tokens.weight'][ids]
    for l in range(cfg['num_hidden_layers']):
        p = f'model.layers.{l}'
        h = rms(x, W[f'{p}.input_layernorm.weight'])
        q = linear(h, l, 'self_attn', 'q_proj', qkv_bias).view(B, S, H, D).transpose(1, 2)
        k = linear(h, l, 'self_attn', 'k_proj', qkv_bias).view(B, S, KV, D).transpose(1, 2)
        v = linear(h, l, 'self_attn', 'v_proj', qkv_bias).view(B, S, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k[:, :, None].expand(B, KV, H // KV, S, D).reshape(B, H, S, D)  # repeat_kv
        v = v[:, :, None].expand(B, KV, H // KV, S, D).reshape(B, H, S, D)
        att = (q @ k.transpose(2, 3)) * (D ** -0.5) + mask
        att = torch.softmax(att, dim=-1, dtype=torch.float32)
        o = (att @ v).transpose(1, 2).reshape(B, S, H * D)
        x = x + linear(o, l, 'self_attn', 'o_proj', o_bias)
        h = rms(x, W[f'{p}.post_attention_layernorm.weight'])
        g = linear(h, l, 'mlp', 'gate_proj', False)
        u = linear(h, l, 'mlp', 'up_proj', False)
        x = x + linear(torch.nn.functional.silu(g) * u, l, 'mlp', 'down_proj', False)
    x = rms(x, W['model.norm.weight'])
    head = W['model.embed_tokens.weight'] if cfg.get('tie_word_embeddings') or 'lm_head.weight' not in W else W['lm_head.weight']
    logp = torch.log_softmax((x @ head.T).float(), dim=-1)
    counted = tgt != -100
    picked = logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
    loss = -(picked * counted).sum() / req['denominator']
    return {'token_logprobs': picked.reshape(-1).tolist(), 'loss': loss.item()}


if __name__ == '__main__':
    main()
