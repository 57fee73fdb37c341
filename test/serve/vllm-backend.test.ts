// `fedlora site serve --backend vllm`: auth, retrieval, prompt, disclaimer, audit and the gate
// stay in front of a vLLM OpenAI-compatible server, here a stand-in that checks the requests
// (vllm-stand-in.ts). The approved adapter is loaded through vLLM's LoRA API and switched when
// the gate serves another version; DeepSeek-R1 reasoning comes back as reasoning_content.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import OpenAI from 'openai';
import { initLoraAdapter, loadTokenizer, readCheckpoint, writePeftAdapter } from '../../site-agent/engine/index.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { setServing } from '../../site-agent/serve/gate/serving.ts';
import { addDocuments } from '../../site-agent/serve/kb/store.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { DEFAULT_DISCLAIMER } from '../../site-agent/serve/config.ts';
import { startVllmStandIn, type StandIn } from './vllm-stand-in.ts';
import { makeSite, rmDir, type TestSite } from './helpers.ts';

const GUIDES = join(import.meta.dirname, '..', '..', 'cli', 'demo', 'guidelines');
const SCRIPT = ['<thi', 'nk>Warfarin', ' in AF: check', ' the INR.</think>', '\n\nThe target', ' INR is 2.0', ' to 3.0 [1].'];
let site: TestSite;
let vllm: StandIn;
let srv: RunningServe;

function peft(version: number): string {
  const dir = join(site.siteDir, 'adapters', 'job-9', `v${version}`);
  writePeftAdapter(dir, initLoraAdapter(readCheckpoint(site.modelDir).config, { r: 2, alpha: 4, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: version }), { r: 2, alpha: 4, targets: ['q_proj'], dropout: 0, useRslora: false, baseModel: 'x' });
  return dir;
}

beforeAll(async () => {
  vllm = await startVllmStandIn(SCRIPT);
  site = makeSite('serve-vllm', { backend: 'vllm', vllm_url: vllm.url, max_prompt_tokens: 3000, retrieval: { enabled: true, top_k: 2, max_passage_chars: 120 } });
  const db = openSiteDb(site.siteDir);
  addDocuments(db, [join(GUIDES, 'anticoagulation-zh.md')]);
  setServing(db, { jobId: 'job-9', version: 4, sha256: 'a'.repeat(64), dir: peft(4) }, 'approve', 'test');
  db.close();
  srv = await startServe(site.siteDir);
});
afterAll(async () => {
  await srv?.close();
  await vllm?.close();
  rmDir(site.dir);
});

describe('vLLM backend (against a stand-in that checks the requests)', () => {
  it('loads the approved adapter through the LoRA API and generates with it; reasoning apart from content', async () => {
    expect([...vllm.loaded.keys()]).toEqual(['fedlora-job-9-v4']);
    const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: '房颤患者华法林的目标INR是多少？' }], max_tokens: 64 });
    const msg = r.choices[0].message as { content: string; reasoning_content?: string };
    expect(msg.reasoning_content).toBe('Warfarin in AF: check the INR.');
    expect(msg.content).toBe(`The target INR is 2.0 to 3.0 [1].\n\n---\n${DEFAULT_DISCLAIMER.zh}`);
    expect((r as unknown as { fedlora: { model_version: string; citations: { source: string }[] } }).fedlora).toMatchObject({ model_version: 'job-9/v4', citations: [{ source: 'anticoagulation-zh.md' }, expect.anything()] });
    const sent = vllm.requests.filter((x) => x.path === '/v1/completions').at(-1)!.body;
    expect(sent).toMatchObject({ model: 'fedlora-job-9-v4', max_tokens: 64, stream: true });
    // The prompt is the model's chat template with the site's instructions and the retrieved passage.
    const text = loadTokenizer(site.modelDir).decode(sent.prompt as number[]);
    expect(text).toContain('<｜User｜>房颤患者华法林的目标INR是多少？<｜Assistant｜>');
    expect(text).toContain('[1] (anticoagulation-zh.md — 华法林剂量与INR)');
    expect(vllm.problems).toEqual([]);
  });

  it('streams reasoning_content and content deltas; the answer is audited', async () => {
    const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const s = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: 'INR target?' }], stream: true });
    let reasoning = '', content = '', id = '';
    for await (const c of s) {
      id = c.id;
      const d = c.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
      reasoning += d?.reasoning_content ?? '';
      content += d?.content ?? '';
    }
    expect(reasoning).toBe('Warfarin in AF: check the INR.');
    expect(content).toBe(`The target INR is 2.0 to 3.0 [1].\n\n---\n${DEFAULT_DISCLAIMER.en}`);
    const db = openSiteDb(site.siteDir);
    const audited = db.prepare("SELECT details FROM site_audit WHERE action = 'assistant_query' AND subject = ?").get(id) as { details: string };
    db.close();
    expect(JSON.parse(audited.details)).toMatchObject({ model_version: 'job-9/v4', finish: 'stop' });
  });

  it('a wrong key never reaches vLLM; a version the gate serves next is loaded and the old one unloaded', async () => {
    const before = vllm.requests.length;
    const bad = new OpenAI({ apiKey: 'nope', baseURL: `${srv.url}/v1`, maxRetries: 0 });
    expect(await bad.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: 'x' }] }).catch((e) => e.status)).toBe(401);
    expect(vllm.requests.length).toBe(before);

    const db = openSiteDb(site.siteDir);
    setServing(db, { jobId: 'job-9', version: 5, sha256: 'b'.repeat(64), dir: peft(5) }, 'approve', 'test');
    db.close();
    const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: 'again' }] });
    expect(r.system_fingerprint).toBe('fedlora-job-9/v5');
    expect([...vllm.loaded.keys()]).toEqual(['fedlora-job-9-v5']);
    const lora = vllm.requests.filter((x) => x.path.includes('lora_adapter')).map((x) => `${x.path.slice(4)} ${x.body.lora_name}`);
    expect(lora, JSON.stringify(lora)).toEqual(['load_lora_adapter fedlora-job-9-v4', 'load_lora_adapter fedlora-job-9-v5', 'unload_lora_adapter fedlora-job-9-v4']);
    expect(vllm.requests.filter((x) => x.path === '/v1/completions').at(-1)!.body.model).toBe('fedlora-job-9-v5');
    expect(vllm.problems).toEqual([]);
  });
});
