import { createHash, timingSafeEqual } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../app.ts';
import { principalOf, requireUser, tokenOf, verifyOrThrow } from '../auth/http-auth.ts';
import type { Principal } from '../auth/tokens.ts';
import { badRequest, forbidden, unauthorized } from '../errors.ts';
import { DATA_TOO_DEEP, MAX_DATA_DEPTH, nestsDeeperThan } from '../json-depth.ts';
import { API_KEY_OR_BEARER, BEARER, errors, Message, PublishBody } from '../schemas.ts';
import { parseChannel } from './names.ts';

const ChannelParams = Type.Object({
  channel: Type.String({ minLength: 1, maxLength: 140, description: '`namespace:name`, e.g. `topic:deploys`' }),
});

/** `from` of messages published with the API key. */
export const SERVER_SENDER = 'server';

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * Compares in constant time. Hashing first gives both sides the same length,
 * so not even the key's length leaks through timing.
 */
export function apiKeyMatches(expected: string | undefined, given: string): boolean {
  if (expected === undefined) return false;
  return timingSafeEqual(digest(expected), digest(given));
}

/**
 * Authenticates the server API: `X-API-Key`, else a bearer token with role
 * admin or service. A key that is presented must be right (no fallback to
 * the token), so a misconfigured back end fails loudly.
 */
function requireBackEnd(ctx: AppContext) {
  return async (request: FastifyRequest): Promise<void> => {
    const key = request.headers['x-api-key'];
    if (key !== undefined) {
      if (ctx.config.serverApiKey === undefined) {
        throw unauthorized('no server API key is configured here: use an admin or service token');
      }
      if (typeof key !== 'string' || !apiKeyMatches(ctx.config.serverApiKey, key)) {
        throw unauthorized('invalid API key');
      }
      const principal: Principal = {
        user: SERVER_SENDER,
        role: 'service',
        channels: undefined,
        exp: Number.POSITIVE_INFINITY,
      };
      request.principal = principal;
      return;
    }
    const token = tokenOf(request.headers, request.url);
    if (token === undefined) throw unauthorized('an X-API-Key header or an admin/service bearer token is required');
    const principal = await verifyOrThrow(ctx.tokens, token);
    if (principal.role !== 'admin' && principal.role !== 'service') {
      throw forbidden('the server API takes the API key or an admin/service token');
    }
    request.principal = principal;
  };
}

/** Presence over HTTP, and the server API that back ends publish through (PROTOCOL §4). */
export function registerChannelRoutes(fastify: FastifyInstance, ctx: AppContext): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.get(
    '/channels/:channel/presence',
    {
      onRequest: requireUser(ctx.tokens),
      schema: {
        tags: ['channels'],
        summary: 'Who is subscribed to a channel: connections per user (always empty for topic and user channels)',
        security: BEARER,
        params: ChannelParams,
        response: {
          200: Type.Object({
            users: Type.Array(Type.Object({ user: Type.String(), connections: Type.Integer({ minimum: 1 }) })),
          }),
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const name = await ctx.channels.authorize(principalOf(request), request.params.channel, 'read');
      return { users: await ctx.channels.presence(name) };
    },
  );

  app.post(
    '/publish/:channel',
    {
      onRequest: requireBackEnd(ctx),
      schema: {
        tags: ['channels'],
        summary: 'Publish from a back end to any channel, delivered live (API key or admin/service token)',
        description:
          'The server API is trusted: it may publish to every namespace, private rooms and DMs included, ' +
          'and a room that does not exist yet is created public. `from` is the token subject, or "server" ' +
          'with the API key.',
        security: API_KEY_OR_BEARER,
        params: ChannelParams,
        body: PublishBody,
        response: { 202: Message, ...errors(400, 401, 403, 413) },
      },
    },
    async (request, reply) => {
      if (nestsDeeperThan(request.body.data, MAX_DATA_DEPTH)) throw badRequest(DATA_TOO_DEEP);
      const principal = principalOf(request);
      const name = parseChannel(request.params.channel);
      // History and presence of a room need its row; WebSocket publishes create it the same way.
      if (name.namespace === 'room') await ctx.rooms.getOrCreatePublic(name.name, principal.user);
      const { json } = await ctx.channels.publish(name, principal.user, request.body.data, request.body.idempotencyKey);
      // Pre-encoded text, sent as it is (see POST /rooms/{room}/messages).
      return reply
        .code(202)
        .type('application/json; charset=utf-8')
        .send(json as never);
    },
  );
}
