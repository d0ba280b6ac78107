import type { FastifyReply, FastifyRequest } from 'fastify';
import { ParleyError, unauthorized } from '../errors.ts';
import { type Principal, TokenError, type TokenService } from './tokens.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined;
  }
}

/**
 * The credentials of a request, first that applies (PROTOCOL §3, also for
 * HTTP): `Authorization: Bearer`, then `?token=`.
 */
export function tokenOf(headers: Record<string, string | string[] | undefined>, url: string): string | undefined {
  const header = headers.authorization;
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return match[1];
  }
  const query = url.indexOf('?');
  if (query >= 0) {
    const token = new URLSearchParams(url.slice(query + 1)).get('token');
    if (token) return token;
  }
  return undefined;
}

/** Verifies a token or throws `unauthorized` with a reason safe to show. */
export async function verifyOrThrow(tokens: TokenService, token: string | undefined): Promise<Principal> {
  if (token === undefined) throw unauthorized('a bearer token is required');
  try {
    return await tokens.verify(token);
  } catch (error) {
    if (error instanceof TokenError) throw unauthorized(error.expired ? 'token expired' : 'invalid token');
    throw error;
  }
}

/** A preHandler that requires a valid access token and sets `request.principal`. */
export function requireUser(tokens: TokenService) {
  return async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    request.principal = await verifyOrThrow(tokens, tokenOf(request.headers, request.url));
  };
}

/** The principal set by `requireUser`. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new ParleyError('internal', 'route is missing requireUser');
  return request.principal;
}

/** Hides the value of `token` in a URL before it reaches a log line. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, '$1[redacted]');
}
