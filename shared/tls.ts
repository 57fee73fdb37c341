// TLS credentials for the two coordinator listeners and for the site's channels.
//   Federation: TLS 1.3 only, client certificate REQUIRED and verified against the consortium
//     CA during the handshake (a client without one, with one from another CA, or with an
//     expired one never reaches a handler); with a CRL (coordinator/crl-watch.ts) a revoked one
//     neither. Revocation and site status are checked per call too, by coordinator/auth.ts.
//   Enrollment: TLS 1.3 only, server-authenticated (the site has no certificate yet).
// grpc-js's ServerCredentials.createSsl cannot set minVersion, so we subclass
// ServerCredentials: the constructor's two option objects are spread into
// http2.createSecureServer() (see grpc-js build/src/server.js createHttp2Server).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import type { SecureServerOptions } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { fail } from './errors.ts';

export const TLS_MIN_VERSION = 'TLSv1.3' as const;

/** HTTP/2 stream window for the coordinator: Node's default 64 KiB makes a 4 MiB chunk take
 *  64 window round-trips; uploads are large, so let a few chunks be in flight. */
const HTTP2_SETTINGS = { initialWindowSize: 8 * 1024 * 1024 };

class Tls13ServerCredentials extends grpc.ServerCredentials {
  constructor(ctor: SecureServerOptions, ctx: SecureContextOptions) {
    super(ctor, ctx);
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

type Pem = string | Buffer;

export interface ServerPki {
  caPem: Pem; // the consortium CA certificate
  certPem: Pem; // the coordinator's server certificate
  keyPem: Pem; // its private key
  /** HTTP/2 settings for the listener. NOTE: these replace the ones grpc-js derives from
   *  server options (e.g. grpc.max_concurrent_streams): put maxConcurrentStreams here. */
  http2Settings?: Record<string, number | boolean>;
}

/** The federation listener's credentials; a new CRL applies from the next handshake on. */
class FederationServerCredentials extends Tls13ServerCredentials {
  constructor(ctor: SecureServerOptions, private readonly ctx: SecureContextOptions) {
    super(ctor, ctx);
  }
  /** Refuse the client certificates this CA-signed CRL (PEM) lists, in the TLS handshake. */
  setCrl(crlPem: string): void {
    this.updateSecureContextOptions({ ...this.ctx, crl: [Buffer.from(crlPem)] });
  }
}

/** Mutual TLS 1.3: only clients holding a certificate issued by the consortium CA connect;
 *  with a CRL (setCrl), none the CA revoked. */
export function createFederationServerCredentials(p: ServerPki): FederationServerCredentials {
  return new FederationServerCredentials(
    { requestCert: true, rejectUnauthorized: true, minVersion: TLS_MIN_VERSION, maxVersion: TLS_MIN_VERSION, settings: { ...HTTP2_SETTINGS, ...p.http2Settings } },
    // The chain sent to clients includes the CA so a site can compare it with its pin. The
    // versions again here: a context replaced by setCrl keeps TLS 1.3 only.
    { ca: [Buffer.from(p.caPem)], cert: [Buffer.concat([Buffer.from(p.certPem), Buffer.from('\n'), Buffer.from(p.caPem)])], key: [Buffer.from(p.keyPem)], minVersion: TLS_MIN_VERSION, maxVersion: TLS_MIN_VERSION },
  );
}

/** Server-authenticated TLS 1.3 for the Enrollment listener. The chain includes the CA
 *  certificate: an enrolling site fetches it from the handshake and checks it against the
 *  CA fingerprint in its join token before trusting anything. */
export function createEnrollmentServerCredentials(p: ServerPki): grpc.ServerCredentials {
  return new Tls13ServerCredentials(
    { requestCert: false, minVersion: TLS_MIN_VERSION, maxVersion: TLS_MIN_VERSION, ...(p.http2Settings ? { settings: p.http2Settings } : {}) },
    { cert: [Buffer.concat([Buffer.from(p.certPem), Buffer.from('\n'), Buffer.from(p.caPem)])], key: [Buffer.from(p.keyPem)] },
  );
}

export interface ClientPki {
  ca: Pem;
  key?: Pem;
  cert?: Pem;
}

/** Client credentials, TLS 1.3 only, verifying the server against `ca` (hostname checked
 *  against the server certificate's SANs). With key+cert this is the mutual-TLS identity. */
export function createClientCredentials(p: ClientPki): grpc.ChannelCredentials {
  const ctx = createSecureContext({
    ca: p.ca,
    key: p.key,
    cert: p.cert,
    minVersion: TLS_MIN_VERSION,
  });
  return grpc.ChannelCredentials.createFromSecureContext(ctx);
}

/** Files a site keeps in its site dir after enrollment (see site-agent/enroll.ts). */
export const sitePaths = (siteDir: string) => ({
  key: join(siteDir, 'site.key'),
  cert: join(siteDir, 'site.crt'),
  ca: join(siteDir, 'ca.crt'),
  enrollment: join(siteDir, 'enrollment.json'),
});

/** Mutual-TLS channel credentials from an enrolled site dir (site.key, site.crt, ca.crt). */
export function createSiteChannelCredentials(siteDir: string): grpc.ChannelCredentials {
  const p = sitePaths(siteDir);
  let ca: Buffer, key: Buffer, cert: Buffer;
  try {
    ca = readFileSync(p.ca);
    key = readFileSync(p.key);
    cert = readFileSync(p.cert);
  } catch (e) {
    throw fail('FEDLORA_ERR_CONFIG', `site dir ${siteDir} is not enrolled (${(e as Error).message}): run \`fedlora site enroll\` first`);
  }
  return createClientCredentials({ ca, key, cert });
}
