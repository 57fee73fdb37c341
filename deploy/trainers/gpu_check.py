#!/usr/bin/env python3
"""One-shot check of fedlora against Hugging Face transformers + peft on a GPU machine (which has
PyTorch, transformers, peft, accelerate and safetensors, but no Node.js and no network). Its
inputs are prepared on a fedlora checkout by `npx tsx test/gpu/prepare-gpu-check.ts --out
gpu-check-bundle`; its outputs are read back there by `npx tsx test/gpu/read-back.ts`.

  python3 deploy/trainers/gpu_check.py --bundle gpu-check-bundle --out OUT

(a) PEFT loads what we publish: our tiny qwen2 and llama checkpoints, and adapters trained by our
    engine, loaded with transformers + peft in float32 (TF32 off) on the GPU; the log-probability
    of each of a fixed list of token ids is compared with our engine's (computed on the CPU when
    the bundle was made): max |difference| must be <= 1e-3.
(b) peft_trainer.py runs one round (bf16) on a job folder written by our agent on the shapes of
    DeepSeek-R1-Distill-Qwen-1.5B (random weights made here from the carried config.json), once
    on one GPU and, with several GPUs, with torchrun on all of them; out/adapter and
    metrics.json (with tokens/s) go to OUT/train-*/ for (c).
(c) back at the checkout: test/gpu/read-back.ts feeds OUT/train-*/ through the agent's contract
    reader (site-agent/agent/train-contract.ts) and builds the update the agent would send.

Writes OUT/report.json with every figure and exits 1 when a check fails.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-3


def check_logprobs(bundle, report):
    import torch
    import peft
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    expected = json.load(open(os.path.join(bundle, 'expected.json')))
    cases = []
    for case in expected['cases']:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(bundle, case['model']), torch_dtype=torch.float32, attn_implementation='eager')
        if case['adapter']:
            model = peft.PeftModel.from_pretrained(model, os.path.join(bundle, case['adapter']))
        model.to(device).eval()
        ids = torch.tensor([case['ids']], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        got = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0].cpu()
        ours = torch.tensor(case['logprobs'][1:], dtype=torch.float32)  # the first token has none
        diff = float((got - ours).abs().max())
        cases.append({'model': case['model'], 'adapter': case['adapter'], 'tokens': len(case['ids']), 'max_abs_diff': diff, 'ok': diff <= TOLERANCE})
        print(f"(a) {case['model']} + {case['adapter'] or 'no adapter'}: max |d logprob| = {diff:.2e} ({'ok' if diff <= TOLERANCE else 'FAIL'})", flush=True)
        del model
    report['logprobs'] = {'tolerance': TOLERANCE, 'device': device, 'cases': cases}
    return all(c['ok'] for c in cases)


def materialize_model(bundle, work):
    """Random bf16 weights with the carried config (initializer_range as transformers does)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src = os.path.join(bundle, 'r1-1.5b')
    dst = os.path.join(work, 'r1-1.5b')
    if os.path.exists(os.path.join(dst, 'config.json')):
        return dst
    cfg = AutoConfig.from_pretrained(src)
    torch.manual_seed(0)
    with torch.device('cuda' if torch.cuda.is_available() else 'cpu'):  # random init on the GPU: seconds, not minutes
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.save_pretrained(dst, safe_serialization=True, max_shard_size='2GB')
    for f in os.listdir(src):
        if f.startswith('tokenizer') or f == 'special_tokens_map.json':
            shutil.copy(os.path.join(src, f), dst)
    del model
    return dst


def run_trainer(bundle, work, out, name, launcher):
    """Rewrite the agent's job.json for this machine, run peft_trainer.py, keep out/ in OUT/name."""
    job_dir = os.path.join(work, name)
    shutil.rmtree(job_dir, ignore_errors=True)
    shutil.copytree(os.path.join(bundle, 'job'), job_dir)
    job_file = os.path.join(job_dir, 'job.json')
    job = json.load(open(job_file))
    job['model_dir'] = materialize_model(bundle, work)
    job['global_adapter_dir'] = os.path.join(job_dir, 'global_adapter')
    job['train_file'] = os.path.join(job_dir, 'train.jsonl')
    job['out_dir'] = os.path.join(job_dir, 'out')
    json.dump(job, open(job_file, 'w'), indent=2)
    cmd = launcher + [os.path.join(HERE, 'peft_trainer.py'), '--job', job_file, '--dtype', 'bf16']
    print(f"(b) {' '.join(cmd)}", flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=job_dir, env={**os.environ, 'FEDLORA_JOB': job_file})
    wall = time.time() - t0
    result = {'command': cmd, 'exit_status': r.returncode, 'wall_seconds': wall}
    if r.returncode == 0:
        keep = os.path.join(out, name)
        shutil.rmtree(keep, ignore_errors=True)
        os.makedirs(os.path.join(keep, 'out'))
        shutil.copytree(os.path.join(job_dir, 'out', 'adapter'), os.path.join(keep, 'out', 'adapter'))
        shutil.copy(os.path.join(job_dir, 'out', 'metrics.json'), os.path.join(keep, 'out', 'metrics.json'))
        shutil.copy(job_file, os.path.join(keep, 'job.json'))
        m = json.load(open(os.path.join(job_dir, 'out', 'metrics.json')))
        result.update({k: m.get(k) for k in ('tokens_per_s', 'steps', 'world_size', 'peak_gpu_memory_bytes', 'train_seconds', 'versions')})
        result['final_loss'] = m['loss'][-1] if m.get('loss') else None
        print(f"(b) {name}: {m.get('tokens_per_s', 0):.0f} tokens/s, {m.get('steps')} steps, final loss {result['final_loss']}", flush=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bundle', required=True, help='folder written by test/gpu/prepare-gpu-check.ts')
    p.add_argument('--out', required=True, help='where report.json and the trained adapters go')
    p.add_argument('--work', default=None, help='scratch space for the 1.5B-shaped model (default: OUT/../gpu-check-work)')
    p.add_argument('--skip-logprobs', action='store_true')
    p.add_argument('--skip-train', action='store_true')
    a = p.parse_args()
    sys.path.insert(0, HERE)
    import fedlora_contract as fc
    fc.require_packages('gpu_check.py', ['torch', 'transformers', 'peft', 'accelerate', 'safetensors'])
    import torch

    os.makedirs(a.out, exist_ok=True)
    work = a.work or os.path.join(os.path.dirname(os.path.abspath(a.out)), 'gpu-check-work')
    os.makedirs(work, exist_ok=True)
    gpus = torch.cuda.device_count()
    report = {'gpus': [torch.cuda.get_device_name(i) for i in range(gpus)], 'torch': torch.__version__}
    ok = True
    if not a.skip_logprobs:
        ok = check_logprobs(a.bundle, report) and ok
    if not a.skip_train:
        report['train'] = [run_trainer(a.bundle, work, a.out, 'train-1gpu', [sys.executable])]
        if gpus > 1:
            torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={gpus}']
            report['train'].append(run_trainer(a.bundle, work, a.out, f'train-{gpus}gpu', torchrun))
        ok = all(t['exit_status'] == 0 for t in report['train']) and ok
    json.dump(report, open(os.path.join(a.out, 'report.json'), 'w'), indent=2)
    print(json.dumps(report, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
