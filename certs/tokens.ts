// One-time join tokens. The printed token is self-contained for the site:
//   "fedlora1." + base64url(JSON {v:1, site, secret, enroll:"host:port", caSha256, exp})
// The coordinator stores only sha256(secret); the site sends only `secret` in EnrollRequest
// and uses caSha256 to pin the CA when it connects to the enrollment listener.
import { createHash, randomBytes } from 'node:crypto';
import { fail } from '../shared/errors.ts';

const TOKEN_PREFIX = 'fedlora1.';

export interface JoinToken {
  v: 1;
  site: string;
  secret: string; // base64url, 32 random bytes
  enroll: string; // host:port of the enrollment listener
  caSha256: string; // lowercase hex sha256 of the CA certificate DER
  exp: number; // unix ms (informative for the site; the coordinator's record is authoritative)
}

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function encodeJoinToken(t: JoinToken): string {
  return TOKEN_PREFIX + Buffer.from(JSON.stringify(t), 'utf8').toString('base64url');
}

export function decodeJoinToken(text: string): JoinToken {
  const s = text.trim();
  if (!s.startsWith(TOKEN_PREFIX)) throw fail('FEDLORA_ERR_TOKEN_INVALID', `join token must start with "${TOKEN_PREFIX}" (got ${JSON.stringify(s.slice(0, 12))}...)`);
  let obj: unknown;
  try {
    obj = JSON.parse(Buffer.from(s.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw fail('FEDLORA_ERR_TOKEN_INVALID', 'join token body is not base64url JSON (was it truncated when copied?)');
  }
  const t = obj as Partial<JoinToken>;
  const bad = (field: string) => fail('FEDLORA_ERR_TOKEN_INVALID', `join token field ${field} missing or malformed`);
  if (t.v !== 1) throw bad('v');
  if (typeof t.site !== 'string' || !t.site) throw bad('site');
  if (typeof t.secret !== 'string' || t.secret.length < 32) throw bad('secret');
  if (typeof t.enroll !== 'string' || !/^.+:\d+$/.test(t.enroll)) throw bad('enroll');
  if (typeof t.caSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(t.caSha256)) throw bad('caSha256');
  if (typeof t.exp !== 'number') throw bad('exp');
  return t as JoinToken;
}

/** Parse "90s", "30m", "24h", "7d" (or plain milliseconds) into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `duration ${JSON.stringify(text)} must look like 90s, 30m, 24h or 7d`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  const ms = n * mult;
  if (!(ms > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `duration ${JSON.stringify(text)} must be > 0`);
  return ms;
}
