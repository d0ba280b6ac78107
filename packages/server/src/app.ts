import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import formbody from '@fastify/formbody';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import pino, { type Logger } from 'pino';
import { redactUrl } from './auth/http-auth.ts';
import { registerAuthRoutes } from './auth/routes.ts';
import { TokenService } from './auth/tokens.ts';
import type { Broker } from './broker/broker.ts';
import { createBroker } from './broker/index.ts';
import { ChannelService } from './channels/channel-service.ts';
import { registerChannelRoutes } from './channels/routes.ts';
import type { Config } from './config.ts';
import { ERROR_CODES, type ErrorCode, ParleyError } from './errors.ts';
import { registerHealthRoutes } from './ops/health.ts';
import { Metrics, registerMetricsRoute } from './ops/metrics.ts';
import { createPresence } from './presence/index.ts';
import type { PresenceStore } from './presence/presence.ts';
import { Gateway } from './realtime/gateway.ts';
import { Hub } from './realtime/hub.ts';
import { RoomsService } from './rooms/rooms-service.ts';
import { registerRoomRoutes } from './rooms/routes.ts';
import { type Database, openDatabase } from './store/database.ts';
import { registerTaskRoutes } from './tasks/routes.ts';
import { registerWebRoutes } from './web.ts';

/** Everything a route or the gateway needs, built once per instance. */
export interface AppContext {
  config: Config;
  log: Logger;
  database: Database;
  broker: Broker;
  presence: PresenceStore;
  tokens: TokenService;
  rooms: RoomsService;
  hub: Hub;
  channels: ChannelService;
  metrics: Metrics;
  state: { draining: boolean };
}

export interface Parley {
  app: FastifyInstance;
  ctx: AppContext;
  gateway: Gateway;
  /** Listens on config.host:config.port; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number; url: string }>;
  /** Graceful: not ready, close sockets 1001, flush the store, release everything. */
  close(): Promise<void>;
}

