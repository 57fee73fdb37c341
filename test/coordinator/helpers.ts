// Fixtures for coordinator tests: a temp data dir, a manifest-signing key made at run time,
// a tiny qwen2 config (2 layers, hidden 16) and job specs, fake updates.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { unflatten, type AdapterLayout } from '../../shared/tensors.ts';
import { CoordinatorStore } from '../../coordinator/store/store.ts';
import { RoundEngine, type EngineOptions } from '../../coordinator/rounds/index.ts';
import { parseJobSpec, type JobSpec } from '../../coordinator/jobs/spec.ts';

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `fedlora-${prefix}-`));
}
export function rmDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
}

export function testSigner(): { keyPem: string; certPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), certPem: publicKeyPem, publicKeyPem };
}

export const TINY_CONFIG = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: 64, hidden_size: 16, intermediate_size: 32,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 128, rms_norm_eps: 1e-6,
  rope_theta: 10000, tie_word_embeddings: true,
};

export function rawSpec(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'tiny',
    base_model: { id: 'tiny/qwen2', manifest_sha256: 'a'.repeat(64), config: TINY_CONFIG },
    lora: { r: 2, alpha: 4, target_modules: ['q_proj', 'v_proj'], init_seed: 7 },
    rounds: 2,
    train: { local_steps: 2, learning_rate: 0.01 },
    min_sites: 2,
    max_sites: 3,
    round_deadline_s: 60,
    ...over,
  };
}
export function tinySpec(over: Record<string, unknown> = {}): JobSpec {
  return parseJobSpec(rawSpec(over), 'test spec');
}

/** A deterministic delta in the update layout (value depends on site and round). */
export function fakeDelta(layout: AdapterLayout, site: string, round: number): Float32Array {
  const v = new Float32Array(layout.total);
  let h = 0;
  for (const ch of `${site}:${round}`) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  for (let i = 0; i < v.length; i++) v[i] = (((h + i * 2654435761) >>> 0) % 1000) / 1000 - 0.5;
  return v;
}

export function encodeDelta(layout: AdapterLayout, flat: Float32Array): Buffer {
  const t = new Map([...unflatten(flat, layout)].map(([k, x]) => [k, { dtype: 'F32' as const, shape: x.shape, data: x.data }]));
  return encodeSafetensors(t);
}

export interface Harness {
  dir: string;
  store: CoordinatorStore;
  engine: RoundEngine;
  clock: { t: number };
  signer: ReturnType<typeof testSigner>;
  reopen(): Harness;
  close(): void;
}

export function harness(o: { dir?: string; signer?: ReturnType<typeof testSigner>; clock?: { t: number }; engine?: Partial<EngineOptions> } = {}): Harness {
  const dir = o.dir ?? tempDir('coordtest');
  const signer = o.signer ?? testSigner();
  const clock = o.clock ?? { t: 1_700_000_000_000 };
  const store = new CoordinatorStore(join(dir, 'coordinator.sqlite'));
  const engine = new RoundEngine({ store, dataDir: dir, signer, now: () => clock.t, heartbeatTimeoutMs: 30_000, ...o.engine });
  engine.on('error', () => undefined);
  const h: Harness = {
    dir, store, engine, clock, signer,
    reopen() {
      store.close();
      return harness({ dir, signer, clock, engine: o.engine });
    },
    close() {
      store.close();
    },
  };
  return h;
}

export function online(h: Harness, ...sites: string[]): void {
  for (const s of sites) h.store.touchSite(s, h.clock.t);
}
