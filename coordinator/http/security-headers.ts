// Security headers on every answer (@fastify/helmet, set in onRequest so errors, 404s and 429s
// carry them too): API answers get a CSP that allows nothing; the dashboard's routes pass
// DASHBOARD_HELMET, which allows same-origin scripts, styles and fetches only.
import helmet from '@fastify/helmet';
import type { FastifyInstance } from 'fastify';

const NONE = ["'none'"];
const SELF = ["'self'"];

export const DASHBOARD_HELMET = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      'default-src': NONE, 'script-src': SELF, 'style-src': SELF, 'img-src': [...SELF, 'data:'], 'connect-src': SELF,
      'base-uri': NONE, 'form-action': NONE, 'frame-ancestors': NONE,
    },
  },
};

export async function installSecurityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: { useDefaults: false, directives: { 'default-src': NONE, 'frame-ancestors': NONE } },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
  });
  // Not a helmet header: answers carry tokens' views of hospital data, so no cache keeps them.
  app.addHook('onRequest', async (_req, reply) => {
    reply.header('Cache-Control', 'no-store');
  });
}
