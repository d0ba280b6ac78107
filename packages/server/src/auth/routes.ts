import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifySchemaValidationError } from 'fastify';
import type { AppContext } from '../app.ts';
import { ParleyError, unauthorized } from '../errors.ts';
import { BEARER, errors } from '../schemas.ts';
import { principalOf, requireUser } from './http-auth.ts';
import { LoginLimiter } from './login-limiter.ts';
import { hashPassword, needsRehash, prepareDummyHash, verifyAgainstDummy, verifyPassword } from './passwords.ts';
import { RefreshTokenRepository } from './refresh-tokens.ts';
import type { Role } from './tokens.ts';
import { UsersRepository } from './users.ts';

const USERNAME_RULE = 'username must be 3-32 characters of a-z 0-9 _ . -';
const PASSWORD_RULE = 'password must be 8-128 characters';

const RegisterBody = Type.Object({
  username: Type.String({ pattern: '^[a-z0-9_.-]{3,32}$', description: '3-32 of a-z 0-9 _ . -', examples: ['alice'] }),
  password: Type.String({ minLength: 8, maxLength: 128, description: '8-128 characters' }),
});

const TokenBody = Type.Object(
  {
    grant_type: Type.Optional(Type.Literal('password', { description: 'OAuth2 grant type; only `password`' })),
    // Loose bounds: a name or password that breaks the registration rules simply never matches.
    username: Type.String({ minLength: 1, maxLength: 128 }),
    password: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { description: 'OAuth2 password grant; other OAuth2 fields (scope, client_id) are ignored' },
);

const RefreshBody = Type.Object({
  refresh_token: Type.String({ minLength: 1, maxLength: 256, description: 'from /auth/token or /auth/refresh' }),
});

const TokenPair = Type.Object({
  access_token: Type.String({ description: 'JWT (HS256); send as `Authorization: Bearer`' }),
  token_type: Type.Literal('bearer'),
  expires_in: Type.Integer({ description: 'seconds until access_token expires' }),
  refresh_token: Type.String({ description: 'opaque; works once, at /auth/refresh' }),
});

const Me = Type.Object({
  username: Type.String(),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin'), Type.Literal('service')]),
});

const FORM_OR_JSON = ['application/x-www-form-urlencoded', 'application/json'];

/** The reasons a refresh fails; a client should sign in again with a password after any of them. */
const REFRESH_FAILURES = {
  unknown: 'unknown refresh token',
  expired: 'refresh token expired',
  reused: 'refresh token already used; every refresh token of this user is now revoked, sign in again',
} as const;

/**
 * Turns ajv's errors into one sentence a client developer can act on: the
 * rule of the offending field instead of a regular expression.
 */
function validationMessages(rules: Record<string, string>, what: string) {
  return (failures: FastifySchemaValidationError[], dataVar: string): Error => {
    const error = failures[0];
    if (!error) return new ParleyError('bad_request', `invalid ${dataVar}`);
    let field = error.instancePath.replace(/^\//, '').replace(/\//g, '.');
    if (error.keyword === 'required') field = String(error.params.missingProperty ?? '');
    if (field === '') return new ParleyError('bad_request', `the body must be ${what}`);
    if (error.keyword === 'required') return new ParleyError('bad_request', `${field} is required`);
    const rule = rules[field];
    return new ParleyError('bad_request', rule ?? `${field} ${error.message ?? 'is invalid'}`);
  };
}

/** POST /auth/register, /auth/token, /auth/refresh and GET /me (PROTOCOL §4). */
export function registerAuthRoutes(fastify: FastifyInstance, ctx: AppContext): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const users = new UsersRepository(ctx.database.db);
  const refreshTokens = new RefreshTokenRepository(ctx.database.db, ctx.config.refreshTokenTtl);
  const limiter = new LoginLimiter();
  // Pay for the dummy hash now, not on the first sign-in of an unknown user (which would stand out by its time).
  prepareDummyHash().catch((error: unknown) => ctx.log.error({ err: error }, 'could not prepare the dummy hash'));

  async function tokenPair(username: string, role: Role) {
    const access = await ctx.tokens.issue(username, role);
    const refresh = await refreshTokens.issue(username, role);
    return {
      access_token: access.token,
      token_type: 'bearer' as const,
      expires_in: access.expiresIn,
      refresh_token: refresh.token,
    };
  }

  app.post(
    '/auth/register',
    {
      schema: {
        tags: ['auth'],
        summary: 'Create an account (role `user`)',
        body: RegisterBody,
        response: { 201: Type.Object({ username: Type.String() }), ...errors(400, 409) },
      },
      schemaErrorFormatter: validationMessages(
        { username: USERNAME_RULE, password: PASSWORD_RULE },
        'a JSON object {username, password}',
      ),
    },
    async (request, reply) => {
      const { username, password } = request.body;
      // Cheap early answer; `create` still settles a race between two registrations.
      if (await users.find(username)) throw new ParleyError('conflict', `username "${username}" is taken`);
      await users.create(username, await hashPassword(password), 'user');
      request.log.info({ user: username }, 'user registered');
      return reply.code(201).send({ username });
    },
  );

  app.post(
    '/auth/token',
    {
      schema: {
        tags: ['auth'],
        summary: 'Sign in: OAuth2 password grant, form-encoded or JSON',
        description:
          'Returns an access token and a refresh token. Repeated failures lock the username or the client ' +
          'address for up to 15 minutes (429 with Retry-After).',
        consumes: FORM_OR_JSON,
        body: TokenBody,
        response: { 200: TokenPair, ...errors(400, 401, 429) },
      },
      schemaErrorFormatter: validationMessages(
        { grant_type: 'grant_type must be "password"' },
        'a form or JSON object with username and password',
      ),
    },
    async (request, reply) => {
      const { username, password } = request.body;
      const address = request.ip;
      const retryAfter = limiter.attempt(username, address);
      if (retryAfter !== undefined) {
        throw new ParleyError('rate_limited', `too many failed sign-ins; try again in ${retryAfter} s`, retryAfter);
      }
      const user = await users.find(username);
      const ok = user ? await verifyPassword(password, user.passwordHash) : await verifyAgainstDummy(password);
      if (!user || !ok) {
        // One message for both cases, so the answer does not say which usernames exist.
        throw unauthorized('invalid username or password');
      }
      limiter.succeeded(username, address);
      if (needsRehash(user.passwordHash)) await users.updatePasswordHash(username, await hashPassword(password));
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      return tokenPair(user.username, user.role);
    },
  );

  app.post(
    '/auth/refresh',
    {
      schema: {
        tags: ['auth'],
        summary: 'Trade a refresh token for a new pair; each refresh token works once',
        description:
          'Presenting a refresh token a second time revokes every refresh token of its user (reuse detection): ' +
          'refresh once per token and never in parallel.',
        consumes: FORM_OR_JSON,
        body: RefreshBody,
        response: { 200: TokenPair, ...errors(400, 401) },
      },
      schemaErrorFormatter: validationMessages({}, 'a JSON object {refresh_token}'),
    },
    async (request, reply) => {
      const result = await refreshTokens.rotate(request.body.refresh_token);
      if (!result.ok) {
        if (result.reason === 'reused') {
          request.log.warn({ user: result.username }, 'refresh token reused: revoked every refresh token of the user');
        }
        throw unauthorized(REFRESH_FAILURES[result.reason]);
      }
      // The role comes from the account as it is now, not as it was at sign-in.
      const user = await users.find(result.username);
      if (!user) throw unauthorized(REFRESH_FAILURES.unknown);
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      return tokenPair(user.username, user.role);
    },
  );

  app.get(
    '/me',
    {
      schema: {
        tags: ['auth'],
        summary: 'Who the bearer token says the caller is',
        security: BEARER,
        response: { 200: Me, ...errors(401) },
      },
      preHandler: requireUser(ctx.tokens),
    },
    async (request) => {
      const principal = principalOf(request);
      return { username: principal.user, role: principal.role };
    },
  );
}
