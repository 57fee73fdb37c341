// Checks both sides of `fedlora doctor` share: certificate files, disk space, execution
// providers, a TLS probe of a listener and the clock against an HTTP Date header.
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { isIP } from 'node:net';
import { TLS_MIN_VERSION } from '../../shared/tls.ts';
import { ORT_CUDA_INSTALL_COMMAND } from '../../shared/onnxruntime-install.ts';
import type { CheckResult } from './types.ts';

const DAY = 86_400_000;
const GiB = 1024 ** 3;

const fmtBytes = (n: number): string => (n >= GiB ? `${(n / GiB).toFixed(1)} GiB` : `${(n / 1024 ** 2).toFixed(0)} MiB`);

/** Split "host:port" / "[v6]:port". */
export function splitEndpoint(endpoint: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(endpoint.trim());
  return m ? { host: m[1], port: Number(m[2]) } : null;
}

/**
 * A certificate file: readable, signed by `caPem` (when given), matching `keyFile` (when given),
 * not expired, and not expiring within `warnDays`.
 */
export function checkCertificateFile(name: string, certFile: string, o: { keyFile?: string; caPem?: string; now: number; warnDays: number; renew: string }): CheckResult {
  if (!existsSync(certFile)) return { name, status: 'FAIL', detail: `${certFile} missing`, fix: o.renew };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(certFile));
  } catch (e) {
    return { name, status: 'FAIL', detail: `${certFile} is not a PEM certificate (${(e as Error).message})`, fix: o.renew };
  }
  if (o.caPem !== undefined) {
    const ca = new X509Certificate(o.caPem);
    if (!cert.verify(ca.publicKey)) return { name, status: 'FAIL', detail: `${certFile} is not signed by the pinned CA (${ca.subject.replace(/\n/g, ', ')})`, fix: o.renew };
  }
  if (o.keyFile !== undefined) {
    if (!existsSync(o.keyFile)) return { name, status: 'FAIL', detail: `${o.keyFile} (the key of ${certFile}) missing`, fix: o.renew };
    try {
      if (!cert.checkPrivateKey(createPrivateKey(readFileSync(o.keyFile)))) {
        return { name, status: 'FAIL', detail: `${certFile} does not belong to the private key ${o.keyFile}`, fix: o.renew };
      }
    } catch (e) {
      return { name, status: 'FAIL', detail: `${o.keyFile}: unreadable private key (${(e as Error).message})`, fix: o.renew };
    }
  }
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  const until = new Date(notAfter).toISOString();
  if (notAfter <= o.now) return { name, status: 'FAIL', detail: `${certFile} expired at ${until}`, fix: o.renew };
  if (notBefore > o.now) return { name, status: 'FAIL', detail: `${certFile} is not valid before ${new Date(notBefore).toISOString()} (clock behind?)`, fix: 'set the system clock (NTP) and retry' };
  const days = (notAfter - o.now) / DAY;
  if (days < o.warnDays) return { name, status: 'WARN', detail: `${certFile} expires in ${days.toFixed(1)} days (${until})`, fix: o.renew };
  return { name, status: 'OK', detail: `${certFile} valid until ${until} (${Math.floor(days)} days)` };
}

/** Free space of the file system holding `dir` (fs.statfs: blocks available to non-root). */
export function checkDisk(dir: string, o: { minFreeBytes: number; warnFreeBytes: number; what: string }): CheckResult {
  let free: number, total: number;
  try {
    const s = statfsSync(dir);
    free = s.bavail * s.bsize;
    total = s.blocks * s.bsize;
  } catch (e) {
    return { name: 'disk', status: 'FAIL', detail: `cannot stat the file system of ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  const detail = `${fmtBytes(free)} free of ${fmtBytes(total)} on the file system of ${dir}`;
  const fix = `free space or move ${dir} to a larger volume (${o.what})`;
  if (free < o.minFreeBytes) return { name: 'disk', status: 'FAIL', detail: `${detail}; needs at least ${fmtBytes(o.minFreeBytes)}`, fix };
  if (free < o.warnFreeBytes) return { name: 'disk', status: 'WARN', detail: `${detail}; below ${fmtBytes(o.warnFreeBytes)}`, fix };
  return { name: 'disk', status: 'OK', detail };
}

/** onnxruntime-node's execution providers, and whether the configured device is among them. */
export async function checkExecutionProviders(device: string | undefined): Promise<CheckResult> {
  let names: string[];
  try {
    const ort = await import('onnxruntime-node');
    names = ort.listSupportedBackends().map((b) => b.name);
  } catch (e) {
    return { name: 'execution-providers', status: 'FAIL', detail: `onnxruntime-node does not load (${(e as Error).message})`, fix: 'reinstall with `npm ci --omit=dev` (the native binding is missing or built for another platform)' };
  }
  const detail = `onnxruntime-node providers: ${names.join(', ')}`;
  if (device && !names.includes(device)) {
    return {
      name: 'execution-providers', status: 'FAIL', detail: `${detail}; site.yaml asks for model.device: ${device}`,
      fix: device === 'cuda' ? `install the CUDA provider: \`${ORT_CUDA_INSTALL_COMMAND}\` in the fedlora folder (CUDA 12 + cuDNN 9), or set model.device: cpu` : `set model.device to one of ${names.join(', ')}`,
    };
  }
  return { name: 'execution-providers', status: 'OK', detail: device ? `${detail}; model.device ${device} available` : detail };
}

