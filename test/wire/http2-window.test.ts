// The federation listener raises the HTTP/2 connection window (shared/http2-window.ts): a
// client sees the server's WINDOW_UPDATE on stream 0 before the answer to its first PING (frames
// of one connection arrive in order), so the check needs no timing. Without the raise the
// window stays at HTTP/2's 65,535 bytes and every large upload crawls.
import { connect, type ClientHttp2Session } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { CONNECTION_WINDOW_BYTES, widenConnectionWindow } from '../../shared/http2-window.ts';
import { bindAsync } from './helpers.ts';

const DEFAULT_WINDOW = 65_535;

async function serverWindowSeenByClient(port: number): Promise<number> {
  const session: ClientHttp2Session = connect(`http://127.0.0.1:${port}`);
  try {
    await new Promise<void>((resolve, reject) => {
      session.once('error', reject);
      session.once('connect', () => session.ping((e) => (e ? reject(e) : resolve())));
    });
    return session.state.remoteWindowSize!;
  } finally {
    session.destroy();
  }
}

describe('HTTP/2 connection window of a grpc-js server', () => {
  const servers: grpc.Server[] = [];
  afterEach(() => servers.splice(0).forEach((s) => s.forceShutdown()));

  async function server(widen: boolean): Promise<number> {
    const s = new grpc.Server();
    servers.push(s);
    const port = await bindAsync(s, grpc.ServerCredentials.createInsecure());
    if (widen) expect(widenConnectionWindow(s)).toBe(1);
    return port;
  }

  it('is raised for every new session once widened (and only then)', async () => {
    expect(await serverWindowSeenByClient(await server(false))).toBe(DEFAULT_WINDOW);
    const port = await server(true);
    expect(await serverWindowSeenByClient(port)).toBe(CONNECTION_WINDOW_BYTES);
    expect(await serverWindowSeenByClient(port)).toBe(CONNECTION_WINDOW_BYTES); // a second connection too
  });

  it('widening twice adds no second listener', async () => {
    const s = new grpc.Server();
    servers.push(s);
    await bindAsync(s, grpc.ServerCredentials.createInsecure());
    expect(widenConnectionWindow(s)).toBe(1);
    expect(widenConnectionWindow(s)).toBe(0);
  });

  it('fails loudly when grpc-js no longer keeps its http2 servers where we look', () => {
    expect(() => widenConnectionWindow({} as grpc.Server)).toThrow(/grpc-js internals changed/);
  });
});
