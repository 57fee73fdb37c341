// The HTTP/2 connection-level receive window of a grpc-js server. The stream window is a
// SETTINGS value (shared/tls.ts sets it), but the connection window starts at 64 KiB and only a
// WINDOW_UPDATE on the session raises it; grpc-js has no server option for that, so a 160 MB
// upload waited for ~2,500 window round trips (100 MB/s on loopback, 400+ MB/s once raised).
// Node's documented way is `session.setLocalWindowSize` from the server's 'session' event; the
// http2 servers grpc-js creates are reached through its `http2Servers` map after bindAsync.
import type * as grpc from '@grpc/grpc-js';
import type { Http2Session } from 'node:http2';
import type { EventEmitter } from 'node:events';

/** The connection window a federation session opens with: a few 4 MiB chunks in flight. */
export const CONNECTION_WINDOW_BYTES = 32 * 1024 * 1024;

/** Raise the connection window of every session of `server`'s bound listeners. Call after
 *  bindAsync. Returns how many listeners it reached; throws if grpc-js no longer keeps its
 *  http2 servers where this looks (a grpc-js upgrade must not silently slow every upload). */
export function widenConnectionWindow(server: grpc.Server, bytes = CONNECTION_WINDOW_BYTES): number {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) throw new Error('grpc-js internals changed: grpc.Server has no http2Servers map; shared/http2-window.ts cannot raise the HTTP/2 connection window');
  let n = 0;
  for (const h of servers.keys() as Iterable<EventEmitter>) {
    if ((h as { __fedloraWindow?: boolean }).__fedloraWindow) continue;
    (h as { __fedloraWindow?: boolean }).__fedloraWindow = true;
    h.on('session', (s: Http2Session) => {
      try {
        s.setLocalWindowSize(bytes);
      } catch {
        // a session already closing: nothing to widen
      }
    });
    n++;
  }
  return n;
}
