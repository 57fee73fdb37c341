// The job specification a researcher submits (YAML or JSON), validated with zod; errors name
// the field path (FEDLORA_ERR_JOB_INVALID: job.yaml: lora.r: expected number ...).
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import { fail } from '../../shared/errors.ts';
import { describeZodError, yamlLineLocator } from '../zod-errors.ts';

const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

export const JobSpecSchema = z.object({
  name: z.string().min(1).max(200),
  base_model: z.object({
    id: z.string().min(1),
    manifest_sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex characters'),
    /** config.json of the base model (shapes for version 0); relative to the spec file. */
    config_path: z.string().optional(),
    /** or the config inline (tests, HTTP submissions). */
    config: z.record(z.string(), z.unknown()).optional(),
  }).strict(),
  lora: z.object({
    r: z.number().int().min(1).max(1024),
    alpha: z.number().positive(),
    target_modules: z.array(z.enum(TARGETS)).min(1),
    dropout: z.number().min(0).max(1).default(0),
    use_rslora: z.boolean().default(false),
    freeze_a: z.boolean().default(false),
    init_seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  }).strict(),
  rounds: z.number().int().min(1).max(100_000),
  train: z.object({
    local_steps: z.number().int().min(0).default(0),
    local_epochs: z.number().min(0).default(1),
    learning_rate: z.number().positive(),
    optimizer: z.enum(['adamw', 'sgd']).default('adamw'),
    batch_tokens: z.number().int().min(1).default(2048),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    weight_decay: z.number().min(0).default(0),
    warmup_steps: z.number().int().min(0).default(0),
    max_grad_norm: z.number().min(0).default(1),
  }).strict(),
  min_sites: z.number().int().min(1).default(1),
  max_sites: z.number().int().min(1).default(1000),
  round_deadline_s: z.number().positive().default(3600),
  /** How many times a round that ends with fewer than min_sites updates is re-run. */
  round_retries: z.number().int().min(0).default(2),
  selection_seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  /** Passed to coordinator/strategies createStrategy (name + its options). */
  aggregation: z.object({ name: z.string().min(1) }).passthrough().default({ name: 'fedavg' }),
  privacy: z.object({
    dp: z.object({
      clip_norm: z.number().positive(),
      noise_multiplier: z.number().min(0),
      delta: z.number().positive().max(1),
      epsilon_budget: z.number().positive(),
      sample_rate: z.number().positive().max(1).default(1),
      adaptive_clipping: z.boolean().default(false),
    }).strict().optional(),
    secure_aggregation: z.boolean().default(false),
  }).strict().default({ secure_aggregation: false }),
  evaluation: z.object({
    evaluate_base: z.boolean().default(false),
    every_rounds: z.number().int().min(1).default(1),
    cross_eval: z.boolean().default(false),
  }).strict().default({ evaluate_base: false, every_rounds: 1, cross_eval: false }),
}).strict().superRefine((s, ctx) => {
  if (s.min_sites > s.max_sites) ctx.addIssue({ code: 'custom', path: ['min_sites'], message: `min_sites ${s.min_sites} exceeds max_sites ${s.max_sites}` });
  if (!s.base_model.config_path && !s.base_model.config) ctx.addIssue({ code: 'custom', path: ['base_model', 'config_path'], message: 'config_path (or an inline config) is required: the coordinator needs the shapes to initialise version 0' });
  // With a frozen A only the lora_B tensors travel: ffa is exactly that; factor-pair strategies need A too.
  if (s.aggregation.name === 'ffa' && !s.lora.freeze_a) ctx.addIssue({ code: 'custom', path: ['lora', 'freeze_a'], message: 'aggregation ffa trains only B from a shared A: set lora.freeze_a: true' });
  if (s.lora.freeze_a && (s.aggregation.name === 'svd' || s.aggregation.name === 'fedit')) ctx.addIssue({ code: 'custom', path: ['aggregation', 'name'], message: `${s.aggregation.name} combines the A and B factors, but lora.freeze_a sends only B; use ffa (exact) or set freeze_a: false` });
  if (s.train.local_steps === 0 && s.train.local_epochs === 0) ctx.addIssue({ code: 'custom', path: ['train', 'local_steps'], message: 'one of local_steps or local_epochs must be > 0' });
});

export type JobSpec = z.infer<typeof JobSpecSchema>;

/** Validate an already-parsed spec object. `source` names it in errors. */
export function parseJobSpec(raw: unknown, source = 'job spec', lineOf?: (path: PropertyKey[]) => number | undefined): JobSpec {
  const r = JobSpecSchema.safeParse(raw);
  if (!r.success) throw fail('FEDLORA_ERR_JOB_INVALID', describeZodError(source, r.error, lineOf));
  return r.data;
}

/** Parse YAML or JSON text (JSON is YAML); errors carry file:line of the bad field. */
export function parseJobSpecText(text: string, source = 'job spec'): JobSpec {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw fail('FEDLORA_ERR_JOB_INVALID', `${source}: not valid YAML/JSON: ${doc.errors[0].message}`);
  let raw: unknown;
  try {
    raw = doc.toJS(); // throws on e.g. an alias to an anchor that does not exist ("*x")
  } catch (e) {
    throw fail('FEDLORA_ERR_JOB_INVALID', `${source}: not valid YAML/JSON: ${(e as Error).message}`);
  }
  return parseJobSpec(raw, source, yamlLineLocator(doc, text));
}

/** Read a spec file; an inline `config_path` is resolved and its config.json inlined so the
 *  stored spec is self-contained (the coordinator never re-reads researcher files). */
export function loadJobSpecFile(file: string): JobSpec {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fail('FEDLORA_ERR_JOB_INVALID', `cannot read job spec ${file}: ${(e as Error).message}`);
  }
  const spec = parseJobSpecText(text, file);
  if (spec.base_model.config_path && !spec.base_model.config) {
    const p = new URL(spec.base_model.config_path, `file://${file.startsWith('/') ? file : `${process.cwd()}/${file}`}`).pathname;
    try {
      spec.base_model.config = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw fail('FEDLORA_ERR_JOB_INVALID', `${file}: base_model.config_path: cannot read ${p}: ${(e as Error).message}`);
    }
  }
  return spec;
}
