// `npm run test:load`: the coordinator under load, as a bounded script (not part of `npm test`).
// Phase A: 50 sites x 16 MiB adapters (hidden 2048, 32 layers, r 16 on q,v) for 10 rounds.
// Phase B: 200 sites x 256 KiB adapters (hidden 512, 8 layers, r 4 on q,v) for 5 rounds.
// Each phase runs its own coordinator process (`node cli/bin.mjs coordinator start`) and asserts:
// every round published on its first attempt, accepted updates per round == sites, each
// published version equals the FedAvg (float64 reference) of the deltas sent. It prints per-round
// wall time, the coordinator's overhead (last update acknowledged -> version published), upload
// and fetch MB/s, and the coordinator's peak RSS (VmHWM). Exit code 1 on any failed check.
//
// Flags: --self-check (the reference leaves one delta out: must print FAILED and exit 1),
//        --large-sites N --large-rounds N --small-sites N --small-rounds N --time-limit-s S
//        --only large|small   (e.g. `npm run test:load -- --large-rounds 3` on a slow machine)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { jobLayout } from '../../coordinator/publish/layout.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import { sqlitePathOf } from '../../coordinator/enrollment.ts';
import { prepareCoordinator, spawnCoordinator } from './coordinator-process.ts';
import { SimSite, type FetchRecord, type UploadRecord } from './sim-site.ts';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const MiB = 1024 * 1024;
/** --self-check: the reference omits site 0's round-1 delta, to show the FedAvg check fails (exit 1). */
const SELF_CHECK = process.argv.includes('--self-check');

interface Phase { name: string; sites: number; rounds: number; hidden: number; layers: number; r: number }

function modelConfig(p: Phase) {
  return {
    architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: 1024, hidden_size: p.hidden, intermediate_size: p.hidden * 2,
    num_hidden_layers: p.layers, num_attention_heads: 16, num_key_value_heads: 16, max_position_embeddings: 512, rms_norm_eps: 1e-6,
    rope_theta: 10000, tie_word_embeddings: true,
  };
}

interface RoundRow { round: number; attempt: number; state: string; started_ms: number; aggregating_ms: number | null; published_ms: number | null }
interface PhaseResult { phase: Phase; adapterBytes: number; rows: string[][]; hwmMiB: number; cpuS: number; jobS: number; failures: string[]; maxErr: number; wallS: number }

