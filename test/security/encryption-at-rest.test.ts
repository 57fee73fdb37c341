// site.sqlite is encrypted at rest by default (SQLCipher through better-sqlite3-multiple-ciphers):
// after an ingest that stores clinical phrases and identifiers (de-identification explicitly off,
// so the identifiers really are in the records), neither the database file nor its -wal/-shm nor
// a backup holds any of them in a form grep finds (UTF-8, UTF-16LE/BE, ASCII in either case),
// while a site configured plain does (the control). A wrong, missing or loose key is an error
// naming its source and leaves the bytes of the file and its -wal as they were, even with a hot WAL; the key comes
// from a file, an environment variable or a command.
import { describe, it, expect, afterAll } from 'vitest';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { openSiteDataStore, ingestFiles, defaultDataConfig, parseDataConfig, loadOrCreateSiteKey } from '../../site-agent/data/index.ts';
import { backupSiteDb } from '../../site-agent/site-backup.ts';
import { isPlainSqlite, reencryptFile } from '../../shared/sqlite-cipher.ts';
import { sha256FileSync } from '../../shared/hash.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { runProcess } from '../runner/run-process.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));
const newDir = (p: string) => {
  const d = tempDir(p);
  dirs.push(d);
  return d;
};

// What the records carry: clinical phrases (kept by any de-identification) and identifiers.
const PHRASES = ['胸骨后压榨性疼痛伴大汗淋漓', '糖化血红蛋白明显升高', 'crushing substernal chest pressure', 'bibasilar crackles and raised JVP'];
const IDENTIFIERS = ['王建国', '110105198003071234', 'ZY0099887766', '13812345678', 'Johnathan Smithfield', '4417 Larkspur Avenue'];
const NEEDLES = [...PHRASES, ...IDENTIFIERS];

function writeExport(dir: string): string {
  const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify(i % 2
    ? { patient_id: `ZY0099887766-${i}`, patient_name: '王建国', chief_complaint: `${PHRASES[0]}${i}小时`, history: `患者王建国，身份证号110105198003071234，电话13812345678，住院号ZY0099887766。${PHRASES[1]}。`, diagnosis: '急性心肌梗死', lang: 'zh' }
    : { patient_id: `MRN-${i}`, patient_name: 'Johnathan Smithfield', chief_complaint: `${PHRASES[2]} for ${i} hours`, history: `Johnathan Smithfield lives at 4417 Larkspur Avenue; ${PHRASES[3]}.`, diagnosis: 'Acute myocardial infarction', lang: 'en' }));
  const f = join(dir, 'export.jsonl');
  writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

/** Every needle in every form a grep over the bytes could match. */
function forms(s: string): Buffer[] {
  const variants = new Set([s, s.toLowerCase(), s.toUpperCase()]);
  const out: Buffer[] = [];
  for (const v of variants) {
    const le = Buffer.from(v, 'utf16le');
    const be = Buffer.from(le);
    be.swap16();
    out.push(Buffer.from(v, 'utf8'), le, be);
  }
  return out;
}

function leaks(files: string[]): string[] {
  const found: string[] = [];
  for (const f of files.filter(existsSync)) {
    const bytes = readFileSync(f);
    for (const n of NEEDLES) if (forms(n).some((b) => bytes.includes(b))) found.push(`${f}: ${n}`);
  }
  return found;
}

/** grep itself, over the raw bytes (-a), for the UTF-8 needles: exit 1 = no line matched. */
function grepFinds(files: string[], dir: string): boolean {
  const patterns = join(dir, 'needles.txt');
  writeFileSync(patterns, NEEDLES.join('\n') + '\n');
  const r = spawnSync('grep', ['-a', '-F', '-i', '-q', '-f', patterns, ...files.filter(existsSync)]);
  if (r.error) throw new Error(`grep not runnable (${r.error.message}): apt-get install grep`);
  if (r.status === 2) throw new Error(`grep failed: ${r.stderr}`);
  return r.status === 0;
}

const dbFiles = (siteDir: string) => ['', '-wal', '-shm'].map((s) => join(siteDir, `site.sqlite${s}`));
const keepPhi = parseDataConfig({ deid: { enabled: false, i_understand_records_keep_phi: true } });

