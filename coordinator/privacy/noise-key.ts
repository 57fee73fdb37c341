// The coordinator's DP noise key: 32 secret bytes from which the Gaussian noise of every DP
// round is derived (with the round's job id, round, attempt and persisted seed), instead of
// fresh randomness at aggregation time.
//
// Why: a coordinator killed while aggregating redoes the round after restart. With fresh
// randomness the redo would publish a DIFFERENT adapter than the one that was about to be
// published (and, were both ever seen, two noisings of one sum leak more than the accountant
// charged for). With a keyed derivation the redo adds exactly the same noise, so the published
// adapter is bit-identical to an uninterrupted run's, and the noise of a round is only ever
// one draw.
//
// Security: whoever knows this key (and the round seed, which is not secret) can recompute the
// noise and subtract it, so it is a secret of the same class as the CA key and the manifest
// signing key: it stays on the coordinator (<dataDir>/secrets/dp-noise.key, mode 0600, or the
// file named by privacy.noise_key_file, e.g. on a secrets volume), is never served by any API,
// never logged, never sent to sites. Lose it and nothing breaks (a new key only changes the
// noise of future rounds); leak it and the DP guarantee of the rounds it noised is gone.
//
// The same key also draws the DP Poisson sample of each round (roundSamplingKey): a sample a
// site could predict from public data (the job's selection_seed) would let it steer its
// participation, which the accountant's sampling rate does not allow for.
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fail } from '../../shared/errors.ts';

const NOISE_KEY_BYTES = 32;

/** The key file of a coordinator: privacy.noise_key_file (relative = to the data dir), else
 *  <dataDir>/secrets/dp-noise.key. */
export function noiseKeyPathOf(dataDir: string, configured?: string): string {
  if (!configured) return join(dataDir, 'secrets', 'dp-noise.key');
  return isAbsolute(configured) ? configured : join(dataDir, configured);
}

/** Create the key file (32 random bytes, mode 0600, its folder 0700) unless it exists. */
export function createNoiseKey(file: string): void {
  if (existsSync(file)) return;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600); // 'wx': never overwrite a key another process just made
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw fail('FEDLORA_ERR_CONFIG', `privacy.noise_key_file: cannot create ${file}: ${(e as Error).message}`);
  }
  try {
    writeSync(fd, randomBytes(NOISE_KEY_BYTES));
  } finally {
    closeSync(fd);
  }
}

/** Read the key (creating it first when missing). `warnings` gets a line when the file is
 *  readable by group/others (the caller logs it; the key itself is never logged). */
export function loadNoiseKey(file: string, warnings?: string[]): Buffer {
  createNoiseKey(file);
  const key = readFileSync(file);
  if (key.length !== NOISE_KEY_BYTES) throw fail('FEDLORA_ERR_CONFIG', `privacy.noise_key_file: ${file} holds ${key.length} bytes; a DP noise key is exactly ${NOISE_KEY_BYTES} random bytes (delete it to have a new one made)`);
  if (statSync(file).mode & 0o077) warnings?.push(`${file} is readable by group or others; the DP noise key should be mode 0600`);
  return key;
}

/** The noise key of one round attempt: HKDF-SHA256 of the coordinator key with the job id,
 *  round, attempt and the round's persisted seed. Binding the full job id (not only the 32-bit
 *  seed) keeps two jobs from ever sharing noise. */
export function roundNoiseKey(key: Buffer, jobId: string, round: number, attempt: number, seed: number): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.from('fedlora dp noise v1'), Buffer.from(`${jobId}\n${round}\n${attempt}\n${seed >>> 0}`), NOISE_KEY_BYTES));
}

/** The secret from which a round attempt's DP Poisson sample is drawn (strategies/selection.ts):
 *  HMAC-SHA256 of the job, round and attempt under the coordinator key, with its own label so it
 *  is independent of the noise keys. Deterministic, so the sample is the same after a restart. */
export function roundSamplingKey(key: Buffer, jobId: string, round: number, attempt: number): Buffer {
  return createHmac('sha256', key).update(`fedlora site sampling v1\n${jobId}\n${round}\n${attempt}`).digest();
}
