// The demo's ending: hospital-1's assistant for its clinicians, set up as a site admin would
// (`fedlora site kb add` the synthetic guidelines, `fedlora site user add`, `fedlora site serve`),
// then one question asked through its OpenAI-compatible API and the answer printed with its
// citations, disclaimer and the version that answered (the gate decides which: with the tiny
// random demo model the candidates fail the safety floor, so the base model answers).
import { readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../../shared/errors.ts';

export const DEMO_GUIDELINES = join(dirname(fileURLToPath(import.meta.url)), 'guidelines');
export const DEMO_QUESTION = 'Which drug should a 62-year-old with newly diagnosed hypertension start with?';

/** The `serve:` section of a demo site: the assistant on `port`. The agents do not run the safety
 *  suite on every version here (a minute or more each on 2 cores, holding up the rounds): the
 *  demo runs it once, on the last version, at the end (`fedlora eval safety --site-dir`). */
export function demoServeConfig(port: number): Record<string, unknown> {
  return {
    port,
    // One token per byte with the tiny model's tokenizer: short passages, room for the prompt.
    max_prompt_tokens: 4096,
    max_tokens_default: 48,
    retrieval: { enabled: true, top_k: 2, max_passage_chars: 200 },
    gate: { safety_on_receive: false, safety_max_new_tokens: 16 },
  };
}

export interface DemoAssistant {
  url: string;
  question: string;
  answer: string;
  modelVersion: string;
  citations: { n: number; source: string; heading: string | null }[];
}

/** Printable text of a tiny random model's output (it writes arbitrary bytes). */
const printable = (s: string) => s.replace(/[\u0000-\u0008\u000b-\u001f\u007f\ufffd]/g, '·');

export async function showDemoAssistant(o: {
  siteDir: string;
  modelDir: string;
  port: number;
  cli: (args: string[]) => Promise<string>;
  start: (args: string[]) => void;
  waitFor: <T>(what: string, ms: number, fn: () => Promise<T | null>) => Promise<T>;
  log: (line: string) => void;
}): Promise<DemoAssistant> {
  const docs = readdirSync(DEMO_GUIDELINES).map((f) => join(DEMO_GUIDELINES, f));
  await o.cli(['site', 'kb', 'add', '--site-dir', o.siteDir, ...docs]);
  const key = (await o.cli(['site', 'user', 'add', '--site-dir', o.siteDir, '--name', 'demo-doctor', '--role', 'clinician'])).trim().split('\n').at(-1)!;
  writeFileSync(join(o.siteDir, 'demo-doctor.key'), key + '\n', { mode: 0o600 });
  // The safety suite on the last global version this site received; the gate decides with it.
  const gate = JSON.parse(await o.cli(['site', 'adapter', 'candidates', '--site-dir', o.siteDir, '--json'])) as { candidates: { label: string; version: number; dir: string }[] };
  const last = gate.candidates.filter((c) => c.version > 0).sort((a, b) => a.version - b.version).at(-1);
  const safety = last ? await o.cli(['eval', 'safety', '--model', o.modelDir, '--adapter', last.dir, '--site-dir', o.siteDir, '--max-new-tokens', '16']) : '';
  o.start(['site', 'serve', '--site-dir', o.siteDir, '--port', String(o.port)]);
  const url = `http://127.0.0.1:${o.port}`;
  await o.waitFor("hospital-1's assistant", 120_000, async () => ((await fetch(`${url}/health`)).ok ? true : null));
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'fedlora-assistant', messages: [{ role: 'user', content: DEMO_QUESTION }], temperature: 0 }),
  });
  if (!r.ok) throw fail('FEDLORA_ERR_INTERNAL', `demo: the assistant answered ${r.status}: ${await r.text()}`);
  const body = (await r.json()) as { choices: { message: { content: string } }[]; fedlora: DemoAssistant & { model_version: string } };
  const a: DemoAssistant = { url, question: DEMO_QUESTION, answer: body.choices[0].message.content, modelVersion: body.fedlora.model_version, citations: body.fedlora.citations };

  o.log(`[7/7] hospital-1's assistant: ${url}/   (user demo-doctor, API key in ${join(o.siteDir, 'demo-doctor.key')})`);
  for (const line of safety.split('\n').filter((l) => /^(safety suite on|total|release gate)/.test(l))) o.log(`      ${line}`);
  o.log(`      serving: ${a.modelVersion === 'base' ? 'the base model (no candidate passed the gate)' : a.modelVersion}`);
  o.log(`      Q: ${a.question}`);
  o.log(`      A (${a.modelVersion}): ${printable(a.answer).replace(/\n/g, '\n         ')}`);
  for (const c of a.citations) o.log(`      [${c.n}] ${c.source}${c.heading ? ` — ${c.heading}` : ''}`);
  return a;
}
