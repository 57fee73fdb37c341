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
import { DataConfigSchema } from './data/config-schema.ts';

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
    /** Case fields that may be used to build training examples (others never reach the model). */
    allowed_fields: z
      .array(z.enum(['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'icd10', 'treatment']))
      .default(['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'treatment']),
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

export const SiteConfigSchema = z
  .object({
    /** Human-readable name; the authoritative site id is the CN of the site certificate. */
    name: z.string().min(1).optional(),
    model: z
      .object({
        /** Local folder with the base model (config.json, safetensors, tokenizer files). */
        path: z.string().min(1),
        device: z.enum(['cpu', 'cuda', 'webgpu']).default('cpu'),
      })
      .strict(),
    trainer: TrainerSchema.default({ kind: 'engine' }),
    policy: SitePolicySchema.default(SitePolicySchema.parse({})),
    /** Data pipeline settings (field mapping, de-identification, splits, prompts). */
    data: DataConfigSchema.default(DataConfigSchema.parse({})),
    training: z
      .object({
        /** Keep a local-only adapter trained on this site's data alone, for comparison. */
        local_baseline: z.boolean().default(true),
        max_seq_len: z.number().int().positive().default(256),
        max_train_examples: z.number().int().positive().nullable().default(null),
      })
      .strict()
      .default({ local_baseline: true, max_seq_len: 256, max_train_examples: null }),
    evaluation: z
      .object({
        /** With fewer held-out items than this, metrics are withheld (only the count is sent). */
        min_items: z.number().int().min(1).default(5),
        max_items: z.number().int().positive().default(64),
        evaluate_base: z.boolean().default(false),
        /** Items whose diagnosis is also generated (greedy) and compared after normalisation. */
        generate_items: z.number().int().min(0).default(8),
      })
      .strict()
      .default({ min_items: 5, max_items: 64, evaluate_base: false, generate_items: 8 }),
    network: z
      .object({
        heartbeat_interval_ms: z.number().int().positive().default(5000),
        reconnect_initial_ms: z.number().int().positive().default(500),
        reconnect_max_ms: z.number().int().positive().default(30_000),
        /** Upload chunk size, 64 KiB .. 4 MiB: each chunk is persisted by the coordinator before
         *  the next, so a cut upload resumes from the last whole chunk; small chunks lose less
         *  on a flaky link, big ones cost fewer round trips. */
        chunk_size: z.number().int().min(64 * 1024).max(4 * 1024 * 1024).default(2 * 1024 * 1024),
      })
      .strict()
      .default({ heartbeat_interval_ms: 5000, reconnect_initial_ms: 500, reconnect_max_ms: 30_000, chunk_size: 2 * 1024 * 1024 }),
    http: z
      .object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).nullable().default(null) })
      .strict()
      .default({ host: '127.0.0.1', port: null }),
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

/** Format zod issues as "file: a.b.c: message" lines. */
export function formatZodIssues(file: string, error: z.ZodError): string {
  return error.issues.map((i) => `${file}: ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}

export function parseSiteConfig(raw: unknown, file = 'site config'): SiteConfig {
  const r = SiteConfigSchema.safeParse(raw);
  if (!r.success) throw fail('FEDLORA_ERR_CONFIG', formatZodIssues(file, r.error));
  return r.data;
}

/** Load and validate; relative model paths are resolved against the config file's folder. */
export function loadSiteConfig(siteDir: string): SiteConfig {
  const file = siteConfigPath(siteDir);
  const text = readFileSync(file, 'utf8');
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw fail('FEDLORA_ERR_CONFIG', `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'} (${(e as Error).message})`);
  }
  const cfg = parseSiteConfig(raw, file);
  if (!isAbsolute(cfg.model.path)) cfg.model.path = resolve(dirname(file), cfg.model.path);
  return cfg;
}
