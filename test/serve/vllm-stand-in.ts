// A small HTTP stand-in for a vLLM OpenAI-compatible server (not vLLM itself): it checks the
// requests the assistant sends — the LoRA API (/v1/load_lora_adapter, /v1/unload_lora_adapter
// with lora_name and an existing PEFT lora_path), /v1/completions with token ids, a loaded
// model name, streaming with usage — and answers with a scripted DeepSeek-R1-style text.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export interface StandIn {
  url: string;
  requests: { path: string; body: Record<string, unknown> }[];
  loaded: Map<string, string>;
  /** Problems found in requests (a test asserts none). */
  problems: string[];
  close(): Promise<void>;
}

const BASE = 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B';

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((res) => {
    let s = '';
    req.on('data', (d) => (s += d));
    req.on('end', () => res(s));
  });
}

export async function startVllmStandIn(script: string[]): Promise<StandIn> {
  const requests: StandIn['requests'] = [];
  const loaded = new Map<string, string>();
  const problems: string[] = [];
  const server: Server = createServer(async (req, res) => {
    const raw = req.method === 'POST' ? await readBody(req) : '';
    let body: Record<string, unknown> = {};
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch {
      problems.push(`${req.url}: body is not JSON`);
    }
    requests.push({ path: req.url ?? '', body });
    const json = (status: number, o: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o));
    };
    if (req.method === 'GET' && req.url === '/v1/models') {
      return json(200, { object: 'list', data: [{ id: BASE, object: 'model', root: BASE, parent: null }, ...[...loaded].map(([n, p]) => ({ id: n, object: 'model', root: p, parent: BASE }))] });
    }
    if (req.method === 'POST' && req.url === '/v1/load_lora_adapter') {
      const name = body.lora_name, path = body.lora_path;
      if (typeof name !== 'string' || typeof path !== 'string') {
        problems.push(`load_lora_adapter without lora_name/lora_path: ${raw}`);
        return json(400, { object: 'error', message: 'lora_name and lora_path are required', code: 400 });
      }
      if (!existsSync(join(path, 'adapter_config.json')) || !existsSync(join(path, 'adapter_model.safetensors'))) {
        problems.push(`load_lora_adapter: ${path} is not a PEFT folder`);
        return json(400, { object: 'error', message: `no adapter found at ${path}`, code: 400 });
      }
      if (loaded.has(name)) return json(400, { object: 'error', message: `The lora adapter '${name}' has already been loaded.`, code: 400 });
      loaded.set(name, path);
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end(`Success: LoRA adapter '${name}' added successfully.`);
    }
    if (req.method === 'POST' && req.url === '/v1/unload_lora_adapter') {
      if (typeof body.lora_name !== 'string' || !loaded.delete(body.lora_name)) return json(404, { object: 'error', message: `The lora adapter '${body.lora_name}' cannot be found.`, code: 404 });
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end(`Success: LoRA adapter '${body.lora_name}' removed successfully.`);
    }
    if (req.method === 'POST' && req.url === '/v1/completions') {
      if (body.model !== BASE && !loaded.has(String(body.model))) {
        problems.push(`completions for model ${body.model}, which is not loaded`);
        return json(404, { object: 'error', message: `The model \`${body.model}\` does not exist.`, code: 404 });
      }
      if (!Array.isArray(body.prompt) || !(body.prompt as unknown[]).every((t) => Number.isInteger(t))) problems.push('completions: prompt is not a list of token ids');
      if (body.stream !== true) problems.push('completions: not streamed');
      if (!Number.isInteger(body.max_tokens)) problems.push('completions: max_tokens missing');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const n = Math.min(script.length, Number(body.max_tokens));
      for (let i = 0; i < n; i++) {
        res.write(`data: ${JSON.stringify({ id: 'cmpl-x', object: 'text_completion', model: body.model, choices: [{ index: 0, text: script[i], finish_reason: null }] })}\n\n`);
        await new Promise((r) => setTimeout(r, 2));
      }
      res.write(`data: ${JSON.stringify({ id: 'cmpl-x', object: 'text_completion', model: body.model, choices: [{ index: 0, text: '', finish_reason: n < script.length ? 'length' : 'stop' }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ id: 'cmpl-x', object: 'text_completion', model: body.model, choices: [], usage: { prompt_tokens: (body.prompt as unknown[]).length, completion_tokens: n, total_tokens: n } })}\n\n`);
      return res.end('data: [DONE]\n\n');
    }
    problems.push(`unexpected ${req.method} ${req.url}`);
    return json(404, { object: 'error', message: 'not found', code: 404 });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, requests, loaded, problems, close: () => new Promise((r) => server.close(() => r())) };
}
