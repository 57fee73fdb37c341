// The coordinator's configuration: <dataDir>/coordinator.yaml, one zod schema, validated at
// start; an error names the file and the field (FEDLORA_ERR_CONFIG: coordinator.yaml:
// http.port: expected number, received string). Admin tokens are stored as sha256 only.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import YAML from 'yaml';
import { fail } from '../shared/errors.ts';
import { describeZodError, yamlLineLocator } from '../shared/zod-errors.ts';
import { DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES } from '../shared/transfer/chunks.ts';
import { databaseSectionSchema } from '../shared/db-key.ts';

/** coordinator.sqlite at rest: plain unless `database.encryption: sqlcipher` (coordinator/store/migrations.ts). */
export const CoordinatorDatabaseSchema = databaseSectionSchema('none');

const listen = (port: number, host: string) => z.object({
  host: z.string().min(1).default(host),
  port: z.number().int().min(0).max(65535).default(port), // 0 = any free port (tests)
}).strict();

const CoordinatorConfigSchema = z.object({
  federation: listen(7443, '0.0.0.0').extend({
    /** host:port sites dial for Federation (sent in EnrollResponse); default host:port of the listener. */
    public_endpoint: z.string().regex(/^.+:\d+$/, 'expected host:port').optional(),
  }).strict().default({ host: '0.0.0.0', port: 7443 }),
  enrollment: listen(7444, '0.0.0.0').default({ host: '0.0.0.0', port: 7444 }),
  http: listen(8080, '127.0.0.1').default({ host: '127.0.0.1', port: 8080 }),
  transfer: z.object({
    chunk_size: z.number().int().min(1024).max(MAX_CHUNK_BYTES).default(DEFAULT_CHUNK_BYTES),
    max_update_bytes: z.number().int().min(1).default(1024 * 1024 * 1024),
    require_update_signature: z.boolean().default(true),
    /** Upload progress is committed after one fsync per this many received bytes (group
     *  commit); a site resuming after a crash re-sends at most this much. 0: every chunk. */
    commit_group_bytes: z.number().int().min(0).max(1024 * 1024 * 1024).default(16 * 1024 * 1024),
  }).strict().default({ chunk_size: DEFAULT_CHUNK_BYTES, max_update_bytes: 1024 * 1024 * 1024, require_update_signature: true, commit_group_bytes: 16 * 1024 * 1024 }),
  heartbeat: z.object({
    interval_ms: z.number().int().min(100).default(10_000),
    timeout_ms: z.number().int().min(100).default(60_000),
  }).strict().default({ interval_ms: 10_000, timeout_ms: 60_000 }),
  rounds: z.object({ tick_ms: z.number().int().min(10).default(1000) }).strict().default({ tick_ms: 1000 }),
  /** Side tasks (final EVALUATE, cross-eval UPLOAD_LOCAL / CROSS_EVAL; coordinator/store/side-tasks.ts):
   *  an unanswered one expires after expire_ms (default 7 days); a cross-eval request waits
   *  cross_eval_upload_timeout_ms from its dispatch for the UPLOAD_LOCAL answers (default 10 min). */
  side_tasks: z.object({
    expire_ms: z.number().int().min(1000).default(7 * 24 * 3600_000),
    cross_eval_upload_timeout_ms: z.number().int().min(100).default(10 * 60_000),
  }).strict().default({ expire_ms: 7 * 24 * 3600_000, cross_eval_upload_timeout_ms: 10 * 60_000 }),
  site_cert_days: z.number().int().min(1).max(825).default(90),
  admin_tokens: z.array(z.object({ name: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected the sha256 (hex) of the token, never the token') }).strict()).default([]),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  privacy: z.object({
    /** The secret DP noise key (32 bytes; coordinator/privacy/noise-key.ts). Relative paths are
     *  to the data dir; default secrets/dp-noise.key. Made at init (or first start) if missing. */
    noise_key_file: z.string().min(1).optional(),
  }).strict().default({}),
  /** Encryption at rest of coordinator.sqlite (an option; the sites' databases are encrypted by default). */
  database: CoordinatorDatabaseSchema.default(CoordinatorDatabaseSchema.parse({})),
}).strict();

export type CoordinatorConfigFile = z.infer<typeof CoordinatorConfigSchema>;
export interface CoordinatorConfig extends CoordinatorConfigFile {
  dataDir: string;
}

export const configPathOf = (dataDir: string) => join(dataDir, 'coordinator.yaml');

export function parseCoordinatorConfig(raw: unknown, source = 'coordinator.yaml', lineOf?: (path: PropertyKey[]) => number | undefined): CoordinatorConfigFile {
  const r = CoordinatorConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw fail('FEDLORA_ERR_CONFIG', describeZodError(source, r.error, lineOf));
  return r.data;
}

/** Read and validate <dataDir>/coordinator.yaml. */
export function loadCoordinatorConfig(dataDir: string): CoordinatorConfig {
  const file = configPathOf(dataDir);
  if (!existsSync(file)) throw fail('FEDLORA_ERR_CONFIG', `${file} not found: run \`fedlora coordinator init --data-dir ${dataDir}\``);
  const text = readFileSync(file, 'utf8');
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw fail('FEDLORA_ERR_CONFIG', `${file}: not valid YAML: ${doc.errors[0].message}`);
  return { ...parseCoordinatorConfig(doc.toJS(), file, yamlLineLocator(doc, text)), dataDir };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function newAdminToken(): string {
  return `fla_${randomBytes(24).toString('base64url')}`;
}

/** Constant-time check of a presented bearer token against the stored hashes. */
export function checkAdminToken(cfg: Pick<CoordinatorConfig, 'admin_tokens'>, presented: string | undefined): string | undefined {
  if (!presented) return undefined;
  const h = Buffer.from(hashToken(presented), 'hex');
  for (const t of cfg.admin_tokens) {
    if (timingSafeEqual(h, Buffer.from(t.sha256, 'hex'))) return t.name;
  }
  return undefined;
}
