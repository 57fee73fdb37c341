"""What peft_trainer.py and peft_evaluator.py share: reading and checking the job files the
fedlora site agent writes (site-agent/agent/train-contract.ts and eval-command.ts; documented in
deploy/README.md), the check for missing Python packages (a clear message instead of an
ImportError deep in a stack), and how a chat record becomes token ids with loss only on the
assistant turns - the same method as the agent's built-in engine
(site-agent/engine/data/examples.ts), so both count the same tokens.

Standard library only at import time: `--check` and argument errors work without torch.
"""
import importlib.util
import json
import os
import sys

TRAIN_CONTRACT = 'fedlora-train/1'
EVAL_CONTRACT = 'fedlora-eval/1'
PIP_HINT = "pip install 'torch>=2.1' 'transformers>=4.43' 'peft>=0.12' 'accelerate>=0.33' safetensors"
EXIT_BAD_JOB = 2
EXIT_MISSING_PACKAGE = 3


class JobError(Exception):
    """A problem with the job folder; the message names the file and the field."""


def die(prog, msg, code):
    print(f'{prog}: {msg}', file=sys.stderr)
    sys.exit(code)


def require_packages(prog, names):
    """Exit with one line naming every missing package (and how to install them)."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        die(prog, f"missing Python package(s): {', '.join(missing)}; install them with: {PIP_HINT}"
                  + (' bitsandbytes' if 'bitsandbytes' in missing else '') + (' deepspeed' if 'deepspeed' in missing else ''),
            EXIT_MISSING_PACKAGE)


def job_path(arg, env_name):
    path = arg or os.environ.get(env_name)
    if not path:
        raise JobError(f'no job file: pass --job PATH or set {env_name} (the site agent sets it)')
    return path


def load_json(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise JobError(f'{path}: no such file')
    except json.JSONDecodeError as e:
        raise JobError(f'{path}: not valid JSON ({e})')


def field(job, path, where, kind, check=None, why=''):
    """job['a']['b'] for path 'a.b', of type `kind`, passing `check`; JobError naming it otherwise."""
    v = job
    for part in path.split('.'):
        if not isinstance(v, dict) or part not in v:
            raise JobError(f'{where}: {path} is missing')
        v = v[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        raise JobError(f'{where}: {path} must be {" or ".join(k.__name__ for k in kinds)}, got {json.dumps(v)}')
    if check is not None and not check(v):
        raise JobError(f'{where}: {path} = {json.dumps(v)}: {why}')
    return v


def existing(path, where, name, is_dir=False):
    ok = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if not ok:
        raise JobError(f'{where}: {name} {path} does not exist')
    return path


def quantize_field(job, path):
    """job.json's quantize (the site's model.quantize): absent in jobs from older agents."""
    if job.get('quantize') is not None:
        field(job, 'quantize', path, str, lambda v: v in ('none', 'int8', 'int4'), 'must be none, int8 or int4')


def read_train_job(path):
    job = load_json(path)
    if job.get('contract', TRAIN_CONTRACT) != TRAIN_CONTRACT:
        raise JobError(f"{path}: contract {job.get('contract')!r}; this trainer implements {TRAIN_CONTRACT}")
    for name in ('model_dir', 'train_file', 'out_dir'):
        field(job, name, path, str)
    existing(job['model_dir'], path, 'model_dir', is_dir=True)
    existing(job['train_file'], path, 'train_file')
    if job.get('global_adapter_dir') is not None:
        existing(os.path.join(job['global_adapter_dir'], 'adapter_model.safetensors'), path, 'global_adapter_dir')
    pos_int = lambda v: v >= 1
    field(job, 'lora.r', path, int, pos_int, 'must be >= 1')
    field(job, 'lora.alpha', path, (int, float))
    field(job, 'lora.target_modules', path, list, lambda v: len(v) > 0 and all(isinstance(t, str) for t in v), 'must list module names')
    field(job, 'lora.dropout', path, (int, float), lambda v: 0 <= v < 1, 'must be in [0, 1)')
    field(job, 'lora.use_rslora', path, bool)
    field(job, 'lora.freeze_a', path, bool)
    field(job, 'train.steps', path, int, lambda v: v >= 0, 'must be >= 0 (0 = use epochs)')
    field(job, 'train.epochs', path, (int, float), lambda v: v >= 0, 'must be >= 0')
    field(job, 'train.learning_rate', path, (int, float), lambda v: v > 0, 'must be > 0')
    field(job, 'train.optimizer', path, str, lambda v: v in ('adamw', 'sgd'), 'must be adamw or sgd')
    field(job, 'train.batch_tokens', path, int, lambda v: v >= 0, 'must be >= 0')
    field(job, 'train.seed', path, int)
    field(job, 'train.prox_mu', path, (int, float), lambda v: v >= 0, 'must be >= 0')
    field(job, 'train.weight_decay', path, (int, float), lambda v: v >= 0, 'must be >= 0')
    field(job, 'train.warmup_steps', path, int, lambda v: v >= 0, 'must be >= 0')
    field(job, 'train.max_grad_norm', path, (int, float), lambda v: v >= 0, 'must be >= 0 (0 = no clipping)')
    field(job, 'train.max_seq_len', path, int, pos_int, 'must be >= 1')
    quantize_field(job, path)
    return job


def read_eval_job(path):
    job = load_json(path)
    if job.get('contract') != EVAL_CONTRACT:
        raise JobError(f"{path}: contract {job.get('contract')!r}; this evaluator implements {EVAL_CONTRACT}")
    for name in ('model_dir', 'out_dir'):
        field(job, name, path, str)
    existing(job['model_dir'], path, 'model_dir', is_dir=True)
    if job.get('adapter_dir') is not None:
        existing(os.path.join(job['adapter_dir'], 'adapter_model.safetensors'), path, 'adapter_dir')
    for name in ('heldout_file', 'choices_file', 'generate_file'):
        if job.get(name) is not None:
            existing(job[name], path, name)
    field(job, 'max_seq_len', path, int, lambda v: v >= 1, 'must be >= 1')
    quantize_field(job, path)
    return job


def read_jsonl(path):
    rows = []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise JobError(f'{path}:{n}: not valid JSON ({e})')
    return rows


def messages_of(row, where):
    msgs = row.get('messages') if isinstance(row, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise JobError(f'{where}: "messages" must be a non-empty list')
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get('role') not in ('system', 'user', 'assistant') or not isinstance(m.get('content'), str):
            raise JobError(f'{where}: messages[{i}] must be {{"role": system|user|assistant, "content": string}}')
    return msgs


def chat_to_example(messages, tok):
    """(input_ids, labels) with labels = id on assistant turns (incl. their end-of-turn token),
    -100 elsewhere. For each assistant message i the template renders P_i = messages[:i] with the
    generation prompt and F_i = messages[:i+1]; the characters [len(P_i), len(F_i)) of the full
    render are the assistant's turn. The render is cut at those boundaries and each piece
    tokenized on its own (no special tokens added), as the site agent's engine does."""
    render = lambda msgs, gen: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m['role'] != 'assistant':
            continue
        p, f = render(messages[:i], True), render(messages[:i + 1], False)
        if not f.startswith(p) or not full.startswith(f):
            raise JobError(f'the chat template is not prefix-stable at messages[{i}]: assistant tokens cannot be located')
        if len(f) > len(p):
            spans.append((len(p), len(f)))
    ids, labels, at = [], [], 0

    def piece(a, b, learn):
        if b > a:
            part = tok(full[a:b], add_special_tokens=False)['input_ids']
            ids.extend(part)
            labels.extend(part if learn else [-100] * len(part))

    for a, b in spans:
        piece(at, a, False)
        piece(a, b, True)
        at = b
    piece(at, len(full), False)
    return ids, labels


def prompt_ids(messages, tok):
    """A chat prompt with the generation prompt, as ids (no special tokens added)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)['input_ids']
