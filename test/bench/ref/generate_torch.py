"""PyTorch CPU reference for test/bench/serve.bench.ts: greedy generation with a key/value cache
of a Hugging Face llama/qwen2 folder (same math as test/engine/ref/hf_math.py, whose
safetensors reader and RoPE it reuses), for a batch of identical prompts.
  python3 generate_torch.py '{"model_dir":..., "prompt_ids":[...], "new_tokens":64, "batch":1}'
  -> JSON {"ttft_s":..., "decode_tokens_per_s":..., "peak_rss_mb":...}
ttft = prefill + the first sampled token; decode tokens/s counts every sequence of the batch.
Only benchmarks use this; product code never calls python."""
import json, os, resource, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'engine', 'ref'))
from hf_math import inv_freq_of, read_safetensors, rotate_half  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(os.cpu_count())


def main():
    req = json.loads(sys.argv[1])
    d = req['model_dir']
    cfg = json.load(open(os.path.join(d, 'config.json')))
    index = os.path.join(d, 'model.safetensors.index.json')
    files = sorted(set(json.load(open(index))['weight_map'].values())) if os.path.exists(index) else ['model.safetensors']
    W = {k: v for f in files for k, v in read_safetensors(os.path.join(d, f)).items()}
    qwen = cfg['model_type'] == 'qwen2'
    H = cfg['num_attention_heads']; KV = cfg.get('num_key_value_heads', H)
    D = cfg.get('head_dim') or cfg['hidden_size'] // H
    eps = cfg['rms_norm_eps']; L = cfg['num_hidden_layers']
    bias = qwen or cfg.get('attention_bias', False)
    lm_head = W['model.embed_tokens.weight'] if cfg.get('tie_word_embeddings') else W['lm_head.weight']
    inv_freq = inv_freq_of(cfg, D)
    B = req['batch']; N = req['new_tokens']
    ids = torch.tensor([req['prompt_ids']] * B, dtype=torch.int64)

    def lin(x, l, name):
        y = x @ W[f'model.layers.{l}.self_attn.{name}.weight'].T
        return y + W[f'model.layers.{l}.self_attn.{name}.bias'] if bias and name != 'o_proj' else y

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def forward(tok, start, cache):
        S = tok.shape[1]
        pos = torch.arange(start, start + S)
        freqs = torch.outer(pos.float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = W['model.embed_tokens.weight'][tok]
        for l in range(L):
            p = f'model.layers.{l}'
            h = rms(x, W[f'{p}.input_layernorm.weight'])
            q = lin(h, l, 'q_proj').view(B, S, H, D).transpose(1, 2)
            k = lin(h, l, 'k_proj').view(B, S, KV, D).transpose(1, 2)
            v = lin(h, l, 'v_proj').view(B, S, KV, D).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if l in cache:
                k = torch.cat((cache[l][0], k), dim=2); v = torch.cat((cache[l][1], v), dim=2)
            cache[l] = (k, v)
            T = k.shape[2]
            kk = k[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)
            vv = v[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)
            att = (q @ kk.transpose(2, 3)) * (D ** -0.5)
            if S > 1:
                att = att + torch.triu(torch.full((S, T), float('-inf')), diagonal=T - S + 1)
            o = (att.softmax(-1) @ vv).transpose(1, 2).reshape(B, S, H * D)
            x = x + o @ W[f'{p}.self_attn.o_proj.weight'].T
            h = rms(x, W[f'{p}.post_attention_layernorm.weight'])
            g = h @ W[f'{p}.mlp.gate_proj.weight'].T
            u = h @ W[f'{p}.mlp.up_proj.weight'].T
            x = x + (torch.nn.functional.silu(g) * u) @ W[f'{p}.mlp.down_proj.weight'].T
        return rms(x[:, -1], W['model.norm.weight']) @ lm_head.T

    # warm-up (allocator, kernels), then the measured run
    forward(ids, 0, {})
    t0 = time.perf_counter()
    cache = {}
    nxt = forward(ids, 0, cache).argmax(-1)
    t1 = time.perf_counter()
    cur = ids.shape[1]
    for _ in range(N - 1):
        nxt = forward(nxt[:, None], cur, cache).argmax(-1)
        cur += 1
    t2 = time.perf_counter()
    json.dump({'ttft_s': t1 - t0, 'decode_tokens_per_s': B * (N - 1) / (t2 - t1), 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, sys.stdout)


main()
