// A real coordinator (initCoordinator + startCoordinator: store, round engine, Federation over
// mutual TLS 1.3 on 127.0.0.1, certificates made at run time) with enrolled sites and one job
// whose round is open for all of them, so uploads go through the production intake
// (coordinator/grpc/submit-update.ts → coordinator/rounds/intake.ts). Used by the SubmitUpdate
// wire tests and by test/bench/upload.bench.ts. Updates are signed safetensors files in the
// job's layout, written at run time.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient, type FederationClient } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import type { UploadHeaderInput } from '../../shared/transfer/upload.ts';
import { fakeDelta, encodeDelta, rawSpec, TINY_CONFIG } from '../coordinator/helpers.ts';
import { tempDir } from './helpers.ts';

export interface RigSite {
  id: string;
  dir: string;
  client: FederationClient;
  taskId: string;
}

export interface UploadRig {
  coord: RunningCoordinator;
  dataDir: string;
  work: string;
  jobId: string;
  sites: RigSite[];
  /** A signed update of `site` in the job's layout, as a file; `edit` may change the values. */
  update(site: RigSite, updateId: string, edit?: (flat: Float32Array) => void): { file: string; bytes: Buffer; sha256: string; header: UploadHeaderInput };
  /** Stop the coordinator (graceful) and start it again on the same data dir and ports. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export interface RigOptions {
  sites: number;
  /** Model size behind the update layout (q/v LoRA of rank r over `layers` layers of `hidden`). */
  model?: { hidden: number; layers: number; r: number };
  config?: Record<string, unknown>;
}

export async function startUploadRig(o: RigOptions): Promise<UploadRig> {
  const work = tempDir('upload-rig');
  const dataDir = join(work, 'coordinator');
  const local = { host: '127.0.0.1', port: 0 };
  const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, rounds: { tick_ms: 100 }, ...o.config } });
  let coord = await startCoordinator(dataDir, { logger: false });
  const m = o.model ?? { hidden: 64, layers: 2, r: 4 };
  const config = { ...TINY_CONFIG, hidden_size: m.hidden, intermediate_size: 2 * m.hidden, num_hidden_layers: m.layers, num_attention_heads: 4, num_key_value_heads: 4 };
  const sites: RigSite[] = [];
  for (let i = 0; i < o.sites; i++) {
    const id = `site-${i + 1}`;
    const dir = join(work, id);
    const { token } = issueJoinToken(coord.store.db, { siteId: id, ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: init.caSha256 });
    await enrollSite({ token, siteDir: dir });
    coord.store.touchSite(id, coord.engine.now());
    sites.push({ id, dir, client: createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir)), taskId: '' });
  }
  const spec = parseJobSpec(rawSpec({
    base_model: { id: 'bench/qwen2', manifest_sha256: 'a'.repeat(64), config },
    lora: { r: m.r, alpha: 2 * m.r, target_modules: ['q_proj', 'v_proj'], init_seed: 7 },
    rounds: 1, min_sites: o.sites, max_sites: o.sites, round_deadline_s: 3600,
  }), 'upload rig job');
  const jobId = await coord.engine.submitJob(spec, 'job-upload');
  await coord.engine.tick();
  for (const s of sites) {
    const t = coord.store.openTasksFor(s.id).find((x) => x.job_id === jobId);
    if (!t) throw new Error(`upload rig: ${s.id} got no task (round not open)`);
    s.taskId = t.task_id;
  }
  const rig: UploadRig = {
    get coord() { return coord; },
    dataDir, work, jobId, sites,
    update(site, updateId, edit) {
      const { layout } = coord.engine.jobInfo(jobId);
      const flat = fakeDelta(layout.update, site.id, 1);
      edit?.(flat);
      const bytes = encodeDelta(layout.update, flat);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const file = join(work, `${updateId}.safetensors.bin`);
      writeFileSync(file, bytes);
      const fields = { updateId, jobId, round: 1, baseVersion: 0, sha256, numExamples: 10 };
      const signature = signUpdate(readFileSync(sitePaths(site.dir).key), fields);
      return { file, bytes, sha256, header: { ...fields, taskId: site.taskId, signature, payloadKind: 'delta' } };
    },
    async restart() {
      const c = coord.config;
      const same = { ...c, federation: { ...c.federation, port: coord.federationPort }, enrollment: { ...c.enrollment, port: coord.enrollmentPort }, http: { ...c.http, port: coord.httpPort } };
      await coord.stop();
      coord = await startCoordinator(same, { logger: false });
    },
    async close() {
      for (const s of sites) s.client.close();
      await coord.stop();
    },
  };
  return rig;
}
