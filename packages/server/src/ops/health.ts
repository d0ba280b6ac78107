import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../app.ts';
import { ErrorResponse } from '../schemas.ts';

const Check = Type.Union([Type.Literal('ok'), Type.Literal('unreachable')]);
const Checks = Type.Object(
  {
    instance: Type.Optional(Type.Literal('draining', { description: 'Present while the instance shuts down' })),
    store: Check,
    broker: Check,
    presence: Check,
  },
  { description: 'Each dependency as this instance sees it' },
);

const Healthy = Type.Object({ status: Type.Literal('ok') }, { description: 'The process is alive' });
const Ready = Type.Object(
  { status: Type.Literal('ready'), checks: Checks },
  { description: 'Store, broker and presence answer and the instance is not draining' },
);
const NotReady = Type.Object(
  {
    error: ErrorResponse.properties.error,
    status: Type.Literal('not_ready'),
    checks: Checks,
  },
  { description: 'A dependency is unreachable or the instance is draining: send no new traffic here' },
);

/**
 * Liveness and readiness (PROTOCOL §4). Ready means store, broker and
 * presence answer and the instance is not draining. Both are in
 * /openapi.json, so load balancers and orchestrators can be configured from it.
 */
export function registerHealthRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Liveness: 200 while the process serves HTTP, whatever its dependencies',
        response: { 200: Healthy },
      },
    },
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness: 200 when this instance should get traffic, else 503 with the failing checks',
        response: { 200: Ready, 503: NotReady },
      },
    },
    async (_request, reply) => {
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
      const broker = ctx.broker.isReady();
      checks.broker = broker ? 'ok' : 'unreachable';
      // Without presence, `presence` answers fail and joins and leaves go unannounced.
      const presence = ctx.presence.isReady();
      checks.presence = presence ? 'ok' : 'unreachable';
      if (!broker || !presence) ready = false;
      reply.code(ready ? 200 : 503);
      return ready
        ? { status: 'ready', checks }
        : { error: { code: 'unavailable', message: 'not ready' }, status: 'not_ready', checks };
    },
  );
}
