#!/usr/bin/env python3
"""fedlora's reference external evaluator: scores an adapter on the site's held-out set with
transformers + peft, implementing the site agent's external-evaluation contract
(site-agent/agent/eval-command.ts, deploy/README.md), so a site that trains with
peft_trainer.py evaluates with the same stack (a base that only fits there can be evaluated).

  in   $FEDLORA_EVAL_JOB (or --job) = <evaldir>/job.json, adapter/ (absent: the base model),
       heldout.jsonl, choices.jsonl, generate.jsonl (a part whose file is null is not scored)
  out  <evaldir>/out/scores.json
       {"heldout":  {"loss": mean -log p over assistant tokens, "tokens": N, "seconds": s,
                     "items": [{"nll": summed -log p of the item, "tokens": n}]},
        "choices":  {"predicted": [argmax of the options' mean per-token log p], "seconds": s,
                     "scores": [[mean per-token log p of each option]], "item_seconds": [s per item]},
        "generate": {"texts": [greedy continuation, special tokens removed], "new_tokens": N, "seconds": s,
                     "item_seconds": [s per item]}}

The agent computes the metrics (loss, perplexity, accuracy, macro-F1, exact match, rates) from
these scores itself, as for its built-in engine; answers never reach this script.
One process: --device-map auto spreads a base larger than one GPU over all visible GPUs.
Exit 2: bad job; exit 3: missing package.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_contract as fc  # noqa: E402

PROG = 'peft_evaluator.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description='Score an adapter on the held-out set with transformers + peft (fedlora external-evaluation contract).')
    p.add_argument('--job', help='job.json (default: $FEDLORA_EVAL_JOB, set by the site agent)')
    p.add_argument('--quantize', choices=['none', '4bit', '8bit'], default=None,
                   help="frozen base weights as in training (bitsandbytes); default: job.json's quantize (int4 -> 4bit, int8 -> 8bit), else none")
    p.add_argument('--dtype', choices=['bf16', 'fp16', 'fp32'], default=None, help='default: bf16 on GPUs that support it, else fp32')
    p.add_argument('--device-map', default=None, help="e.g. auto: spread the base over all visible GPUs (accelerate)")
    p.add_argument('--check', action='store_true', help='check the job and print what would be scored; score nothing (needs no ML packages)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        job = fc.read_eval_job(fc.job_path(args.job, 'FEDLORA_EVAL_JOB'))
        parts = {k: len(fc.read_jsonl(job[f])) for k, f in (('heldout', 'heldout_file'), ('choices', 'choices_file'), ('generate', 'generate_file')) if job.get(f)}
    except fc.JobError as e:
        fc.die(PROG, str(e), fc.EXIT_BAD_JOB)
    if args.quantize is None:  # the site's model.quantize, as the agent wrote it
        args.quantize = {'int4': '4bit', 'int8': '8bit'}.get(job.get('quantize') or 'none', 'none')
    if args.check:
        print(json.dumps({'adapter': job.get('adapter_dir'), 'items': parts, 'quantize': args.quantize}, indent=2))
        return
    fc.require_packages(PROG, ['torch', 'transformers', 'peft', 'accelerate', 'safetensors'] + (['bitsandbytes'] if args.quantize != 'none' else []))
    try:
        scores = evaluate(job, args)
    except fc.JobError as e:
        fc.die(PROG, str(e), fc.EXIT_BAD_JOB)
    os.makedirs(job['out_dir'], exist_ok=True)
    with open(os.path.join(job['out_dir'], 'scores.json'), 'w') as f:
        json.dump(scores, f)


def evaluate(job, args):
    import torch
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    dtype_name = args.dtype or ('bf16' if cuda and torch.cuda.is_bf16_supported() else 'fp32')
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[dtype_name]
    load = {'torch_dtype': dtype}
    if args.quantize != 'none':
        from transformers import BitsAndBytesConfig
        load['quantization_config'] = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
                                       if args.quantize == '4bit' else BitsAndBytesConfig(load_in_8bit=True))
    if args.device_map or args.quantize != 'none':
        load['device_map'] = args.device_map or {'': 0}
    tok = AutoTokenizer.from_pretrained(job['model_dir'])
    model = AutoModelForCausalLM.from_pretrained(job['model_dir'], **load)
    if job.get('adapter_dir'):
        model = peft.PeftModel.from_pretrained(model, job['adapter_dir'])
    if 'device_map' not in load:
        model.to('cuda' if cuda else 'cpu')
    model.eval()
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def token_logprobs(ids):
        """log p(ids[t] | ids[:t]) for t >= 1 (float32)."""
        x = torch.tensor([ids], device=device)
        logits = model(input_ids=x).logits[0, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]

    scores = {}
    with torch.no_grad():
        if job.get('heldout_file'):
            sync(); t0 = time.perf_counter()
            nll, n, items = 0.0, 0, []
            for i, row in enumerate(fc.read_jsonl(job['heldout_file'])):
                ids, labels = fc.chat_to_example(fc.messages_of(row, f"{job['heldout_file']}:{i + 1}"), tok)
                lp = token_logprobs(ids)
                counted = torch.tensor([l != -100 for l in labels[1:]], device=device)
                item = -float((lp * counted).sum())
                items.append({'nll': item, 'tokens': int(counted.sum())})
                nll += item
                n += int(counted.sum())
            sync()
            if n == 0:
                raise fc.JobError(f"{job['heldout_file']}: no assistant tokens to score")
            scores['heldout'] = {'loss': nll / n, 'tokens': n, 'seconds': max(time.perf_counter() - t0, 1e-9), 'items': items}
        if job.get('choices_file'):
            sync(); t0 = time.perf_counter()
            predicted, option_scores, item_seconds = [], [], []
            for row in fc.read_jsonl(job['choices_file']):
                t = time.perf_counter()
                prompt = fc.prompt_ids(row['prompt'], tok)
                means = []
                for option in row['options']:
                    o = tok(option, add_special_tokens=False)['input_ids']
                    means.append(float(token_logprobs(prompt + o)[len(prompt) - 1:].mean()))
                predicted.append(max(range(len(means)), key=means.__getitem__))
                option_scores.append(means)
                sync(); item_seconds.append(max(time.perf_counter() - t, 1e-9))
            sync()
            scores['choices'] = {'predicted': predicted, 'seconds': max(time.perf_counter() - t0, 1e-9), 'scores': option_scores, 'item_seconds': item_seconds}
        if job.get('generate_file'):
            sync(); t0 = time.perf_counter()
            texts, new_tokens, item_seconds = [], 0, []
            for row in fc.read_jsonl(job['generate_file']):
                t = time.perf_counter()
                prompt = torch.tensor([fc.prompt_ids(row['prompt'], tok)], device=device)
                out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=int(row['max_new_tokens']),
                                     do_sample=False, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
                new = out[0, prompt.shape[1]:].tolist()
                if tok.eos_token_id in new:  # generation stops at (and without) the end-of-sequence token
                    new = new[:new.index(tok.eos_token_id)]
                new_tokens += len(new)
                texts.append(tok.decode(new, skip_special_tokens=True))
                sync(); item_seconds.append(max(time.perf_counter() - t, 1e-9))
            sync()
            scores['generate'] = {'texts': texts, 'new_tokens': new_tokens, 'seconds': max(time.perf_counter() - t0, 1e-9), 'item_seconds': item_seconds}
    return scores


if __name__ == '__main__':
    main()
