// Server-sent events on a hijacked fastify reply (the OpenAI streaming format: `data: {json}`
// lines, then `data: [DONE]`). The signal fires when the client goes away before the end.
import type { FastifyReply } from 'fastify';

export interface SseStream {
  send(obj: unknown): void;
  end(): void;
  readonly signal: AbortSignal;
}

export function openSse(reply: FastifyReply, headers: Record<string, string> = {}): SseStream {
  const res = reply.raw;
  const ac = new AbortController();
  reply.hijack();
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-store',
    Connection: 'keep-alive',
    'X-Content-Type-Options': 'nosniff',
    'X-Accel-Buffering': 'no',
    ...headers,
  });
  res.flushHeaders();
  res.on('close', () => {
    if (!res.writableEnded) ac.abort(new Error('client closed the connection'));
  });
  return {
    signal: ac.signal,
    send(obj) {
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    },
    end() {
      if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
    },
  };
}

/** An AbortSignal that fires when the client of a plain (non-streamed) reply goes away. */
export function clientGone(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort(new Error('client closed the connection'));
  });
  return ac.signal;
}
