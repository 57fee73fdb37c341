// The site agent's one config file (site.yaml or site.json in the site dir), validated at
// start: an error names the file and the field path, e.g.
//   FEDLORA_ERR_CONFIG: /srv/site/site.yaml: policy.max_epsilon: expected number, received string
//
// The privacy policy here is the site's own: the agent enforces it whatever the coordinator asks.

import { readFileSync, existsSync } from 'node:fs';
import { join, resolve, dirname, isAbsolute } from 'node:path';
import { z } from 'zod';
import YAML from 'yaml';
import { fail } from '../shared/errors.ts';
import { describeZodError, yamlLineLocator } from '../shared/zod-errors.ts';
import { DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_UPLOAD_CHUNK_BYTES } from '../shared/transfer/chunks.ts';
import { DataConfigSchema } from './data/config-schema.ts';
import { TRAINING_LABEL_POLICIES } from './data/labels/effective.ts';
import { ServeConfigSchema } from './serve/config.ts';
import { DEFAULT_BOOTSTRAP_SEED, DEFAULT_RESAMPLES } from './eval/metrics/resample.ts';
import { DEFAULT_SHARE_POLICY, SHARE_POLICIES } from '../shared/metrics-sharing.ts';
import { databaseSectionSchema } from '../shared/db-key.ts';

/** site.sqlite at rest: encrypted (SQLCipher) by default, key in secrets/db.key (site-agent/site-db.ts). */
export const SiteDatabaseSchema = databaseSectionSchema('sqlcipher');

export const SitePolicySchema = z
  .object({
    /** Largest job epsilon this site accepts; a task whose epsilon after the round exceeds it is declined. */
    max_epsilon: z.number().positive().nullable().default(null),
    /** Refuse to contribute to a round that aggregates fewer sites than this. */
    min_sites_per_aggregation: z.number().int().min(1).default(2),
    require_dp: z.boolean().default(false),
    require_secure_aggregation: z.boolean().default(false),
    /** Consent to send this site's local-only adapter to other sites for cross-evaluation. */
    allow_cross_eval: z.boolean().default(false),
    /** Who may see this site's per-site metrics on the coordinator's API: consortium (its
     *  admins), researchers (admins and researchers) or none (aggregates only). Sent in every
     *  heartbeat; the coordinator enforces it. */
    share_site_metrics: z.enum(SHARE_POLICIES).default(DEFAULT_SHARE_POLICY),
    /** Case fields that may be used to build training examples (others never reach the model). */
    allowed_fields: z
      .array(z.enum(['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'icd10', 'treatment']))
      .default(['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'treatment']),
    /** Which labels train and evaluate: any (a doctor's label where there is one, else the
     *  export's diagnosis) or confirmed (only labels doctors gave or confirmed and that are
     *  settled: no export diagnoses, no record waiting for its second read; site-agent/data/labels/effective.ts). */
    training_labels: z.enum(TRAINING_LABEL_POLICIES).default('any'),
    /** Highest LoRA rank this site trains (its hardware): below a job's r it trains this rank
     *  (the global adapter re-compressed to it) if the job accepts it (lora.min_site_r), and
     *  declines the job's rounds otherwise. null: whatever rank the job has. */
    max_lora_rank: z.number().int().min(1).max(1024).nullable().default(null),
  })
  .strict();

export const TrainerSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('engine'), threads: z.number().int().positive().optional() }).strict(),
  z
    .object({
      kind: z.literal('command'),
      /** argv of the external trainer; it reads <workdir>/job.json and writes <workdir>/out/. */
      command: z.array(z.string()).min(1),
      timeout_s: z.number().positive().default(24 * 3600),
    })
    .strict(),
]);

/** Who scores held-out sets: the built-in engine, or the site's own command (eval-command.ts). */
export const EvaluatorSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('engine') }).strict(),
  z
    .object({
      kind: z.literal('command'),
      /** argv of the external evaluator; it reads <evaldir>/job.json and writes <evaldir>/out/scores.json. */
      command: z.array(z.string()).min(1),
      timeout_s: z.number().positive().default(3600),
    })
    .strict(),
]);

