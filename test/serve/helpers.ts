// A site dir for the assistant's tests: a tiny DeepSeek-architecture model (byte tokenizer,
// DeepSeek chat template), site.yaml with a `serve:` section, users with keys.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { initTinyModel } from '../../site-agent/engine/index.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { addUser } from '../../site-agent/serve/users.ts';
import { tempDir } from '../coordinator/helpers.ts';

export { tempDir, rmDir } from '../coordinator/helpers.ts';

export interface TestSite {
  dir: string;
  siteDir: string;
  modelDir: string;
  keys: { clinician: string; admin: string };
}

/** A tiny model with the byte tokenizer (one token per byte: Chinese is 3 tokens a character). */
export function tinyModel(dir: string): string {
  return initTinyModel({ arch: 'llama', out: join(dir, 'model'), seed: 11, layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, tokenizer: 'byte' }).dir;
}

export function makeSite(prefix: string, serve: Record<string, unknown> = {}, o: { modelDir?: string } = {}): TestSite {
  const dir = tempDir(prefix);
  const modelDir = o.modelDir ?? tinyModel(dir);
  const siteDir = join(dir, 'site');
  mkdirSync(siteDir, { recursive: true, mode: 0o700 });
  writeSiteYaml(siteDir, modelDir, serve);
  const db = openSiteDb(siteDir);
  try {
    const clinician = addUser(db, 'dr.li', 'clinician').key;
    const admin = addUser(db, 'admin', 'admin').key;
    return { dir, siteDir, modelDir, keys: { clinician, admin } };
  } finally {
    db.close();
  }
}

export function writeSiteYaml(siteDir: string, modelDir: string, serve: Record<string, unknown>): void {
  const cfg = { name: 'test hospital', model: { path: modelDir, device: 'cpu' }, serve: { port: 0, max_prompt_tokens: 1024, max_tokens_default: 24, ...serve } };
  writeFileSync(join(siteDir, 'site.yaml'), YAML.stringify(cfg));
}
