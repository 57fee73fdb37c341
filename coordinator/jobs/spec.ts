// The job specification a researcher submits (YAML or JSON), validated with zod; errors name
// the field path (FEDLORA_ERR_JOB_INVALID: job.yaml: lora.r: expected number ...).
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import { fail } from '../../shared/errors.ts';
import { describeZodError, yamlLineLocator } from '../../shared/zod-errors.ts';
import { DURATION_PATTERN } from './schedule.ts';

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
    /** r is the job's (maximum) rank; a site whose policy.max_lora_rank is lower trains that
     *  rank, down to this one (default r: every site trains r). Needs aggregation svd or ffa. */
    min_site_r: z.number().int().min(1).max(1024).optional(),
  }).strict(),
  /** Start from a published version of an earlier job (same base model manifest and LoRA
   *  shape) instead of a fresh adapter; its version 0 is that adapter, its manifest chained to it. */
  init_adapter: z.object({ job: z.string().min(1), version: z.number().int().min(0) }).strict().optional(),
  /** Recurring rounds: every `every` (e.g. 30d, 12h), when sites have ingested new records since
   *  the job's last rounds, `rounds` more rounds (default: the job's rounds) run on them. */
  schedule: z.object({
    every: z.string().regex(DURATION_PATTERN, 'expected a duration such as 30d, 12h, 45m or 90s'),
    rounds: z.number().int().min(1).max(100_000).optional(),
  }).strict().optional(),
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
    /** In rounds after the first data period (a continuation, or a job continuing an earlier
     *  job's adapter): the share of each site's training set drawn from records earlier periods
     *  trained on, the rest being the new records (replay against forgetting). */
    replay_fraction: z.number().min(0).lt(1).default(0),
    /** Knowledge distillation: each site trains the student (base_model) on (1-alpha)·CE +
     *  alpha·T²·KL to this teacher's top-k next-token distribution. The teacher is named here and
     *  resolved by each site in its own model folder (site config model.teachers_dir); a site
     *  without it declines the round. The students' adapters are federated as usual. */
    distill: z.object({
      teacher: z.string().min(1),
      top_k: z.number().int().min(1).max(4096).default(32),
      temperature: z.number().positive().default(2),
      alpha: z.number().min(0).max(1).default(0.5),
    }).strict().optional(),
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
      /** q: with q < 1 every round Poisson-samples the eligible sites with probability q. */
      sample_rate: z.number().positive().max(1).default(1),
      adaptive_clipping: z.boolean().default(false),
      /** With q < 1: the sites the job samples (N of q x N); default every enrolled active site
       *  at submission. Fixed for the job: a site enrolled later is never sampled. */
      eligible_sites: z.array(z.string().min(1)).min(1).optional(),
    }).strict().optional(),
    secure_aggregation: z.boolean().default(false),
  }).strict().default({ secure_aggregation: false }),
  evaluation: z.object({
    evaluate_base: z.boolean().default(false),
    every_rounds: z.number().int().min(1).default(1),
    cross_eval: z.boolean().default(false),
  }).strict().default({ evaluate_base: false, every_rounds: 1, cross_eval: false }),
  /** Who may read what of this job beyond the coordinator's roles (coordinator/http/access.ts). */
  access: z.object({
    /** Researchers may download the published adapters (admins always may). */
    researcher_downloads: z.boolean().default(false),
  }).strict().default({ researcher_downloads: false }),
}).strict().superRefine((s, ctx) => {
  if (s.min_sites > s.max_sites) ctx.addIssue({ code: 'custom', path: ['min_sites'], message: `min_sites ${s.min_sites} exceeds max_sites ${s.max_sites}` });
  if (!s.base_model.config_path && !s.base_model.config) ctx.addIssue({ code: 'custom', path: ['base_model', 'config_path'], message: 'config_path (or an inline config) is required: the coordinator needs the shapes to initialise version 0' });
  // With a frozen A only the lora_B tensors travel: ffa is exactly that; factor-pair strategies need A too.
  if (s.aggregation.name === 'ffa' && !s.lora.freeze_a) ctx.addIssue({ code: 'custom', path: ['lora', 'freeze_a'], message: 'aggregation ffa trains only B from a shared A: set lora.freeze_a: true' });
  if (s.lora.freeze_a && (s.aggregation.name === 'svd' || s.aggregation.name === 'fedit')) ctx.addIssue({ code: 'custom', path: ['aggregation', 'name'], message: `${s.aggregation.name} combines the A and B factors, but lora.freeze_a sends only B; use ffa (exact) or set freeze_a: false` });
  const q = s.privacy.dp?.sample_rate ?? 1;
  if (s.privacy.dp?.eligible_sites && q === 1) ctx.addIssue({ code: 'custom', path: ['privacy', 'dp', 'eligible_sites'], message: 'only used with Poisson sampling (privacy.dp.sample_rate < 1)' });
  if (q < 1) {
    // Poisson sampling is the mechanism the accountant charges for only if nothing conditions
    // the sample: a round publishes whatever its sampled sites sent (noise only when none).
    if (s.min_sites > 1) ctx.addIssue({ code: 'custom', path: ['min_sites'], message: `must be 1 with privacy.dp.sample_rate ${q} < 1: a Poisson-sampled round publishes whatever its sampled sites sent (noise only when none were sampled); re-running rounds with too few sites would sample more often than the accountant charges for` });
    if (s.privacy.secure_aggregation) ctx.addIssue({ code: 'custom', path: ['privacy', 'secure_aggregation'], message: `cannot be combined with privacy.dp.sample_rate ${q} < 1: secure aggregation needs a threshold of sites in every round, and a Poisson sample may be smaller` });
  }
  siteRankIssues(s, ctx);
  if (s.train.local_steps === 0 && s.train.local_epochs === 0) ctx.addIssue({ code: 'custom', path: ['train', 'local_steps'], message: 'one of local_steps or local_epochs must be > 0' });
});