describe('site.sqlite at rest', () => {
  it('holds no planted phrase or identifier in any form grep finds (file, -wal, -shm, backup); a plain site does', async () => {
    const work = newDir('enc-grep');
    const file = writeExport(work);
    const enc = join(work, 'encrypted');
    const plain = join(work, 'plain');
    mkdirSync(plain);
    writeFileSync(join(plain, 'site.yaml'), YAML.stringify({ model: { path: '/models/x' }, database: { encryption: 'none' } }));

    for (const siteDir of [enc, plain]) {
      const store = openSiteDataStore(join(siteDir, 'site.sqlite'));
      const sum = await ingestFiles(store, [file], { format: 'jsonl', config: keepPhi, key: loadOrCreateSiteKey(siteDir) });
      expect(sum.accepted).toBe(40);
      // The records really hold the identifiers (de-identification is off in this test).
      const text = store.allRecords().map((r) => JSON.stringify(r)).join('\n');
      for (const n of NEEDLES) expect(text).toContain(n);
      // Grep while the connection is open: the last transactions are still in the -wal.
      expect(statSync(join(siteDir, 'site.sqlite-wal')).size).toBeGreaterThan(0);
      if (siteDir === enc) {
        expect(isPlainSqlite(join(enc, 'site.sqlite'))).toBe(false);
        expect(leaks(dbFiles(enc))).toEqual([]);
        expect(grepFinds(dbFiles(enc), work)).toBe(false);
      } else {
        expect(isPlainSqlite(join(plain, 'site.sqlite'))).toBe(true);
        expect(leaks(dbFiles(plain)).length).toBeGreaterThan(0); // the detector finds them where they are
        expect(grepFinds(dbFiles(plain), work)).toBe(true);
      }
      store.close();
    }
    // The key was made with the database, 0600 beside the de-identification key.
    expect(statSync(join(enc, 'secrets', 'db.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(enc, 'secrets', 'db.key'), 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);

    const m = await backupSiteDb(enc, join(work, 'backup'));
    expect(m).toMatchObject({ encryption: 'sqlcipher', records: 40, key_fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/) });
    expect(leaks([join(work, 'backup', 'site.sqlite')])).toEqual([]);
    expect(grepFinds([join(work, 'backup', 'site.sqlite'), join(work, 'backup', 'backup.json')], work)).toBe(false);
    const pm = await backupSiteDb(plain, join(work, 'backup-plain'));
    expect(pm.encryption).toBe('none');
    expect(leaks([join(work, 'backup-plain', 'site.sqlite')]).length).toBeGreaterThan(0);
  });

  it('a wrong, missing or loose key is an error naming the key file, and the database and -wal bytes stay as they were (hot WAL too)', async () => {
    const siteDir = newDir('enc-wrong');
    const store = openSiteDataStore(join(siteDir, 'site.sqlite'));
    await ingestFiles(store, [writeExport(siteDir)], { format: 'jsonl', config: defaultDataConfig(), key: loadOrCreateSiteKey(siteDir) });
    store.close();
    // A writer killed mid-work leaves committed transactions only in the -wal.
    const child = await runProcess(process.execPath, [fileURLToPath(new URL('./fixtures/write-and-die.mjs', import.meta.url)), siteDir, '50']);
    expect(child.signal).toBe('SIGKILL');
    expect(statSync(join(siteDir, 'site.sqlite-wal')).size).toBeGreaterThan(0);

    const keyFile = join(siteDir, 'secrets', 'db.key');
    const rightKey = readFileSync(keyFile, 'utf8');
    // The database and its -wal (the -shm is the index SQLite rebuilds from the -wal after a crash).
    const snapshot = () => dbFiles(siteDir).slice(0, 2).map((f) => sha256FileSync(f));
    const before = snapshot();

    writeFileSync(keyFile, 'ab'.repeat(32) + '\n', { mode: 0o600 });
    const wrong = () => openSiteDb(siteDir);
    expect(wrong).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_DB_KEY', message: expect.stringContaining(`key file ${keyFile}`) }));
    expect(wrong).toThrow(/wrong key.*nothing was written/);
    expect(() => openSiteDb(siteDir, { readonly: true })).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_DB_KEY' }));
    expect(snapshot()).toEqual(before);

    rmSync(keyFile);
    expect(() => openSiteDb(siteDir)).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_DB_KEY', message: expect.stringContaining(`key file ${keyFile} does not exist`) }));
    expect(existsSync(keyFile)).toBe(false); // never replaced by a new key while the database exists
    expect(snapshot()).toEqual(before);

    writeFileSync(keyFile, rightKey, { mode: 0o600 });
    chmodSync(keyFile, 0o644);
    expect(() => openSiteDb(siteDir)).toThrow(new RegExp(`accessible to group/others.*chmod 600 ${keyFile}`));
    chmodSync(keyFile, 0o600);

    const db = openSiteDb(siteDir);
    try {
      expect(db.prepare("SELECT count(*) FROM data_events WHERE kind = 'hot-wal'").pluck().get()).toBe(50);
      expect(db.prepare('SELECT count(*) FROM data_records').pluck().get()).toBe(40);
      expect(db.pragma('quick_check', { simple: true })).toBe('ok');
    } finally {
      db.close();
    }
  });

  it('takes the key from an environment variable or a command, naming them when they fail', () => {
    const siteDir = newDir('enc-sources');
    const yaml = (database: Record<string, unknown>) => writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify({ model: { path: '/models/x' }, database }));
    const key = 'cd'.repeat(32);

    yaml({ key_env: 'FEDLORA_TEST_SITE_DB_KEY' });
    delete process.env.FEDLORA_TEST_SITE_DB_KEY;
    expect(() => openSiteDb(siteDir)).toThrow(/environment variable FEDLORA_TEST_SITE_DB_KEY \(.*site\.yaml database\.key_env\) is not set/);
    expect(existsSync(join(siteDir, 'site.sqlite'))).toBe(false);
    process.env.FEDLORA_TEST_SITE_DB_KEY = key;
    try {
      const db = openSiteDb(siteDir);
      db.prepare("INSERT INTO data_events (kind, detail) VALUES ('k', '{}')").run();
      db.close();
      expect(existsSync(join(siteDir, 'secrets', 'db.key'))).toBe(false); // no key file with an env source
    } finally {
      delete process.env.FEDLORA_TEST_SITE_DB_KEY;
    }

    // A key manager's client: here, a command that prints the key kept in another folder.
    const kms = join(newDir('enc-kms'), 'site.key');
    writeFileSync(kms, key + '\n', { mode: 0o600 });
    yaml({ key_command: ['cat', kms] });
    const db = openSiteDb(siteDir);
    expect(db.prepare("SELECT count(*) FROM data_events WHERE kind = 'k'").pluck().get()).toBe(1);
    db.close();
    yaml({ key_command: ['cat', `${kms}.missing`] });
    expect(() => openSiteDb(siteDir)).toThrow(new RegExp(`key command "cat ${kms}\\.missing" \\(.*database\\.key_command\\) failed: exit status 1: .*No such file`));
    yaml({ key_command: ['fedlora-no-such-kms-client'] });
    expect(() => openSiteDb(siteDir)).toThrow(/key command "fedlora-no-such-kms-client" .* failed: not found/);
    yaml({ key_env: 'A', key_command: ['cat'] });
    expect(() => openSiteDb(siteDir)).toThrow(/site\.yaml:\d+: database\.key_command: give key_env or key_command, not both/);
  });

  it('a rekey interrupted after the database changed but before its key file was replaced is finished by the next open', () => {
    const siteDir = newDir('enc-crash');
    const db = openSiteDb(siteDir);
    db.prepare("INSERT INTO data_events (kind, detail) VALUES ('x', '{}')").run();
    db.close();
    const keyFile = join(siteDir, 'secrets', 'db.key');
    const oldKey = readFileSync(keyFile, 'utf8').trim();
    // A rekey that wrote db.key.next and never committed: the old key still opens, nothing changes.
    writeFileSync(`${keyFile}.next`, 'ef'.repeat(32) + '\n', { mode: 0o600 });
    openSiteDb(siteDir).close();
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(oldKey);
    // One that committed (the file now opens with the new key only) and stopped before the rename.
    const newKey = '12'.repeat(32);
    writeFileSync(`${keyFile}.next`, newKey + '\n', { mode: 0o600 });
    reencryptFile(join(siteDir, 'site.sqlite'), oldKey, newKey);
    const reopened = openSiteDb(siteDir);
    expect(reopened.prepare("SELECT count(*) FROM data_events WHERE kind = 'x'").pluck().get()).toBe(1);
    reopened.close();
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(newKey);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(existsSync(`${keyFile}.next`)).toBe(false);
  });
});
