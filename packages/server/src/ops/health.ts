import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../app.ts';

/** Liveness and readiness (PROTOCOL §4). Ready means store and broker answer and the instance is not draining. */
export function registerHealthRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    const checks: Record<string, string> = {};
    let ready = true;
    if (ctx.state.draining) {
      checks.instance = 'draining';
      ready = false;
    }
    try {
      await ctx.database.messages.ping();
      checks.store = 'ok';
    } catch {
      checks.store = 'unreachable';
      ready = false;
    }
    checks.broker = ctx.broker.isReady() ? 'ok' : 'unreachable';
    if (!ctx.broker.isReady()) ready = false;
    reply.code(ready ? 200 : 503);
    return ready
      ? { status: 'ready', checks }
      : { error: { code: 'unavailable', message: 'not ready' }, status: 'not_ready', checks };
  });
}
