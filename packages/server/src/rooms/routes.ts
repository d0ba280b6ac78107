import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../app.ts';
import { principalOf, requireUser } from '../auth/http-auth.ts';
import { parseChannel } from '../channels/names.ts';
import { badRequest } from '../errors.ts';
import { DATA_TOO_DEEP, MAX_DATA_DEPTH, nestsDeeperThan } from '../json-depth.ts';
import { BEARER, errors, HistoryPage, HistoryQuery, Message, NamePattern, PublishBody, Username } from '../schemas.ts';
import { toView } from './rooms-service.ts';

/**
 * Tells each user added to a private room, on their own user channel, so a
 * client lists the room without polling: `{"event":"room.added","room":…}`.
 * Stored like any `user:` message; the request does not wait for it.
 */
function announceMembers(ctx: AppContext, room: string, members: Iterable<string>, by: string): void {
  for (const member of members) {
    if (member === by) continue;
    ctx.channels
      .publish(parseChannel(`user:${member}`), by, { event: 'room.added', room, by })
      .catch((error) => ctx.log.warn({ err: error, room, member }, 'room.added notification failed'));
  }
}

const RoomView = Type.Object(
  {
    name: Type.String(),
    private: Type.Boolean(),
    creator: Type.String(),
    members: Type.Optional(
      Type.Array(Type.String(), { description: 'Private rooms only, sorted; includes the creator' }),
    ),
    createdAt: Type.String({ format: 'date-time' }),
  },
  { description: 'A room' },
);

const RoomParams = Type.Object({ room: Type.String({ pattern: NamePattern }) });

const JSON_TYPE = 'application/json; charset=utf-8';

/** Rooms (PROTOCOL §4): listing, creation, membership, and history and publishing over HTTP. */
export function registerRoomRoutes(fastify: FastifyInstance, ctx: AppContext): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  // onRequest, not preHandler: an anonymous caller is refused before its body is read.
  const onRequest = requireUser(ctx.tokens);

  app.get(
    '/rooms',
    {
      onRequest,
      schema: {
        tags: ['rooms'],
        summary: 'Rooms the caller may see: every public room and the private rooms it belongs to',
        security: BEARER,
        response: { 200: Type.Object({ rooms: Type.Array(RoomView) }), ...errors(401) },
      },
    },
    async (request) => ({ rooms: await ctx.rooms.listVisible(principalOf(request).user) }),
  );

  app.post(
    '/rooms',
    {
      onRequest,
      schema: {
        tags: ['rooms'],
        summary: 'Create a room; the caller becomes its creator (and a member, when private)',
        security: BEARER,
        body: Type.Object({
          name: Type.String({ pattern: NamePattern }),
          private: Type.Optional(Type.Boolean({ default: false })),
          members: Type.Optional(
            Type.Array(Username, { maxItems: 1000, description: 'Only for a private room; the creator is added' }),
          ),
        }),
        response: { 201: RoomView, ...errors(400, 401, 409) },
      },
    },
    async (request, reply) => {
      const creator = principalOf(request).user;
      const room = await ctx.rooms.create(request.body, creator);
      if (room.private) announceMembers(ctx, room.name, room.members, creator);
      return reply.code(201).send(toView(room));
    },
  );

  app.post(
    '/rooms/:room/members',
    {
      onRequest,
      schema: {
        tags: ['rooms'],
        summary: 'Add a member to a private room (room creator only)',
        security: BEARER,
        params: RoomParams,
        body: Type.Object({ username: Username }),
        response: { 200: RoomView, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const actor = principalOf(request).user;
      const { username } = request.body;
      const { room, added } = await ctx.rooms.addMember(request.params.room, username, actor);
      // Adding someone twice is a no-op, and says nothing the second time.
      if (added) announceMembers(ctx, room.name, [username], actor);
      return toView(room);
    },
  );

  app.get(
    '/rooms/:room/messages',
    {
      onRequest,
      schema: {
        tags: ['rooms'],
        summary: 'History of a room, oldest first: the latest `limit` messages before `before`',
        security: BEARER,
        params: RoomParams,
        querystring: HistoryQuery,
        response: { 200: HistoryPage, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const name = await ctx.channels.authorize(principalOf(request), `room:${request.params.room}`, 'read');
      return ctx.channels.history(name, request.query.before, request.query.limit ?? 50);
    },
  );

  app.post(
    '/rooms/:room/messages',
    {
      onRequest,
      schema: {
        tags: ['rooms'],
        summary: 'Publish to a room, delivered live like a WebSocket publish (a public room is created on first use)',
        security: BEARER,
        params: RoomParams,
        body: PublishBody,
        response: { 201: Message, ...errors(400, 401, 403, 413) },
      },
    },
    async (request, reply) => {
      if (nestsDeeperThan(request.body.data, MAX_DATA_DEPTH)) throw badRequest(DATA_TOO_DEEP);
      const principal = principalOf(request);
      const name = await ctx.channels.authorize(principal, `room:${request.params.room}`, 'publish');
      const { json } = await ctx.channels.publish(name, principal.user, request.body.data, request.body.idempotencyKey);
      // The text ChannelService already encoded, so the body is byte-for-byte the pushed message;
      // Fastify sends a string as it is, and the cast only quiets the typed response schema.
      return reply
        .code(201)
        .type(JSON_TYPE)
        .send(json as never);
    },
  );
}