export type JobSpec = z.infer<typeof JobSpecSchema>;

/** Sites training lower ranks: the strategies that stay exact, and never with secure aggregation
 *  unless the frozen A makes the padded B sum all the coordinator needs. */
function siteRankIssues(s: { lora: { r: number; min_site_r?: number }; aggregation: { name: string }; privacy: { secure_aggregation: boolean } }, ctx: z.RefinementCtx): void {
  const min = s.lora.min_site_r;
  if (min === undefined || min === s.lora.r) return;
  if (min > s.lora.r) {
    ctx.addIssue({ code: 'custom', path: ['lora', 'min_site_r'], message: `${min} is above lora.r ${s.lora.r} (r is the job's maximum rank)` });
    return;
  }
  const name = s.aggregation.name;
  if (name !== 'svd' && name !== 'ffa') {
    ctx.addIssue({ code: 'custom', path: ['aggregation', 'name'], message: `${name} cannot combine sites of different LoRA ranks (lora.min_site_r ${min} < lora.r ${s.lora.r}): use svd (the exact sum of the sites' B A products, re-compressed) or ffa (frozen A: exact)` });
  } else if (name === 'svd' && s.privacy.secure_aggregation) {
    ctx.addIssue({ code: 'custom', path: ['privacy', 'secure_aggregation'], message: `cannot be combined with sites of different LoRA ranks (lora.min_site_r ${min} < lora.r ${s.lora.r}) under svd: the coordinator would need each site's factors to form the exact sum of their products, and secure aggregation shows it only the sum of the vectors; use ffa (frozen A: the padded B sum is exact) or leave min_site_r at r` });
  }
}

/** Validate an already-parsed spec object. `source` names it in errors. */
export function parseJobSpec(raw: unknown, source = 'job spec', lineOf?: (path: PropertyKey[]) => number | undefined): JobSpec {
  const r = JobSpecSchema.safeParse(raw);
  if (!r.success) throw fail('FEDLORA_ERR_JOB_INVALID', describeZodError(source, r.error, lineOf));
  return r.data;
}

/** Parse YAML or JSON text (JSON is YAML); errors carry file:line of the bad field. */
export function parseJobSpecText(text: string, source = 'job spec'): JobSpec {
  return parseJobSpecDocument(text, source).spec;
}

type LineOf = (path: PropertyKey[]) => number | undefined;

/** parseJobSpecText, also giving the line of any field (for checks made after parsing). */
export function parseJobSpecDocument(text: string, source = 'job spec'): { spec: JobSpec; lineOf: LineOf } {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw fail('FEDLORA_ERR_JOB_INVALID', `${source}: not valid YAML/JSON: ${doc.errors[0].message}`);
  let raw: unknown;
  try {
    raw = doc.toJS(); // throws on e.g. an alias to an anchor that does not exist ("*x")
  } catch (e) {
    throw fail('FEDLORA_ERR_JOB_INVALID', `${source}: not valid YAML/JSON: ${(e as Error).message}`);
  }
  const lineOf = yamlLineLocator(doc, text);
  return { spec: parseJobSpec(raw, source, lineOf), lineOf };
}

/** Read a spec file; an inline `config_path` is resolved and its config.json inlined so the
 *  stored spec is self-contained (the coordinator never re-reads researcher files). */
export function loadJobSpecFile(file: string): JobSpec {
  return readJobSpecFile(file).spec;
}

/** loadJobSpecFile, with the line of any field of the file. */
export function readJobSpecFile(file: string): { spec: JobSpec; lineOf: LineOf } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fail('FEDLORA_ERR_JOB_INVALID', `cannot read job spec ${file}: ${(e as Error).message}`);
  }
  const { spec, lineOf } = parseJobSpecDocument(text, file);
  if (spec.base_model.config_path && !spec.base_model.config) {
    const p = new URL(spec.base_model.config_path, `file://${file.startsWith('/') ? file : `${process.cwd()}/${file}`}`).pathname;
    try {
      spec.base_model.config = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw fail('FEDLORA_ERR_JOB_INVALID', `${file}:${lineOf(['base_model', 'config_path']) ?? '?'}: base_model.config_path: cannot read ${p}: ${(e as Error).message}`);
    }
  }
  return { spec, lineOf };
}