/**
 * TCP connect + TLS 1.3 handshake to `endpoint`, verifying the server against `caPem`; with a
 * client key/cert this is the site's mutual-TLS identity. In TLS 1.3 the server checks the
 * client certificate after the client considers the handshake done, so we wait for the
 * server's first HTTP/2 bytes (its SETTINGS frame): a server that refused the certificate
 * closes the connection instead.
 */
export function probeTls(endpoint: string, o: { name: string; caPem: string | Buffer; keyPem?: string | Buffer; certPem?: string | Buffer; timeoutMs: number; serverName?: string }): Promise<CheckResult> {
  const ep = splitEndpoint(endpoint);
  if (!ep) return Promise.resolve({ name: o.name, status: 'FAIL', detail: `endpoint ${JSON.stringify(endpoint)} is not host:port` });
  const { host, port } = ep;
  const started = Date.now();
  return new Promise((resolve) => {
    let handshaken = false;
    let settled = false;
    const done = (r: CheckResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const sn = o.serverName ?? (isIP(host) ? undefined : host);
    const sock = tlsConnect({
      host, port, ca: o.caPem, key: o.keyPem, cert: o.certPem, minVersion: TLS_MIN_VERSION, ALPNProtocols: ['h2'],
      ...(sn ? { servername: sn } : {}),
    });
    const timer = setTimeout(() => {
      if (handshaken) done({ name: o.name, status: 'OK', detail: `${endpoint}: TLS 1.3 handshake done in ${Date.now() - started} ms (server sent nothing yet)` });
      else done({ name: o.name, status: 'FAIL', detail: `${endpoint}: no TLS handshake within ${o.timeoutMs} ms`, fix: `check that the coordinator is running and that the firewall lets this host reach ${host} port ${port} (TCP)` });
    }, o.timeoutMs);
    sock.once('secureConnect', () => {
      handshaken = true;
    });
    sock.once('data', () => done({ name: o.name, status: 'OK', detail: `${endpoint}: TCP + TLS 1.3 handshake${o.certPem ? ' with the site certificate' : ''} in ${Date.now() - started} ms; the server answered` }));
    const refused = () => done({
      name: o.name, status: 'FAIL', detail: `${endpoint}: the server closed the connection after the TLS handshake: it did not accept this certificate`,
      fix: 'the certificate is expired, from another CA, or the coordinator was re-initialised: ask the coordinator operator for a new join token and run `fedlora site enroll --force`',
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      if (handshaken) return refused();
      const code = e.code ?? '';
      const fix = code === 'ECONNREFUSED' ? `nothing listens on ${host}:${port}: start the coordinator, or fix the endpoint`
        : code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? `the name ${host} does not resolve here: fix DNS or /etc/hosts`
          : /certificate|self.signed|altname|CERT/i.test(`${code} ${e.message}`) ? 'the server certificate does not match the pinned CA or this host name: re-initialise the coordinator with --san NAME, or dial a name in its certificate'
            : `check routing/firewall to ${host}:${port}`;
      done({ name: o.name, status: 'FAIL', detail: `${endpoint}: ${code ? code + ' ' : ''}${e.message}`, fix });
    });
    sock.once('close', () => {
      if (handshaken) refused();
    });
  });
}

/** Compare the local clock with the HTTP Date header of `url` (1 s resolution). */
export async function checkClockSkew(url: string, o: { timeoutMs: number; warnSeconds?: number; failSeconds?: number }): Promise<CheckResult> {
  const t0 = Date.now();
  let dateHeader: string | null;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(o.timeoutMs) });
    dateHeader = res.headers.get('date');
    await res.arrayBuffer();
  } catch (e) {
    return { name: 'clock', status: 'FAIL', detail: `cannot reach ${url} (${(e as Error).message})`, fix: 'check the coordinator HTTP URL and that its HTTP port is reachable from here' };
  }
  const t1 = Date.now();
  if (!dateHeader || Number.isNaN(Date.parse(dateHeader))) return { name: 'clock', status: 'SKIP', detail: `${url} sent no Date header` };
  // The header is truncated to the second: the server's clock was in [d, d+1s) at some point in [t0, t1].
  const server = Date.parse(dateHeader) + 500;
  const skew = (t0 + t1) / 2 - server;
  const slack = (t1 - t0) / 2 + 500;
  const abs = Math.max(0, Math.abs(skew) - slack) / 1000;
  const detail = `local clock ${skew >= 0 ? 'ahead of' : 'behind'} the coordinator by ~${(Math.abs(skew) / 1000).toFixed(1)} s (±${(slack / 1000).toFixed(1)} s)`;
  const fix = 'synchronise the clock with NTP (timedatectl set-ntp true); certificates and round deadlines depend on it';
  if (abs > (o.failSeconds ?? 300)) return { name: 'clock', status: 'FAIL', detail, fix };
  if (abs > (o.warnSeconds ?? 10)) return { name: 'clock', status: 'WARN', detail, fix };
  return { name: 'clock', status: 'OK', detail };
}
