// coordinator.sqlite encrypted at rest as an option (coordinator.yaml database.encryption:
// sqlcipher, or `fedlora coordinator init --encrypt-db`): a coordinator runs, enrolls a site and
// keeps its audit log in a file that holds none of it in clear; `fedlora coordinator rekey`
// changes the key; a plain file under an encrypting config is refused naming that command, which
// encrypts it.
import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { liveCoordinator, fedlora } from './helpers.ts';
import { initCoordinator } from '../../coordinator/service.ts';
import { CoordinatorStore } from '../../coordinator/store/store.ts';
import { coordinatorDbSpec, openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { isPlainSqlite, rekeyCipherDb } from '../../shared/sqlite-cipher.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));
const SITE = 'hospital-zeta-encrypted';

const inClear = (files: string[], s: string) => files.filter(existsSync).some((f) => {
  const b = readFileSync(f);
  return b.includes(Buffer.from(s, 'utf8')) || b.includes(Buffer.from(s, 'utf16le'));
});

describe('coordinator.sqlite at rest', () => {
  it('runs encrypted when configured; rekey keeps everything readable', async () => {
    const live = await liveCoordinator([SITE], { database: { encryption: 'sqlcipher' } });
    const { dataDir } = live;
    dirs.push(dataDir);
    const file = join(dataDir, 'coordinator.sqlite');
    try {
      expect(live.coord.store.db.prepare('SELECT id FROM sites').pluck().all()).toEqual([SITE]);
      expect(isPlainSqlite(file)).toBe(false);
      expect(statSync(join(dataDir, 'secrets', 'db.key')).mode & 0o777).toBe(0o600);
      expect(inClear([file, `${file}-wal`, `${file}-shm`], SITE)).toBe(false);
    } finally {
      await live.cleanup();
    }
  });

  it('`fedlora coordinator rekey` changes the key; a plain file under an encrypting config is refused, then encrypted', async () => {
    const dataDir = tempDir('enc-coord');
    dirs.push(dataDir);
    await initCoordinator({ dataDir, config: { database: { encryption: 'sqlcipher' } } });
    const file = join(dataDir, 'coordinator.sqlite');
    const s = new CoordinatorStore(file);
    s.upsertSite(SITE, Date.now());
    s.audit.append('admin', 'site_enrolled', SITE, {});
    s.close();
    const before = readFileSync(join(dataDir, 'secrets', 'db.key'), 'utf8');
    const r = await fedlora(['coordinator', 'rekey', '--data-dir', dataDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`rekeyed ${file}`);
    expect(readFileSync(join(dataDir, 'secrets', 'db.key'), 'utf8')).not.toBe(before);
    const again = new CoordinatorStore(file);
    expect(again.db.prepare('SELECT id FROM sites').pluck().all()).toEqual([SITE]);
    expect(again.audit.verify().ok).toBe(true);
    again.close();
    expect(inClear([file], SITE)).toBe(false);

    // A coordinator made plain (the default), then configured to encrypt.
    const plainDir = tempDir('enc-coord-plain');
    dirs.push(plainDir);
    await initCoordinator({ dataDir: plainDir });
    const plainFile = join(plainDir, 'coordinator.sqlite');
    const p = new CoordinatorStore(plainFile);
    p.upsertSite(SITE, Date.now());
    p.close();
    expect(isPlainSqlite(plainFile)).toBe(true);
    expect(inClear([plainFile, `${plainFile}-wal`], SITE)).toBe(true);
    const cfgFile = join(plainDir, 'coordinator.yaml');
    const cfg = YAML.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgFile, YAML.stringify({ ...cfg, database: { encryption: 'sqlcipher' } }));
    expect(() => openCoordinatorDb(plainFile)).toThrow(expect.objectContaining({
      code: 'FEDLORA_ERR_DB_PLAINTEXT', message: expect.stringContaining(`fedlora coordinator rekey --data-dir ${plainDir}`),
    }));
    expect(rekeyCipherDb(coordinatorDbSpec(plainFile)).from).toBe('plain');
    expect(isPlainSqlite(plainFile)).toBe(false);
    expect(inClear([plainFile, `${plainFile}-wal`], SITE)).toBe(false);
    const enc = new CoordinatorStore(plainFile);
    expect(enc.db.prepare('SELECT id FROM sites').pluck().all()).toEqual([SITE]);
    enc.close();
  });
});
