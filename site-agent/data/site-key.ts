// The site's secret de-identification key: HMAC key for patient pseudonyms and record ids, and
// the seed of the per-patient date shift. It never leaves the site dir and is created 0600.

import { randomBytes, createHmac } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fail } from '../../shared/errors.ts';

function siteKeyPath(siteDir: string, keyFile = 'secrets/deid.key'): string {
  return isAbsolute(keyFile) ? keyFile : join(siteDir, keyFile);
}

/** Read the key (hex, 32 bytes), creating it on first use. A key readable by group/others is
 *  refused: anyone holding it can re-link pseudonyms to patient ids by guessing. */
export function loadOrCreateSiteKey(siteDir: string, keyFile = 'secrets/deid.key'): Buffer {
  const p = siteKeyPath(siteDir, keyFile);
  if (!existsSync(p)) {
    mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
    writeFileSync(p, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(p, 0o600); // umask may have narrowed it further; never wider
  }
  const mode = statSync(p).mode & 0o777;
  if (mode & 0o077) {
    throw fail('FEDLORA_ERR_CONFIG', `${p}: de-identification key is accessible to group/others (mode ${mode.toString(8)}); run chmod 600 ${p}`);
  }
  const hex = readFileSync(p, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/i.test(hex)) throw fail('FEDLORA_ERR_CONFIG', `${p}: de-identification key must be 64 hex characters`);
  return Buffer.from(hex, 'hex');
}

/** Stable pseudonym of a patient id at this site (never the raw id). */
export function patientPseudonym(key: Buffer, rawPatientId: string): string {
  return 'P' + createHmac('sha256', key).update('fedlora/patient\0' + rawPatientId).digest('hex').slice(0, 20);
}

/** Keyed content hash: a record id that cannot be brute-forced from guessed record contents. */
export function recordHash(key: Buffer, canonical: string): string {
  return createHmac('sha256', key).update('fedlora/record\0' + canonical).digest('hex').slice(0, 32);
}