export function createLogger(config: Config, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    base: { instance: config.instanceId },
    // Secrets never reach a log line, whichever way they arrived.
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers["x-api-key"]',
        'req.headers.cookie',
        'headers.authorization',
        'headers["x-api-key"]',
        'password',
        'token',
        'refresh_token',
        'access_token',
        'body.password',
      ],
      censor: '[redacted]',
    },
    serializers: {
      req(request: { method: string; url: string; ip?: string; id?: string }) {
        return { method: request.method, url: redactUrl(request.url), ip: request.ip, id: request.id };
      },
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

function errorCodeForStatus(status: number): ErrorCode {
  for (const [code, meta] of Object.entries(ERROR_CODES)) if (meta.status === status) return code as ErrorCode;
  return status >= 500 ? 'internal' : 'bad_request';
}

/** Longest path parameter routed; a channel is at most 140 characters, 420 percent-encoded. */
const MAX_PARAM_LENGTH = 512;

/**
 * Requests the router refuses (a path that is not valid percent-encoding, a
 * parameter above MAX_PARAM_LENGTH). Fastify's default body is not ours, and
 * it echoes the URL, `?token=` included.
 */
function answerFrameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const message =
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`
      : 'the URL path is not valid percent-encoding';
  reply.code(400).send({ error: { code: 'bad_request', message } });
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (not HTTP/1.1,
 * request line and headers above Node's 16 KiB): the usual error body, then
 * the connection is closed, as Node does.
 */
function answerClientError(log: Logger, error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const code: ErrorCode = error.code === 'HPE_HEADER_OVERFLOW' ? 'too_large' : 'bad_request';
  const message =
    code === 'too_large'
      ? 'the request line and headers are too large'
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 'the request did not arrive in time'
        : 'malformed HTTP request';
  log.debug({ err: error }, 'client error');
  if (socket.writable) {
    const body = JSON.stringify({ error: { code, message } });
    const { status } = ERROR_CODES[code];
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

export interface BuildOptions {
  log?: Logger;
  /** Wraps the configured broker (fault injection in tests, instrumentation when embedding). */
  wrapBroker?: (broker: Broker) => Broker;
}

export async function buildApp(config: Config, options: BuildOptions = {}): Promise<Parley> {
  const log = options.log ?? createLogger(config);
  if (config.jwtSecretGenerated) {
    log.warn(
      'JWT_SECRET is not set: using a random secret for this process. Tokens will not survive a restart ' +
        'and will not work across instances. Set JWT_SECRET (required when NODE_ENV=production).',
    );
  }
  const database = await openDatabase(config.databaseUrl, log);
  // A later step failing must not leave earlier connections open.
  const opened: Array<{ close(): Promise<void> }> = [database];
  const undo = async (error: unknown): Promise<never> => {
    for (const resource of opened.reverse()) await resource.close().catch(() => undefined);
    throw error;
  };
  const configured = await createBroker(config, log).catch(undo);
  opened.push(configured);
  const broker: Broker = options.wrapBroker ? options.wrapBroker(configured) : configured;
  const presence: PresenceStore = await createPresence(config, log).catch(undo);
  const tokens = new TokenService({
    secret: config.jwtSecret,
    accessTokenTtl: config.accessTokenTtl,
    jwksUrl: config.jwtJwksUrl,
  });
  const rooms = new RoomsService(database.db);
  let gateway: Gateway | undefined;
  let hub: Hub | undefined;
  const metrics: Metrics = new Metrics(
    config.instanceId,
    {
      connections: () => gateway?.connections.size ?? 0,
      subscriptions: () => gateway?.subscriptionCount() ?? 0,
      channels: () => hub?.channelCount ?? 0,
    },
    database.checkpointer,
  );
  hub = new Hub(broker, database.messages, log, metrics);
  const channels = new ChannelService({
    store: database.messages,
    broker,
    presence,
    hub,
    rooms,
    recoveryMax: config.recoveryMax,
    log,
    metrics,
  });
  const ctx: AppContext = {
    config,
    log,
    database,
    broker,
    presence,
    tokens,
    rooms,
    hub,
    channels,
    metrics,
    state: { draining: false },
  };

  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: Math.max(config.maxMessageBytes + 4096, 16384),
    // find-my-way's default (100) is below a channel's 140 characters: a long
    // dm: channel could not be named in a path. The schemas check the real limits.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: (error, socket) => answerClientError(log, error, socket),
    trustProxy:
      typeof config.trustProxy === 'number'
        ? (
            (hops: number) => (_address: string, hop: number) =>
              hop < hops
          )(config.trustProxy)
        : config.trustProxy,
  });
  app.decorateRequest('principal', undefined);

  app.setErrorHandler((error: FastifyError | ParleyError, request, reply) => {
    if (error instanceof ParleyError) {
      if (error.retryAfter !== undefined) reply.header('retry-after', String(error.retryAfter));
      return reply.code(error.status).send({ error: error.toJSON() });
    }
    if (error.validation) {
      return reply.code(400).send({ error: { code: 'bad_request', message: error.message } });
    }
    const status = typeof error.statusCode === 'number' ? error.statusCode : 500;
    if (status >= 500) {
      request.log.error({ err: error }, 'unhandled error');
      return reply.code(500).send({ error: { code: 'internal', message: 'Internal error' } });
    }
    // Fastify's own 4xx (bad JSON, body too large, unsupported media type) with our codes.
    const code = status === 415 ? 'bad_request' : errorCodeForStatus(status);
    return reply.code(ERROR_CODES[code].status).send({ error: { code, message: error.message } });
  });
  app.setNotFoundHandler((request, reply) => {
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `no route ${request.method} ${redactUrl(request.url)}` } });
  });

  await app.register(formbody);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Parley',
        version: '1',
        description: 'Real-time chat and notification server. The WebSocket protocol is described in docs/protocol.md.',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  registerHealthRoutes(app, ctx);
  registerMetricsRoute(app, ctx);
  registerAuthRoutes(app, ctx);
  registerRoomRoutes(app, ctx);
  registerChannelRoutes(app, ctx);
  registerTaskRoutes(app, ctx);
  registerWebRoutes(app, ctx);

  const attached = new Gateway(ctx);
  gateway = attached;
  attached.attach(app.server);
  hub.start();
  channels.start();

  let closing: Promise<void> | undefined;
  return {
    app,
    ctx,
    gateway: attached,
    async listen() {
      await app.listen({ port: config.port, host: config.host });
      const address = app.server.address();
      if (address === null || typeof address === 'string') throw new Error('server is not listening on TCP');
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      return { host: address.address, port: address.port, url: `http://${host}:${address.port}` };
    },
    close() {
      closing ??= (async () => {
        ctx.state.draining = true;
        hub.stop();
        channels.stop();
        await attached.close();
        await app.close();
        await broker.close();
        await presence.close();
        await database.close();
      })();
      return closing;
    },
  };
}
