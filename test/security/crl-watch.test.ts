// The federation listener's CRL keeper: it signs pki_crl into an X.509 CRL with the CA (which
// verifies against the CA and lists the revoked serials), loads it when pki_crl changes — also
// when another process wrote it — and re-signs daily so the CRL never reaches its nextUpdate.
import { describe, it, expect, afterAll } from 'vitest';
import { x509 } from '../../certs/x509.ts';
import { CRL_VALIDITY_MS } from '../../certs/crl.ts';
import { loadCoordinatorCa } from '../../coordinator/enrollment.ts';
import { initCoordinator } from '../../coordinator/service.ts';
import { watchCrl } from '../../coordinator/crl-watch.ts';
import { harness, rmDir, tempDir, type Harness } from '../coordinator/helpers.ts';

let dir: string;
let h: Harness;
afterAll(() => {
  h?.close();
  if (dir) rmDir(dir);
});

describe('CRL watch', () => {
  it('loads a CA-signed CRL at start, again when pki_crl changes, and re-signs a day later', async () => {
    dir = tempDir('crl-watch');
    await initCoordinator({ dataDir: dir });
    h = harness({ dir });
    const ca = await loadCoordinatorCa(dir);
    const loaded: string[] = [];
    const errors: string[] = [];
    let now = Date.now();
    const w = watchCrl({ db: h.store.db, ca, creds: { setCrl: (p) => void loaded.push(p) }, log: { info: () => undefined, error: (o) => void errors.push(JSON.stringify(o)) }, now: () => now });
    await w.check();
    await w.check();
    expect(loaded).toHaveLength(1);
    const first = new x509.X509Crl(loaded[0]);
    expect(await first.verify({ publicKey: ca.cert.publicKey })).toBe(true);
    expect(first.entries).toHaveLength(0);
    expect(first.nextUpdate!.getTime() - now).toBeGreaterThan(CRL_VALIDITY_MS - 120_000);

    h.store.db.prepare('INSERT INTO pki_crl (serial, site_id, revoked_at_ms, reason) VALUES (?, ?, ?, ?)').run('abc', 'site-x', now, 'test');
    await w.check();
    expect(loaded).toHaveLength(2);
    expect(new x509.X509Crl(loaded[1]).entries.map((e) => e.serialNumber.toLowerCase())).toEqual(['0abc']);

    now += 86_400_000;
    await w.check();
    expect(loaded).toHaveLength(3);
    expect(new x509.X509Crl(loaded[2]).thisUpdate.getTime()).toBeGreaterThan(first.thisUpdate.getTime() + 86_000_000);

    h.store.db.prepare('INSERT INTO pki_crl (serial, site_id, revoked_at_ms, reason) VALUES (?, ?, ?, ?)').run('not hex!', 'site-y', now, 'test');
    await w.check(); // a bad row is logged, the listener keeps its last CRL
    expect(loaded).toHaveLength(3);
    expect(errors.join()).toMatch(/not hex/);
  });
});
