# Cross-check of fedlora's PEFT adapter files against what PEFT 0.x writes/reads, with torch only
# (the peft and safetensors packages are not installed; the safetensors format is simple enough
# to write and read here by hand, which also keeps this check independent of our TS code).
#
#   write <dir> <layers> <hidden> <kv_out> <inter> <r> <dtype> <adapter_name|-> : write a PEFT-style adapter
#   check <dir> <layers> <hidden> <kv_out> <inter>                            : validate ours as PEFT would, print B@A*s
import json, os, sys, re
import torch

sys.dont_write_bytecode = True  # nothing written into the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ref'))
from safetensors_torch import read_safetensors_meta as load_safetensors, write_safetensors  # noqa: E402

DT = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16}
# Fields of peft.LoraConfig (0.13) that save_pretrained writes; LoraConfig(**cfg) rejects others.
LORA_CONFIG_FIELDS = {
    'alpha_pattern', 'auto_mapping', 'base_model_name_or_path', 'bias', 'fan_in_fan_out', 'inference_mode',
    'init_lora_weights', 'layer_replication', 'layers_pattern', 'layers_to_transform', 'loftq_config', 'lora_alpha',
    'lora_dropout', 'megatron_config', 'megatron_core', 'modules_to_save', 'peft_type', 'r', 'rank_pattern',
    'revision', 'target_modules', 'task_type', 'use_dora', 'use_rslora', 'exclude_modules', 'lora_bias',
    'eva_config', 'layer_replication',
}


def dims(layers, hidden, kv, inter):
    return {'q_proj': (hidden, hidden), 'k_proj': (hidden, kv), 'v_proj': (hidden, kv), 'o_proj': (hidden, hidden),
            'gate_proj': (hidden, inter), 'up_proj': (hidden, inter), 'down_proj': (inter, hidden)}


def parent(t):
    return 'mlp' if t in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'


def write(d, layers, hidden, kv, inter, r, dtype, name):
    torch.manual_seed(0)
    targets = ['q_proj', 'v_proj', 'down_proj']
    cfg = {  # exactly PeftConfigMixin.save_pretrained: json.dumps(indent=2, sort_keys=True)
        'alpha_pattern': {}, 'auto_mapping': None, 'base_model_name_or_path': 'deepseek-ai/DeepSeek-R1-Distill-Llama-8B',
        'bias': 'none', 'fan_in_fan_out': False, 'inference_mode': True, 'init_lora_weights': True,
        'layer_replication': None, 'layers_pattern': None, 'layers_to_transform': None, 'loftq_config': {},
        'lora_alpha': 32, 'lora_dropout': 0.05, 'megatron_config': None, 'megatron_core': 'megatron.core',
        'modules_to_save': None, 'peft_type': 'LORA', 'r': r, 'rank_pattern': {}, 'revision': None,
        'target_modules': ['v_proj', 'down_proj', 'q_proj'], 'task_type': 'CAUSAL_LM', 'use_dora': False, 'use_rslora': False,
    }
    with open(f'{d}/adapter_config.json', 'w') as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))
    dm = dims(layers, hidden, kv, inter)
    tensors, expect = {}, {}
    mid = '' if name == '-' else f'.{name}'
    for l in range(layers):
        for t in targets:
            i, o = dm[t]
            base = f'base_model.model.model.layers.{l}.{parent(t)}.{t}'
            A = (torch.randn(r, i) * 0.1).to(DT[dtype])
            B = (torch.randn(o, r) * 0.1).to(DT[dtype])
            tensors[f'{base}.lora_A{mid}.weight'] = A
            tensors[f'{base}.lora_B{mid}.weight'] = B
            expect[f'{base}.lora_A.weight'] = A.float().flatten().tolist()
            expect[f'{base}.lora_B.weight'] = B.float().flatten().tolist()
    write_safetensors(f'{d}/adapter_model.safetensors', tensors, {'format': 'pt'})
    print(json.dumps(expect))


def check(d, layers, hidden, kv, inter):
    with open(f'{d}/adapter_config.json') as f:
        text = f.read()
    cfg = json.loads(text)
    errors = []
    if text != json.dumps(cfg, indent=2, sort_keys=True):
        errors.append('adapter_config.json is not formatted like json.dumps(indent=2, sort_keys=True)')
    unknown = set(cfg) - LORA_CONFIG_FIELDS
    if unknown:
        errors.append(f'unknown LoraConfig fields {sorted(unknown)}')
    for k, want in [('peft_type', 'LORA'), ('task_type', 'CAUSAL_LM'), ('bias', 'none'), ('fan_in_fan_out', False), ('use_dora', False)]:
        if cfg.get(k) != want:
            errors.append(f'{k} = {cfg.get(k)!r}, expected {want!r}')
    if not isinstance(cfg.get('r'), int) or not isinstance(cfg.get('lora_alpha'), (int, float)):
        errors.append('r / lora_alpha types')
    targets = cfg['target_modules']
    meta, tensors = load_safetensors(f'{d}/adapter_model.safetensors')
    if meta != {'format': 'pt'}:
        errors.append(f'metadata {meta!r} (transformers requires format=pt)')
    dm = dims(layers, hidden, kv, inter)
    r = cfg['r']
    want = {}
    for l in range(layers):
        for t in targets:
            i, o = dm[t]
            base = f'base_model.model.model.layers.{l}.{parent(t)}.{t}'
            want[f'{base}.lora_A.weight'] = [r, i]
            want[f'{base}.lora_B.weight'] = [o, r]
    got = {k: list(v.shape) for k, v in tensors.items()}
    if got != want:
        errors.append(f'keys/shapes differ: missing {sorted(set(want) - set(got))[:3]}, extra {sorted(set(got) - set(want))[:3]}, '
                      f'shape diffs {[(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]][:3]}')
    s = cfg['lora_alpha'] / (r ** 0.5 if cfg.get('use_rslora') else r)
    k0 = f'base_model.model.model.layers.0.{parent(targets[0])}.{targets[0]}'
    delta = (tensors[k0 + '.lora_B.weight'] @ tensors[k0 + '.lora_A.weight']) * s if not errors else None
    print(json.dumps({'errors': errors, 'module': k0, 'scaling': s, 'delta': delta.flatten().tolist() if delta is not None else None}))


if __name__ == '__main__':
    mode, d = sys.argv[1], sys.argv[2]
    nums = [int(x) for x in sys.argv[3:7]]
    if mode == 'write':
        write(d, *nums, int(sys.argv[7]), sys.argv[8], sys.argv[9])
    else:
        check(d, *nums)
