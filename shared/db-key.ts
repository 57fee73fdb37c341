// Where the key of an encrypted SQLite file comes from (site.sqlite, optionally
// coordinator.sqlite): a 0600 file beside the other secrets (the default), an environment
// variable, or a command that prints it (a hospital's key manager). Every error names the source
// (the file, the variable, the command) and the config field that chose it; the key itself is
// never printed.
//
// A key is either 64 hex characters (a raw 256-bit key: no key derivation, opening costs
// nothing) or a passphrase of at least 12 characters (SQLCipher's PBKDF2-HMAC-SHA512, 256000
// iterations: about a second per open on a small machine).
import { execFileSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { z } from 'zod';
import YAML from 'yaml';
import { fail } from './errors.ts';
import { describeZodError, yamlLineLocator } from './zod-errors.ts';

/** The `database:` section of site.yaml / coordinator.yaml. */
export function databaseSectionSchema(defaultEncryption: 'sqlcipher' | 'none') {
  return z
    .object({
      /** sqlcipher: the file is encrypted (SQLCipher 4 format); none: plain SQLite. */
      encryption: z.enum(['sqlcipher', 'none']).default(defaultEncryption),
      /** Key file, relative to the site/data dir; created 0600 with a random key for a new database. */
      key_file: z.string().min(1).default('secrets/db.key'),
      /** Name of an environment variable that holds the key (instead of key_file). */
      key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name').nullable().default(null),
      /** argv of a command that prints the key on stdout (instead of key_file), e.g. a key manager's client. */
      key_command: z.array(z.string().min(1)).min(1).nullable().default(null),
      key_command_timeout_s: z.number().positive().default(30),
    })
    .strict()
    .refine((d) => !(d.key_env && d.key_command), { message: 'give key_env or key_command, not both', path: ['key_command'] });
}
export type DatabaseSection = z.infer<ReturnType<typeof databaseSectionSchema>>;

/** The `database:` section of a config file (YAML or JSON) read on its own, so tools that open
 *  the database need no otherwise valid config; defaults when there is no file or no section.
 *  Errors name the file, line and field. */
export function readDatabaseSection(file: string | undefined, schema: ReturnType<typeof databaseSectionSchema>, nameWhenAbsent: string): DatabaseSection {
  let raw: unknown;
  let lineOf: ((path: PropertyKey[]) => number | undefined) | undefined;
  if (file && existsSync(file)) {
    const text = readFileSync(file, 'utf8');
    try {
      if (file.endsWith('.json')) raw = (JSON.parse(text) as Record<string, unknown> | null)?.database;
      else {
        const doc = YAML.parseDocument(text);
        if (doc.errors.length) throw doc.errors[0];
        raw = (doc.toJS() as Record<string, unknown> | null)?.database;
        lineOf = yamlLineLocator(doc, text);
      }
    } catch (e) {
      throw fail('FEDLORA_ERR_CONFIG', `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'} (${(e as Error).message})`);
    }
  }
  const r = schema.safeParse(raw ?? {});
  if (!r.success) throw fail('FEDLORA_ERR_CONFIG', describeZodError(file && existsSync(file) ? file : nameWhenAbsent, r.error, lineOf, ['database']));
  return r.data;
}

export type KeySource =
  | { kind: 'file'; path: string; field: string }
  | { kind: 'env'; name: string; field: string }
  | { kind: 'command'; argv: string[]; timeoutMs: number; field: string };

/** Which source a section names; `configName` (e.g. "site.yaml") goes into the field name errors quote. */
export function keySourceOf(section: DatabaseSection, baseDir: string, configName: string): KeySource {
  if (section.key_command) return { kind: 'command', argv: section.key_command, timeoutMs: section.key_command_timeout_s * 1000, field: `${configName} database.key_command` };
  if (section.key_env) return { kind: 'env', name: section.key_env, field: `${configName} database.key_env` };
  return { kind: 'file', path: isAbsolute(section.key_file) ? section.key_file : join(baseDir, section.key_file), field: `${configName} database.key_file` };
}

/** "key file /srv/site/secrets/db.key", "environment variable X", "key command kms get": for messages. */
export function describeKeySource(s: KeySource): string {
  if (s.kind === 'file') return `key file ${s.path}`;
  if (s.kind === 'env') return `environment variable ${s.name}`;
  return `key command "${s.argv.join(' ')}"`;
}

/** A key as SQLite3 Multiple Ciphers takes it: x'<hex>' selects a raw key, anything else is a passphrase. */
export function keyMaterial(key: string, where: string): Buffer {
  const k = key.trim();
  if (/^[0-9a-fA-F]{64}$/.test(k)) return Buffer.from(`x'${k.toLowerCase()}'`);
  if (k.length === 0) throw fail('FEDLORA_ERR_DB_KEY', `${where} is empty`);
  if (k.length < 12) throw fail('FEDLORA_ERR_DB_KEY', `${where}: a database key is 64 hex characters or a passphrase of at least 12 characters`);
  return Buffer.from(k, 'utf8');
}

/** First 16 hex of sha256(key): names a key in backups and messages without revealing it. */
export const keyFingerprint = (key: string): string => createHash('sha256').update('fedlora/db-key\0' + key.trim()).digest('hex').slice(0, 16);

export const newRandomKey = (): string => randomBytes(32).toString('hex');

/** Write a key file 0600 (its folder 0700), fsynced: a key that is not on disk must never encrypt anything. */
export function writeKeyFile(path: string, key: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, 'w', 0o600);
  try {
    writeSync(fd, key.trim() + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(path, 0o600);
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Read a key file; refuses one that group or others can read. */
export function readKeyFile(path: string, field: string): string {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    throw fail('FEDLORA_ERR_DB_KEY', `key file ${path} does not exist (${field}); restore it from where the site's secrets are kept`);
  }
  if (mode & 0o077) throw fail('FEDLORA_ERR_DB_KEY', `key file ${path} is accessible to group/others (mode ${mode.toString(8)}); run chmod 600 ${path}`);
  return readFileSync(path, 'utf8').trim();
}

/** The key a source gives now. `create`: a missing key file is made with a random key (new databases only). */
export function readKey(s: KeySource, o: { create?: boolean } = {}): string {
  if (s.kind === 'file') {
    if (!existsSync(s.path) && o.create) writeKeyFile(s.path, newRandomKey());
    return readKeyFile(s.path, s.field);
  }
  if (s.kind === 'env') {
    const v = process.env[s.name];
    if (v === undefined || v.trim() === '') throw fail('FEDLORA_ERR_DB_KEY', `environment variable ${s.name} (${s.field}) is not set: it must hold the database key`);
    return v.trim();
  }
  let out: string;
  try {
    out = execFileSync(s.argv[0], s.argv.slice(1), { encoding: 'utf8', timeout: s.timeoutMs, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 });
  } catch (e) {
    const err = e as { status?: number | null; signal?: string | null; stderr?: string; code?: string };
    const why = err.code === 'ENOENT' ? 'not found' : err.signal ? `killed by ${err.signal}${err.signal === 'SIGTERM' ? ` (timeout ${s.timeoutMs / 1000} s?)` : ''}` : `exit status ${err.status}`;
    const stderr = (err.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
    throw fail('FEDLORA_ERR_DB_KEY', `key command "${s.argv.join(' ')}" (${s.field}) failed: ${why}${stderr ? `: ${stderr}` : ''}`);
  }
  if (out.trim() === '') throw fail('FEDLORA_ERR_DB_KEY', `key command "${s.argv.join(' ')}" (${s.field}) printed nothing`);
  return out.trim();
}