async function runPhase(p: Phase, deadlineAt: number): Promise<PhaseResult> {
  const failures: string[] = [];
  const t0 = Date.now();
  const work = mkdtempSync(join(tmpdir(), `fedlora-load-${p.name}-`));
  const dataDir = join(work, 'coordinator');
  const ids = Array.from({ length: p.sites }, (_, i) => `site-${String(i).padStart(3, '0')}`);
  const spec = parseJobSpec({
    name: `load-${p.name}`,
    base_model: { id: 'load/qwen2', manifest_sha256: 'b'.repeat(64), config: modelConfig(p) },
    lora: { r: p.r, alpha: 2 * p.r, target_modules: ['q_proj', 'v_proj'], init_seed: 11 },
    rounds: p.rounds, train: { local_steps: 1, learning_rate: 0.01 },
    min_sites: p.sites, max_sites: p.sites, round_deadline_s: 900, round_retries: 0,
  }, 'load spec');
  const { update: layout, full } = jobLayout(spec);
  if (layout !== full) throw new Error('load spec: expected the update layout to be the full layout (freeze_a false)');
  const jobId = `load-${p.name}`;

  // The expected FedAvg: float64 sums of weight x delta for the round in progress, folded into
  // `expected[v]` when all sites of round v were acknowledged (rounds never overlap: round v+1's
  // tasks only exist once version v is published).
  const expected = new Map<number, Float32Array>();
  let acc = new Float64Array(layout.total), accW = 0, accN = 0;
  const uploads: UploadRecord[] = [], fetches: FetchRecord[] = [];
  const checked = new Map<number, number>(); // version -> max abs error
  let pendingCheck = new Set<number>();
  let maxErr = 0;
  const waiting = new Map<number, Buffer>();
  const compare = (version: number, data: Buffer) => {
    const got = flatten(decodeSafetensorsF32(data).tensors, full);
    const exp = expected.get(version);
    if (!exp) return void waiting.set(version, data); // the last ack of that round is still on its way: compare at the fold
    let m = 0;
    for (let i = 0; i < got.length; i++) m = Math.max(m, Math.abs(got[i] - exp[i]));
    checked.set(version, m);
    maxErr = Math.max(maxErr, m);
    if (!(m <= 1e-6)) failures.push(`v${version}: published adapter differs from the FedAvg of the sent deltas by ${m.toExponential(3)} (> 1e-6)`);
  };
  const siteErrors: string[] = [];

  const { adminToken, tokens } = await prepareCoordinator(dataDir, ids);
  const coord = await spawnCoordinator(dataDir, adminToken);
  const sites: SimSite[] = [];
  try {
    const hooks = {
      layout, workDir: work,
      onDelta(i: number, round: number, delta: Float32Array, n: number) {
        if (SELF_CHECK && i === 0 && round === 1) return; // leave one site out of the reference: the check must fail
        for (let k = 0; k < delta.length; k++) acc[k] += n * delta[k];
        accW += n;
      },
      onFetched(version: number, data: Buffer | null) {
        if (data === null) {
          // the first fetcher of a version keeps its bytes for the check
          if (checked.has(version) || pendingCheck.has(version)) return false;
          pendingCheck.add(version);
          return true;
        }
        if (version === 0) {
          expected.set(0, flatten(decodeSafetensorsF32(data).tensors, full)); // v0 = A from init_seed, B = 0: the reference starts here
          checked.set(0, 0);
        } else compare(version, data);
        return true;
      },
      onUploaded(r: UploadRecord) {
        uploads.push(r);
        if (++accN === p.sites) {
          const prev = expected.get(r.round - 1);
          if (!prev) return void failures.push(`round ${r.round}: version ${r.round - 1} was never fetched`);
          const next = new Float32Array(prev.length);
          for (let k = 0; k < next.length; k++) next[k] = prev[k] + acc[k] / accW;
          expected.set(r.round, next);
          const w = waiting.get(r.round);
          if (w) {
            waiting.delete(r.round);
            compare(r.round, w);
          }
          acc = new Float64Array(layout.total);
          accW = 0;
          accN = 0;
          process.stderr.write(`[${p.name}] round ${r.round}: all ${p.sites} updates acknowledged\n`);
        }
      },
      onFetchDone: (f: FetchRecord) => fetches.push(f),
      onError: (id: string, e: unknown) => siteErrors.push(`${id}: ${(e as Error).message}`),
    };
    for (const [i, id] of ids.entries()) sites.push(new SimSite(id, i, hooks));
    // enroll 10 at a time (real key + CSR + CA-issued certificate each), then connect all at once
    for (let i = 0; i < sites.length; i += 10) await Promise.all(sites.slice(i, i + 10).map((s) => s.enroll(tokens.get(s.id)!, coord.enrollmentEndpoint)));
    await Promise.all(sites.map((s) => s.connect(coord.federationEndpoint)));
    const setupS = (Date.now() - t0) / 1000;
    const cpu0 = coord.cpuSeconds();
    // RSS samples of the coordinator, to split the peak between collection and aggregation
    const rss: { t: number; mib: number }[] = [];
    const sampler = setInterval(() => rss.push({ t: Date.now(), mib: coord.memory().rssMiB }), 100);

    const tSubmit = Date.now();
    const res = await fetch(`${coord.httpUrl}/api/jobs?id=${jobId}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` }, body: JSON.stringify(spec) });
    if (res.status !== 201) throw new Error(`job submit: HTTP ${res.status} ${await res.text()}`);
    let status = 'running';
    while (status === 'running') {
      if (Date.now() > deadlineAt) throw new Error(`time limit reached with job ${jobId} still running (${uploads.length} updates acknowledged)`);
      if (siteErrors.length) throw new Error(`site errors: ${siteErrors.slice(0, 5).join('; ')}`);
      await new Promise((r) => setTimeout(r, 200));
      status = ((await (await fetch(`${coord.httpUrl}/api/jobs/${jobId}`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { status: string }).status;
    }
    clearInterval(sampler);
    const jobS = (Date.now() - tSubmit) / 1000;
    const cpuS = coord.cpuSeconds() - cpu0;
    if (status !== 'completed') failures.push(`job ended ${status}`);
    // the driver's own loop may still be behind on the last acknowledgements
    for (let i = 0; i < 100 && uploads.length < p.sites * p.rounds; i++) await new Promise((r) => setTimeout(r, 100));
    process.stderr.write(`[${p.name}] job ${status}; ${uploads.length} updates acknowledged\n`);
    // the final version: fetched by one site, compared with the reference
    pendingCheck = new Set();
    const last = sites[0];
    const final = await new Promise<Buffer>((resolve, reject) => {
      const s = last.client.fetchAdapter({ jobId, version: p.rounds, offset: 0 });
      const parts: Buffer[] = [];
      s.on('data', (m: { chunk?: { data: Uint8Array } }) => m.chunk && parts.push(Buffer.from(m.chunk.data)));
      s.on('end', () => resolve(Buffer.concat(parts)));
      s.on('error', reject);
    });
    compare(p.rounds, final);
    for (let v = 0; v <= p.rounds; v++) if (!checked.has(v)) failures.push(`version ${v} was not checked against the reference`);
    const { hwmMiB } = coord.memory();

    // per-round figures from the coordinator's own rows (same machine clock as the driver)
    const db = new Database(sqlitePathOf(dataDir), { readonly: true });
    const rounds = db.prepare('SELECT round, attempt, state, started_ms, aggregating_ms, published_ms FROM rounds WHERE job_id = ? ORDER BY round, attempt').all(jobId) as RoundRow[];
    const acceptedBy = new Map((db.prepare("SELECT round, count(*) AS n FROM updates WHERE job_id = ? AND status = 'accepted' GROUP BY round").all(jobId) as { round: number; n: number }[]).map((x) => [x.round, x.n]));
    const acceptedAt = new Map((db.prepare("SELECT json_extract(details, '$.round') AS round, max(ts) AS ts FROM audit_log WHERE action = 'update_received' AND json_extract(details, '$.job') = ? GROUP BY 1").all(jobId) as { round: number; ts: string }[]).map((x) => [x.round, Date.parse(x.ts)]));
    db.close();
    const rows: string[][] = [];
    for (let r = 1; r <= p.rounds; r++) {
      const rr = rounds.filter((x) => x.round === r);
      const row = rr[rr.length - 1];
      if (!row || row.state !== 'published' || rr.length !== 1) failures.push(`round ${r}: ${rr.length} attempt(s), last state ${row?.state ?? 'none'}`);
      const acc_ = acceptedBy.get(r) ?? 0;
      if (acc_ !== p.sites) failures.push(`round ${r}: ${acc_} accepted updates, expected ${p.sites}`);
      const up = uploads.filter((u) => u.round === r);
      const fe = fetches.filter((f) => f.version === r - 1);
      const lastAccepted = acceptedAt.get(r) ?? NaN; // coordinator clock: the last update's acceptance commit
      const lastAck = Math.max(...up.map((u) => u.ackMs)), firstUp = Math.min(...up.map((u) => u.startMs));
      const upMB = up.reduce((a, u) => a + u.bytes, 0) / MiB, feMB = fe.reduce((a, f) => a + f.bytes, 0) / MiB;
      const feS = (Math.max(...fe.map((f) => f.endMs)) - Math.min(...fe.map((f) => f.startMs))) / 1000;
      const wall = row?.published_ms ? (row.published_ms - row.started_ms) / 1000 : NaN;
      const peak = (a: number, b: number) => Math.max(0, ...rss.filter((x) => x.t >= a && x.t <= b).map((x) => x.mib)).toFixed(0);
      rows.push([
        String(r), String(acc_), wall.toFixed(2), feS.toFixed(2), (feMB / feS).toFixed(0), ((lastAck - firstUp) / 1000).toFixed(2), (upMB / ((lastAck - firstUp) / 1000)).toFixed(0),
        row?.aggregating_ms ? String(row.aggregating_ms - lastAccepted) : '-', row?.published_ms && row.aggregating_ms ? String(row.published_ms - row.aggregating_ms) : '-',
        row?.published_ms ? String(row.published_ms - lastAccepted) : '-',
        row?.aggregating_ms ? peak(row.started_ms, row.aggregating_ms) : '-', row?.aggregating_ms && row.published_ms ? peak(row.aggregating_ms, row.published_ms + 100) : '-', (checked.get(r) ?? NaN).toExponential(1),
      ]);
    }
    if (siteErrors.length) failures.push(...siteErrors.slice(0, 5));
    // the completed job sends each participant one EVALUATE task of the final version
    await new Promise((r) => setTimeout(r, 500));
    const noEval = sites.filter((s) => s.evaluateTasks !== 1).length;
    if (noEval) failures.push(`${noEval} site(s) did not get exactly one EVALUATE task after completion`);
    process.stderr.write(`[${p.name}] setup (enroll + connect ${p.sites} sites) ${setupS.toFixed(1)} s\n`);
    return { phase: p, adapterBytes: layout.total * 4, rows, hwmMiB, cpuS, jobS, failures, maxErr, wallS: (Date.now() - t0) / 1000 };
  } finally {
    for (const s of sites) s.close();
    const code = await coord.stop();
    if (code !== 0) process.stderr.write(`[${p.name}] coordinator exited with ${code}; stderr tail:\n${coord.stderrTail()}\n`);
    rmSync(work, { recursive: true, force: true });
  }
}

const HEAD = ['round', 'accepted', 'round wall s', 'fetch s', 'fetch MB/s', 'upload s', 'upload MB/s', 'last accepted→aggregating ms', 'aggregate+publish ms', 'overhead ms (last accepted→published)', 'RSS MiB collecting', 'RSS MiB aggregating', 'max |err| vs FedAvg'];

function table(rows: string[][]): string {
  const all = [HEAD, ...rows];
  const w = HEAD.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((x, c) => x.padEnd(w[c])).join(' | ')} |`;
  return [line(HEAD), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  const limitS = Number(arg('time-limit-s', '900'));
  const deadlineAt = Date.now() + limitS * 1000;
  const only = arg('only', '');
  const phases: Phase[] = [];
  if (only !== 'small') phases.push({ name: 'large', sites: Number(arg('large-sites', '50')), rounds: Number(arg('large-rounds', '10')), hidden: 2048, layers: 32, r: 16 });
  if (only !== 'large') phases.push({ name: 'small', sites: Number(arg('small-sites', '200')), rounds: Number(arg('small-rounds', '5')), hidden: 512, layers: 8, r: 4 });
  let failed = false;
  for (const p of phases) {
    let r: PhaseResult;
    try {
      r = await runPhase(p, deadlineAt);
    } catch (e) {
      process.stdout.write(`\n## ${p.name}: FAILED: ${(e as Error).message}\n`);
      failed = true;
      continue;
    }
    process.stdout.write(`\n## ${p.sites} sites x ${(r.adapterBytes / MiB).toFixed(2)} MiB adapter, ${p.rounds} rounds (hidden ${p.hidden}, ${p.layers} layers, r ${p.r} on q,v)\n`);
    process.stdout.write(`phase wall ${r.wallS.toFixed(1)} s; coordinator peak RSS (VmHWM) ${r.hwmMiB.toFixed(0)} MiB, CPU ${r.cpuS.toFixed(1)} s over the job's ${r.jobS.toFixed(1)} s; final adapter vs FedAvg reference: max |err| ${r.maxErr.toExponential(2)}\n\n`);
    process.stdout.write(table(r.rows) + '\n');
    if (r.failures.length) {
      failed = true;
      process.stdout.write(`FAILED checks:\n${r.failures.map((f) => `  - ${f}`).join('\n')}\n`);
    } else process.stdout.write(`OK: every round published on attempt 1, ${p.sites} accepted updates per round, every version == FedAvg of the sent deltas\n`);
  }
  process.exit(failed ? 1 : 0);
}

await main();
