// PKI commands: `fedlora ca init`, `fedlora site invite|enroll|revoke`.
// Coordinator data dir: --data-dir, else $FEDLORA_DATA_DIR, else ./.fedlora/coordinator.
// Site dir: --site-dir, else $FEDLORA_SITE_DIR, else ./.fedlora/site.
import { mkdirSync } from 'node:fs';
import type Database from 'better-sqlite3-multiple-ciphers';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { parseDuration } from '../../certs/tokens.ts';
import type { KeyAlgorithm } from '../../certs/x509.ts';
import { issueJoinToken, loadCoordinatorCa, revokeSite, setupCoordinatorPki, sqlitePathOf } from '../../coordinator/enrollment.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { siteDirOption } from '../engine-options.ts';

export const DEFAULT_ENROLL_ENDPOINT = 'localhost:7444';

export function defaultDataDir(): string {
  return process.env.FEDLORA_DATA_DIR ?? '.fedlora/coordinator';
}

function openDb(dataDir: string): Database.Database {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return openCoordinatorDb(sqlitePathOf(dataDir));
}

export function register(g: CliGroups): void {
  g.ca
    .command('init')
    .description("create the consortium CA, the coordinator's TLS server certificate and manifest signing key")
    .option('--data-dir <dir>', 'coordinator data dir', defaultDataDir())
    .option('--algorithm <alg>', 'ecdsa-p256 | rsa-3072', 'ecdsa-p256')
    .option('--validity-days <n>', 'CA validity in days', '3650')
    .option('--cn <name>', 'CA common name', 'fedlora consortium CA')
    .option('--san <list>', 'extra DNS names / IPs of the coordinator, comma-separated (localhost,127.0.0.1 always)', '')
    .option('--force', 'replace an existing CA (every site must enroll again)', false)
    .action(async (o: { dataDir: string; algorithm: string; validityDays: string; cn: string; san: string; force: boolean }) => {
      if (o.algorithm !== 'ecdsa-p256' && o.algorithm !== 'rsa-3072') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--algorithm must be ecdsa-p256 or rsa-3072, got ${o.algorithm}`);
      const days = Number(o.validityDays);
      if (!Number.isInteger(days) || days <= 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--validity-days must be a positive integer, got ${o.validityDays}`);
      const ca = await setupCoordinatorPki({
        dataDir: o.dataDir, algorithm: o.algorithm as KeyAlgorithm, validityDays: days, commonName: o.cn,
        sans: o.san.split(',').map((s) => s.trim()).filter(Boolean), force: o.force,
      });
      process.stdout.write(`CA created in ${ca.dir}\nCA sha256: ${ca.sha256}\n`);
    });

  g.site
    .command('invite')
    .description('issue a one-time, expiring join token for a site (run on the coordinator)')
    .requiredOption('--site <name>', 'site id (lowercase letters, digits, - and _)')
    .option('--ttl <duration>', 'token lifetime, e.g. 30m, 24h, 7d', '24h')
    .option('--data-dir <dir>', 'coordinator data dir', defaultDataDir())
    .option('--enroll-endpoint <host:port>', "the coordinator's enrollment listener as the site will dial it", process.env.FEDLORA_ENROLL_ENDPOINT ?? DEFAULT_ENROLL_ENDPOINT)
    .action(async (o: { site: string; ttl: string; dataDir: string; enrollEndpoint: string }) => {
      const ca = await loadCoordinatorCa(o.dataDir);
      const db = openDb(o.dataDir);
      try {
        const { token, expiresAtMs } = issueJoinToken(db, { siteId: o.site, ttlMs: parseDuration(o.ttl), enrollEndpoint: o.enrollEndpoint, caSha256: ca.sha256 });
        process.stderr.write(`join token for site ${o.site} (one use, expires ${new Date(expiresAtMs).toISOString()}):\n`);
        process.stdout.write(token + '\n');
      } finally {
        db.close();
      }
    });

  g.site
    .command('enroll')
    .description('enroll this site with a join token (creates the site key locally; only a CSR is sent)')
    .requiredOption('--token <token>', 'join token from `fedlora site invite`')
    .option('--coordinator <host:port>', 'enrollment endpoint (default: the one inside the token)')
    .addOption(siteDirOption())
    .option('--force', 'replace an existing enrollment', false)
    .action(async (o: { token: string; coordinator?: string; siteDir: string; force: boolean }) => {
      const rec = await enrollSite({ token: o.token, coordinator: o.coordinator, siteDir: o.siteDir, force: o.force });
      process.stdout.write(`enrolled as ${rec.siteId}; federation endpoint ${rec.federationEndpoint}; certificate valid until ${new Date(rec.notAfterUnixMs).toISOString()}\n`);
    });

  g.site
    .command('revoke')
    .description("revoke every certificate of a site (refused on its next call) and mark it revoked")
    .argument('<name>', 'site id')
    .option('--data-dir <dir>', 'coordinator data dir', defaultDataDir())
    .option('--reason <text>', 'reason recorded in the CRL', 'revoked by operator')
    .action((name: string, o: { dataDir: string; reason: string }) => {
      const db = openDb(o.dataDir);
      try {
        const { serials } = revokeSite(db, name, o.reason);
        process.stdout.write(`site ${name} revoked; ${serials.length} certificate(s) on the CRL${serials.length ? ': ' + serials.join(', ') : ''}\n`);
      } finally {
        db.close();
      }
    });
}
