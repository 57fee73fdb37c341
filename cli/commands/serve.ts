// The site's assistant: `fedlora site serve` and its users, `fedlora site user add|revoke|list`.
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { siteDirOption } from '../engine-options.ts';

export async function withSiteDb<T>(siteDir: string, fn: (db: import('better-sqlite3-multiple-ciphers').Database) => T): Promise<T> {
  const { existsSync } = await import('node:fs');
  const { join } = await import('node:path');
  if (!existsSync(siteDir)) throw fail('FEDLORA_ERR_NOT_FOUND', `--site-dir ${siteDir} does not exist (run \`fedlora site init\` first)`);
  const { SITE_CONFIG_NAMES } = await import('../../site-agent/config.ts');
  if (!SITE_CONFIG_NAMES.some((n) => existsSync(join(siteDir, n)))) {
    throw fail('FEDLORA_ERR_CONFIG', `${siteDir} has no site.yaml: is it a site dir? (\`fedlora site init\` makes one)`);
  }
  const { openSiteDb } = await import('../../site-agent/site-db.ts');
  const db = openSiteDb(siteDir);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

export function register(g: CliGroups): void {
  g.site
    .command('serve')
    .description("serve the clinicians' assistant: OpenAI-compatible API and chat page, on the approved adapter version")
    .addOption(siteDirOption('site dir (with site.yaml)'))
    .option('--host <host>', 'listen address (default serve.host, 127.0.0.1)')
    .option('--port <n>', 'listen port (default serve.port, 8088; 0 = any free port)')
    .option('--backend <kind>', 'engine (built-in, CPU/GPU through ONNX Runtime) | vllm')
    .option('--vllm-url <url>', 'the vLLM OpenAI-compatible server, e.g. http://127.0.0.1:8000 (with --backend vllm)')
    .action(async (o: { siteDir: string; host?: string; port?: string; backend?: string; vllmUrl?: string }) => {
      const port = o.port === undefined ? undefined : Number(o.port);
      if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--port ${JSON.stringify(o.port)}: expected 0-65535`);
      if (o.backend !== undefined && o.backend !== 'engine' && o.backend !== 'vllm') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--backend ${JSON.stringify(o.backend)}: expected engine or vllm`);
      const { startServe } = await import('../../site-agent/serve/run.ts');
      const s = await startServe(o.siteDir, { host: o.host, port, backend: o.backend as 'engine' | 'vllm' | undefined, vllmUrl: o.vllmUrl });
      const v = s.serving();
      process.stdout.write(`assistant of ${s.siteId} at ${s.url}/  (API ${s.url}/v1, model "${s.assistant.config.model_name}", ` +
        `${v.jobId ? `adapter ${v.label}` : 'base model: no adapter approved yet'})\n`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          process.stdout.write('draining: answering accepted requests, taking no new ones\n');
          s.close().then(done, done);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      process.stdout.write('assistant stopped\n');
      process.exit(0);
    });

  const kb = g.site.command('kb').description("the site's knowledge base: guideline documents the assistant retrieves and cites");
  kb
    .command('add')
    .description('add documents (txt, md, html): split into passages and indexed for retrieval (Chinese and English)')
    .argument('<files...>', 'document files')
    .addOption(siteDirOption())
    .option('--replace', 'replace a stored document of the same name whose content changed', false)
    .action(async (files: string[], o: { siteDir: string; replace: boolean }) => {
      const { addDocuments } = await import('../../site-agent/serve/kb/store.ts');
      const r = await withSiteDb(o.siteDir, (db) => addDocuments(db, files, { replace: o.replace }));
      for (const d of r.added) process.stdout.write(`added ${d.name}: ${d.passages} passage(s)${d.title ? ` — ${d.title}` : ''}\n`);
      for (const n of r.unchanged) process.stdout.write(`unchanged ${n} (same content already stored)\n`);
    });
  kb
    .command('list')
    .description('documents in the knowledge base')
    .addOption(siteDirOption())
    .option('--json', 'print JSON', false)
    .action(async (o: { siteDir: string; json: boolean }) => {
      const { listDocuments } = await import('../../site-agent/serve/kb/store.ts');
      const docs = await withSiteDb(o.siteDir, (db) => listDocuments(db));
      if (o.json) process.stdout.write(JSON.stringify(docs, null, 2) + '\n');
      else for (const d of docs) process.stdout.write(`${d.name}\t${d.passages} passages\t${d.format}\tsha256 ${d.sha256.slice(0, 12)}…\t${d.title ?? ''}\n`);
    });
  kb
    .command('remove')
    .description('remove a document and its passages')
    .argument('<name>', 'document name as `kb list` shows it')
    .addOption(siteDirOption())
    .action(async (name: string, o: { siteDir: string }) => {
      const { removeDocument } = await import('../../site-agent/serve/kb/store.ts');
      const r = await withSiteDb(o.siteDir, (db) => removeDocument(db, name));
      process.stdout.write(`removed ${name} (${r.passages} passages)\n`);
    });

  const user = g.site.command('user').description("users of the clinicians' assistant and their API keys");
  user
    .command('add')
    .description('add a user and print their API key (shown once; only its hash is kept)')
    .requiredOption('--name <name>', 'user name (letters, digits, . _ @ -)')
    .requiredOption('--role <role>', 'clinician | admin')
    .addOption(siteDirOption())
    .action(async (o: { name: string; role: string; siteDir: string }) => {
      const { addUser } = await import('../../site-agent/serve/users.ts');
      const { key } = await withSiteDb(o.siteDir, (db) => addUser(db, o.name, o.role));
      process.stdout.write(`user ${o.name} (${o.role}) added; API key (shown once, keep it safe):\n${key}\n`);
    });
  user
    .command('revoke')
    .description("revoke a user: every key of theirs stops working at the next request")
    .argument('<name>', 'user name')
    .addOption(siteDirOption())
    .action(async (name: string, o: { siteDir: string }) => {
      const { revokeUser } = await import('../../site-agent/serve/users.ts');
      const r = await withSiteDb(o.siteDir, (db) => revokeUser(db, name));
      process.stdout.write(`user ${name} revoked (${r.keys} key(s))\n`);
    });
  user
    .command('list')
    .description('users, roles, active keys')
    .addOption(siteDirOption())
    .option('--json', 'print JSON', false)
    .action(async (o: { siteDir: string; json: boolean }) => {
      const { listUsers } = await import('../../site-agent/serve/users.ts');
      const users = await withSiteDb(o.siteDir, (db) => listUsers(db));
      if (o.json) process.stdout.write(JSON.stringify(users, null, 2) + '\n');
      else for (const u of users) process.stdout.write(`${u.name}\t${u.role}\t${u.revokedAt ? `revoked ${u.revokedAt}` : `active, ${u.keys} key(s)`}\tsince ${u.createdAt}\n`);
    });
}
