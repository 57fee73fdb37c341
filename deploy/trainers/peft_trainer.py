#!/usr/bin/env python3
"""fedlora's reference external trainer, for sites that train on GPUs: one federated round of
LoRA (or 4-bit QLoRA) fine-tuning with Hugging Face transformers + peft, implementing the site
agent's external-trainer contract (site-agent/agent/train-contract.ts, deploy/README.md):

  in   $FEDLORA_JOB (or --job) = <workdir>/job.json, the global adapter (PEFT), job.train_file
  out  <workdir>/out/adapter/ (PEFT: adapter_config.json + adapter_model.safetensors)
       <workdir>/out/metrics.json {"num_examples", "loss": [per step], "tokens_per_s", ...}

Distributed training is transformers' Trainer with the engines it drives, nothing of our own:
  one GPU        python3 peft_trainer.py
  several GPUs   torchrun --nproc_per_node 4 peft_trainer.py            (DDP)
  ZeRO-3         torchrun --nproc_per_node 8 peft_trainer.py --deepspeed ds_zero3.json
                 (bases that do not fit one GPU: parameters sharded by DeepSpeed)
  4-bit QLoRA    --quantize 4bit (bitsandbytes NF4, double quantization, bf16 compute)

Semantics follow the agent's built-in engine: the adapter starts from the global adapter
(lora_A frozen when lora.freeze_a), loss only on assistant tokens, AdamW or SGD, cosine schedule
with warmup, gradient clipping at max_grad_norm, FedProx term (prox_mu / 2) * ||w - w_global||^2,
train.steps optimizer steps (or train.epochs epochs when steps is 0), about train.batch_tokens
tokens per optimizer step (gradient accumulation). Exit 2: bad job; exit 3: missing package.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_contract as fc  # noqa: E402

PROG = 'peft_trainer.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description='One federated round of LoRA/QLoRA training with transformers + peft (fedlora external-trainer contract).')
    p.add_argument('--job', help='job.json (default: $FEDLORA_JOB, set by the site agent)')
    p.add_argument('--quantize', choices=['none', '4bit', '8bit', 'auto'], default=None,
                   help="frozen base weights: 4bit = QLoRA (NF4), 8bit = LLM.int8, auto = 4bit when bitsandbytes and CUDA are present; "
                        "default: job.json's quantize (int4 -> 4bit, int8 -> 8bit), else none")
    p.add_argument('--dtype', choices=['bf16', 'fp16', 'fp32'], default=None, help='compute dtype (default: bf16 on GPUs that support it, else fp32)')
    p.add_argument('--deepspeed', metavar='CONFIG', help='DeepSpeed config JSON (e.g. ds_zero3.json next to this script), launched with torchrun or deepspeed')
    p.add_argument('--micro-batch', type=int, default=1, help='sequences per GPU per forward (default 1)')
    p.add_argument('--gradient-checkpointing', action='store_true', help='recompute activations per layer (long notes, big bases)')
    p.add_argument('--check', action='store_true', help='check the job and print the training plan as JSON; train nothing (needs no ML packages)')
    a = p.parse_args(argv)
    if a.micro_batch < 1:
        p.error('--micro-batch must be >= 1')
    if a.deepspeed and not os.path.isfile(a.deepspeed):
        p.error(f'--deepspeed {a.deepspeed}: no such file')
    return a


def plan_of(job, args, world_size):
    """Everything decided before any ML package is imported (printed by --check)."""
    tr = job['train']
    quantize = args.quantize or {'int4': '4bit', 'int8': '8bit'}.get(job.get('quantize') or 'none', 'none')
    zero3 = False
    if args.deepspeed:
        zero3 = fc.load_json(args.deepspeed).get('zero_optimization', {}).get('stage') == 3
    if zero3 and quantize in ('4bit', '8bit'):
        raise fc.JobError(f'--deepspeed {args.deepspeed} (ZeRO-3) with --quantize {quantize} is not supported by this trainer; use one or the other')
    if zero3 and tr['prox_mu'] > 0:
        raise fc.JobError(f'{args.job or "job.json"}: train.prox_mu = {tr["prox_mu"]} (FedProx) needs whole parameters; ZeRO-3 shards them: use DDP or ZeRO-2')
    per_step = args.micro_batch * tr['max_seq_len'] * world_size
    accumulation = max(1, round(tr['batch_tokens'] / per_step)) if tr['batch_tokens'] > 0 else 1
    return {
        'world_size': world_size,
        'quantize': quantize,
        'deepspeed': args.deepspeed,
        'zero3': zero3,
        'micro_batch': args.micro_batch,
        'gradient_accumulation_steps': accumulation,
        'tokens_per_step_max': per_step * accumulation,
        'max_steps': tr['steps'] if tr['steps'] > 0 else None,
        'epochs': None if tr['steps'] > 0 else (tr['epochs'] or 1),
        'freeze_a': job['lora']['freeze_a'],
        'start': 'global_adapter' if job.get('global_adapter_dir') else 'fresh LoRA init (init_seed)',
    }


def main(argv=None):
    args = parse_args(argv)
    try:
        job_file = fc.job_path(args.job, 'FEDLORA_JOB')
        job = fc.read_train_job(job_file)
        plan = plan_of(job, args, int(os.environ.get('WORLD_SIZE', '1')))
    except fc.JobError as e:
        fc.die(PROG, str(e), fc.EXIT_BAD_JOB)
    if args.check:
        print(json.dumps(plan, indent=2))
        return
    needed = ['torch', 'transformers', 'peft', 'accelerate', 'safetensors']
    if plan['deepspeed']:
        needed.append('deepspeed')
    if plan['quantize'] in ('4bit', '8bit'):
        needed.append('bitsandbytes')
    fc.require_packages(PROG, needed)
    try:
        train(job, args, plan)
    except fc.JobError as e:
        fc.die(PROG, str(e), fc.EXIT_BAD_JOB)


def train(job, args, plan):
    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, TrainerCallback

    lora, tr = job['lora'], job['train']
    out_dir = job['out_dir']
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    cuda = torch.cuda.is_available()
    if plan['quantize'] == 'auto':  # QLoRA where bitsandbytes and a GPU are there
        import importlib.util
        plan['quantize'] = '4bit' if cuda and importlib.util.find_spec('bitsandbytes') else 'none'
    dtype_name = args.dtype or ('bf16' if cuda and torch.cuda.is_bf16_supported() else 'fp32')
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[dtype_name]

    # TrainingArguments before the model: with ZeRO-3 it makes from_pretrained load sharded.
    targs = TrainingArguments(
        output_dir=os.path.join(out_dir, 'hf'),
        per_device_train_batch_size=plan['micro_batch'],
        gradient_accumulation_steps=plan['gradient_accumulation_steps'],
        max_steps=plan['max_steps'] or -1,
        num_train_epochs=plan['epochs'] or 1,
        learning_rate=tr['learning_rate'],
        weight_decay=tr['weight_decay'],
        warmup_steps=tr['warmup_steps'],
        lr_scheduler_type='cosine',
        max_grad_norm=tr['max_grad_norm'],
        optim='sgd' if tr['optimizer'] == 'sgd' else 'adamw_torch',
        seed=tr['seed'],
        data_seed=tr['seed'],
        bf16=dtype_name == 'bf16',
        fp16=dtype_name == 'fp16',
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={'use_reentrant': False} if args.gradient_checkpointing else None,
        deepspeed=plan['deepspeed'],
        logging_steps=1,
        save_strategy='no',
        report_to=[],
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
    )

    tok = AutoTokenizer.from_pretrained(job['model_dir'])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    examples = []
    for n, row in enumerate(fc.read_jsonl(job['train_file']), 1):
        ids, labels = fc.chat_to_example(fc.messages_of(row, f"{job['train_file']}:{n}"), tok)
        ids, labels = ids[:tr['max_seq_len']], labels[:tr['max_seq_len']]
        if any(l != -100 for l in labels[1:]):
            examples.append({'input_ids': ids, 'labels': labels})
    if not examples:
        raise fc.JobError(f"{job['train_file']}: no example has assistant tokens within train.max_seq_len = {tr['max_seq_len']}")

    load = {'torch_dtype': dtype}
    if plan['quantize'] in ('4bit', '8bit'):
        from transformers import BitsAndBytesConfig
        load['quantization_config'] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
            if plan['quantize'] == '4bit' else BitsAndBytesConfig(load_in_8bit=True))
        load['device_map'] = {'': local_rank}
    model = AutoModelForCausalLM.from_pretrained(job['model_dir'], **load)
    model.config.use_cache = False
    if plan['quantize'] in ('4bit', '8bit'):
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)

    if job.get('global_adapter_dir'):
        check_adapter_config(job)
        model = peft.PeftModel.from_pretrained(model, job['global_adapter_dir'], is_trainable=True)
    else:
        torch.manual_seed(int(lora['init_seed']))
        cfg = peft.LoraConfig(r=lora['r'], lora_alpha=lora['alpha'], target_modules=lora['target_modules'], lora_dropout=lora['dropout'],
                              use_rslora=lora['use_rslora'], bias='none', task_type='CAUSAL_LM')
        model = peft.get_peft_model(model, cfg)
    if lora['freeze_a']:
        for name, p in model.named_parameters():
            if '.lora_A.' in name:
                p.requires_grad_(False)

    prox_mu = float(tr['prox_mu'])
    anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad} if prox_mu > 0 else {}
    counted = {'tokens': 0}

    class RoundTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            counted['tokens'] += int(inputs['attention_mask'].sum())
            loss, out = super().compute_loss(model, inputs, return_outputs=True, **kw)
            if prox_mu > 0:  # FedProx: stay near the global adapter, once per optimizer step
                prox = (prox_mu / 2) * sum(((p - anchor[n].to(p.device)) ** 2).sum() for n, p in model.named_parameters() if n in anchor)
                # Trainer divides the loss by the accumulation steps unless it normalised it by the
                # batch's token count itself (num_items_in_batch): then add 1/accumulation here.
                summed = getattr(self, 'model_accepts_loss_kwargs', False) and kw.get('num_items_in_batch') is not None
                loss = loss + (prox / self.args.gradient_accumulation_steps if summed else prox)
            return (loss, out) if return_outputs else loss

    losses = []

    class LossPerStep(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and 'loss' in logs:
                losses.append(float(logs['loss']))

    def collate(batch):
        width = max(len(b['input_ids']) for b in batch)
        pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]
        return {
            'input_ids': torch.tensor(pad([b['input_ids'] for b in batch], tok.pad_token_id)),
            'labels': torch.tensor(pad([b['labels'] for b in batch], -100)),
            'attention_mask': torch.tensor(pad([[1] * len(b['input_ids']) for b in batch], 0)),
        }

    trainer = RoundTrainer(model=model, args=targs, train_dataset=examples, data_collator=collate, callbacks=[LossPerStep()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    tokens, peak = counted['tokens'], torch.cuda.max_memory_allocated() if cuda else 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([tokens, peak], dtype=torch.float64, device='cuda' if cuda else 'cpu')
        torch.distributed.all_reduce(t[:1])
        torch.distributed.all_reduce(t[1:], op=torch.distributed.ReduceOp.MAX)
        tokens, peak = int(t[0]), int(t[1])
    adapter_dir = os.path.join(out_dir, 'adapter')
    trainer.save_model(adapter_dir)  # PEFT adapter (gathered from ZeRO-3 shards when sharded)
    if trainer.is_world_process_zero():
        metrics = {
            'num_examples': len(examples),
            'loss': losses,
            'tokens_per_s': tokens / seconds if seconds > 0 else 0,
            'train_seconds': seconds,
            'steps': trainer.state.global_step,
            'world_size': plan['world_size'],
            'quantize': plan['quantize'],
            'dtype': dtype_name,
            'deepspeed': plan['deepspeed'],
            'peak_gpu_memory_bytes': peak,
            # reported by the agent with the site's training metrics
            'weight_bits': {'4bit': 4, '8bit': 8}.get(plan['quantize'], 32 if dtype_name == 'fp32' else 16),
            'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            'versions': {'torch': torch.__version__, 'transformers': transformers.__version__, 'peft': peft.__version__},
        }
        with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
            json.dump(metrics, f, indent=2)
        print(f"{PROG}: {trainer.state.global_step} steps, final loss {losses[-1] if losses else float('nan'):.4f}, "
              f"{metrics['tokens_per_s']:.0f} tokens/s on {plan['world_size']} process(es) -> {adapter_dir}", file=sys.stderr)


def check_adapter_config(job):
    """The global adapter's config must be the job's LoRA (r, alpha, targets): PEFT reads it from there."""
    where = os.path.join(job['global_adapter_dir'], 'adapter_config.json')
    cfg = fc.load_json(where)
    lora = job['lora']
    if cfg.get('r') != lora['r'] or cfg.get('lora_alpha') != lora['alpha'] or sorted(cfg.get('target_modules') or []) != sorted(lora['target_modules']):
        raise fc.JobError(f"{where}: r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}, target_modules={cfg.get('target_modules')}; "
                          f"job.json asks for r={lora['r']}, alpha={lora['alpha']}, {lora['target_modules']}")
    if bool(cfg.get('use_rslora')) != lora['use_rslora'] or not math.isclose(float(cfg.get('lora_dropout') or 0), float(lora['dropout'])):
        raise fc.JobError(f"{where}: use_rslora/lora_dropout differ from job.json's lora")


if __name__ == '__main__':
    main()