export const SiteConfigSchema = z
  .object({
    /** Human-readable name; the authoritative site id is the CN of the site certificate. */
    name: z.string().min(1).optional(),
    model: z
      .object({
        /** Local folder with the base model (config.json, safetensors, tokenizer files). */
        path: z.string().min(1),
        device: z.enum(['cpu', 'cuda', 'webgpu']).default('cpu'),
        /** Frozen base weights in float32, or blockwise int8/int4 (QLoRA-style; the site's own
         *  memory/accuracy choice, reported with its training metrics). Adapters stay float32. */
        quantize: z.enum(['none', 'int8', 'int4']).default('none'),
        /** Where the teachers of distillation jobs are (train.distill.teacher names a folder here);
         *  default: the folder that holds `path`. */
        teachers_dir: z.string().min(1).optional(),
      })
      .strict(),
    trainer: TrainerSchema.default({ kind: 'engine' }),
    evaluator: EvaluatorSchema.default({ kind: 'engine' }),
    policy: SitePolicySchema.default(SitePolicySchema.parse({})),
    /** Data pipeline settings (field mapping, de-identification, splits, prompts). */
    data: DataConfigSchema.default(DataConfigSchema.parse({})),
    training: z
      .object({
        /** Keep a local-only adapter trained on this site's data alone, for comparison. */
        local_baseline: z.boolean().default(true),
        /** Steps of local training on each global version for this site's personalised adapter
         *  (evaluated beside global and local-only, never sent); 0: none. */
        personal_steps: z.number().int().min(0).max(100_000).default(0),
        max_seq_len: z.number().int().positive().default(256),
        max_train_examples: z.number().int().positive().nullable().default(null),
        /** Recompute each decoder layer's activations in the backward pass (long notes, less memory). */
        recompute: z.boolean().default(false),
      })
      .strict()
      .default({ local_baseline: true, personal_steps: 0, max_seq_len: 256, max_train_examples: null, recompute: false }),
    evaluation: z
      .object({
        /** With fewer held-out items than this, metrics are withheld (only the count is sent). */
        min_items: z.number().int().min(1).default(5),
        max_items: z.number().int().positive().default(64),
        evaluate_base: z.boolean().default(false),
        /** Items whose diagnosis is also generated (greedy) and compared after normalisation. */
        generate_items: z.number().int().min(0).default(8),
        /** 95% percentile bootstrap intervals: resamples of the items and the seed of the draws. */
        bootstrap: z
          .object({ resamples: z.number().int().min(100).max(100_000).default(DEFAULT_RESAMPLES), seed: z.number().int().default(DEFAULT_BOOTSTRAP_SEED) })
          .strict()
          .default({ resamples: DEFAULT_RESAMPLES, seed: DEFAULT_BOOTSTRAP_SEED }),
        /** Exam files this site holds, by name: an EXAM task names one (`fedlora job exam JOB --exam NAME`). */
        exams: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'exam names: letters, digits, . _ -'), z.string().min(1)).default({}),
        /** Test sets the whole consortium shares (JSONL cases, site-agent/data/dataset/shared-set.ts):
         *  every global and local-only adapter is also scored on each, reported as eval set shared:<name>.
         *  A relative file is read from the site folder. */
        shared_sets: z.array(z.object({ name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/), file: z.string().min(1) }).strict()).default([]),
      })
      .strict()
      .default({ min_items: 5, max_items: 64, evaluate_base: false, generate_items: 8, bootstrap: { resamples: DEFAULT_RESAMPLES, seed: DEFAULT_BOOTSTRAP_SEED }, exams: {}, shared_sets: [] }),
    network: z
      .object({
        heartbeat_interval_ms: z.number().int().positive().default(5000),
        reconnect_initial_ms: z.number().int().positive().default(500),
        reconnect_max_ms: z.number().int().positive().default(30_000),
        /** Upload chunk size, 64 KiB .. 4 MiB: each chunk is persisted by the coordinator before
         *  the next, so a cut upload resumes from the last whole chunk; small chunks lose less
         *  on a flaky link, big ones cost fewer round trips. */
        chunk_size: z.number().int().min(MIN_UPLOAD_CHUNK_BYTES).max(MAX_CHUNK_BYTES).default(DEFAULT_CHUNK_BYTES),
      })
      .strict()
      .default({ heartbeat_interval_ms: 5000, reconnect_initial_ms: 500, reconnect_max_ms: 30_000, chunk_size: DEFAULT_CHUNK_BYTES }),
    http: z
      .object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).nullable().default(null) })
      .strict()
      .default({ host: '127.0.0.1', port: null }),
    /** The clinicians' assistant (`fedlora site serve`) and the release gate for new adapters. */
    serve: ServeConfigSchema.default(ServeConfigSchema.parse({})),
    /** Encryption at rest of site.sqlite and where its key comes from. */
    database: SiteDatabaseSchema.default(SiteDatabaseSchema.parse({})),
  })
  .strict();

export type SiteConfig = z.infer<typeof SiteConfigSchema>;
export type SitePolicy = z.infer<typeof SitePolicySchema>;

export const SITE_CONFIG_NAMES = ['site.yaml', 'site.yml', 'site.json'];

/** Find the config file of a site dir. */
export function siteConfigPath(siteDir: string): string {
  for (const n of SITE_CONFIG_NAMES) {
    const p = join(siteDir, n);
    if (existsSync(p)) return p;
  }
  throw fail('FEDLORA_ERR_CONFIG', `${siteDir}: no site config (${SITE_CONFIG_NAMES.join(', ')}); run "fedlora site init" or write one`);
}

export function parseSiteConfig(raw: unknown, file = 'site config', lineOf?: (path: PropertyKey[]) => number | undefined): SiteConfig {
  const r = SiteConfigSchema.safeParse(raw);
  if (!r.success) throw fail('FEDLORA_ERR_CONFIG', describeZodError(file, r.error, lineOf));
  return r.data;
}

/** Load and validate; relative model paths are resolved against the config file's folder. */
export function loadSiteConfig(siteDir: string): SiteConfig {
  const file = siteConfigPath(siteDir);
  const text = readFileSync(file, 'utf8');
  let raw: unknown;
  let lineOf: ((path: PropertyKey[]) => number | undefined) | undefined;
  try {
    if (file.endsWith('.json')) raw = JSON.parse(text);
    else {
      const doc = YAML.parseDocument(text);
      if (doc.errors.length) throw doc.errors[0];
      raw = doc.toJS();
      lineOf = yamlLineLocator(doc, text);
    }
  } catch (e) {
    throw fail('FEDLORA_ERR_CONFIG', `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'} (${(e as Error).message})`);
  }
  const cfg = parseSiteConfig(raw, file, lineOf);
  if (!isAbsolute(cfg.model.path)) cfg.model.path = resolve(dirname(file), cfg.model.path);
  if (cfg.model.teachers_dir !== undefined && !isAbsolute(cfg.model.teachers_dir)) cfg.model.teachers_dir = resolve(dirname(file), cfg.model.teachers_dir);
  return cfg;
}
