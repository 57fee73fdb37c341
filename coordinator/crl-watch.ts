// Keeps the federation listener's CRL current: pki_crl (written by revokeSite, here or by
// `fedlora site revoke` in another process on the same file) is polled; when it changes — and
// at least daily, so the CRL never reaches its nextUpdate — a CRL signed by the CA is loaded
// into the listener's TLS context, and the handshake refuses a revoked certificate from then on.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import type { LoadedCa } from '../certs/ca.ts';
import { signCrl } from '../certs/crl.ts';

const RESIGN_EVERY_MS = 86_400_000;

export interface CrlWatchDeps {
  db: Database;
  ca: LoadedCa;
  creds: { setCrl(crlPem: string): void };
  log: { info(o: object, msg: string): void; error(o: object, msg: string): void };
  now?: () => number;
}

export interface CrlWatch {
  /** Re-read pki_crl; re-sign and load the CRL when it changed or is a day old. */
  check(): Promise<void>;
}

export function watchCrl(d: CrlWatchDeps): CrlWatch {
  const now = d.now ?? Date.now;
  const stateQ = d.db.prepare('SELECT COUNT(*) AS n, COALESCE(MAX(revoked_at_ms), 0) AS t FROM pki_crl');
  const listQ = d.db.prepare('SELECT serial, revoked_at_ms FROM pki_crl ORDER BY serial');
  let loaded: string | null = null;
  let signedAt = 0;
  let running: Promise<void> | null = null;
  const check = async () => {
    const s = stateQ.get() as { n: number; t: number };
    const key = `${s.n}:${s.t}`;
    if (key === loaded && now() - signedAt < RESIGN_EVERY_MS) return;
    const rows = listQ.all() as { serial: string; revoked_at_ms: number }[];
    d.creds.setCrl(await signCrl(d.ca, rows.map((r) => ({ serial: r.serial, revokedAtMs: r.revoked_at_ms })), now()));
    if (key !== loaded) d.log.info({ revoked: rows.length }, 'federation listener: CRL loaded');
    loaded = key;
    signedAt = now();
  };
  return {
    check: () => (running ??= check().catch((e: Error) => d.log.error({ err: e.message }, 'federation listener: CRL not updated')).finally(() => (running = null))),
  };
}
