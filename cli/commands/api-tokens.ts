// `fedlora coordinator token add|revoke|list`: the HTTP API's bearer tokens, in the
// coordinator's database (works on a live coordinator: it reads the table on every request).
import { existsSync } from 'node:fs';
import type { CliGroups } from '../groups.ts';
import { out } from '../api-options.ts';
import { fail } from '../../shared/errors.ts';

async function openStore(dataDir: string) {
  const { configPathOf } = await import('../../coordinator/config.ts');
  if (!existsSync(configPathOf(dataDir))) throw fail('FEDLORA_ERR_CONFIG', `${configPathOf(dataDir)} not found: run \`fedlora coordinator init --data-dir ${dataDir}\``);
  const { CoordinatorStore } = await import('../../coordinator/store/store.ts');
  const { sqlitePathOf } = await import('../../coordinator/enrollment.ts');
  return new CoordinatorStore(sqlitePathOf(dataDir));
}

const when = (ms: number | null) => (ms === null ? 'never' : new Date(ms).toISOString());

export function register(g: CliGroups): void {
  const token = g.coordinator.command('token').description('bearer tokens of the HTTP API (roles admin, researcher, observer)');

  token.command('add')
    .description('make a token; it is printed once (only its sha256 is stored)')
    .requiredOption('--data-dir <dir>', 'coordinator data dir')
    .requiredOption('--name <name>', 'who holds it (shown in the audit log)')
    .requiredOption('--role <role>', 'admin | researcher | observer')
    .option('--expires <duration>', 'lifetime: 12h, 30d, ... or never', '90d')
    .action(async (o) => {
      const { addApiToken, checkRole, parseExpiry } = await import('../../coordinator/http/api-tokens.ts');
      const role = checkRole(o.role);
      const ttlMs = parseExpiry(o.expires);
      const store = await openStore(o.dataDir);
      try {
        const { token: t, row } = addApiToken(store.db, { name: o.name, role, ttlMs });
        out(`token for ${row.name} (role ${row.role}, expires ${when(row.expires_ms)}); shown once, keep it secret:\n${t}`);
      } finally {
        store.close();
      }
    });

  token.command('revoke')
    .description('revoke the active token of a name (refused from its next request on)')
    .requiredOption('--data-dir <dir>', 'coordinator data dir')
    .requiredOption('--name <name>')
    .action(async (o) => {
      const { revokeApiToken } = await import('../../coordinator/http/api-tokens.ts');
      const store = await openStore(o.dataDir);
      try {
        const row = revokeApiToken(store.db, o.name);
        out(`token ${row.name} (role ${row.role}) revoked at ${when(row.revoked_ms)}`);
      } finally {
        store.close();
      }
    });

  token.command('list')
    .description('tokens with role, state and expiry (never the tokens themselves)')
    .requiredOption('--data-dir <dir>', 'coordinator data dir')
    .option('--json', 'as JSON')
    .action(async (o) => {
      const { listApiTokens, tokenState } = await import('../../coordinator/http/api-tokens.ts');
      const { loadCoordinatorConfig } = await import('../../coordinator/config.ts');
      const store = await openStore(o.dataDir);
      try {
        const now = Date.now();
        const rows = [
          ...loadCoordinatorConfig(o.dataDir).admin_tokens.map((t) => ({ name: t.name, role: 'admin', state: 'active', source: 'coordinator.yaml', created: '-', expires: 'never', last_used: '-' })),
          ...listApiTokens(store.db).map((r) => ({ name: r.name, role: r.role, state: tokenState(r, now), source: 'api_tokens', created: when(r.created_ms), expires: when(r.expires_ms), last_used: r.last_used_ms === null ? '-' : when(r.last_used_ms) })),
        ];
        if (o.json) out(rows);
        else out(['name\trole\tstate\tsource\tcreated\texpires\tlast used', ...rows.map((r) => [r.name, r.role, r.state, r.source, r.created, r.expires, r.last_used].join('\t'))].join('\n'));
      } finally {
        store.close();
      }
    });
}
