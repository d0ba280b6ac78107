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

/**
 * Hides the value of every query parameter `tokenOf` could read as the token
 * before the URL reaches a log line. Names are compared as URLSearchParams
 * decodes them (`%74oken`, `tok%65n` are `token` too, in any case), over the same text
 * `tokenOf` parses (up to the end, `#` included); the rest stays as it came.
 */
export function redactUrl(url: string): string {
  const query = url.indexOf('?');
  if (query < 0) return url;
  const pairs = url.slice(query + 1).split('&');
  let changed = false;
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i] as string;
    const equals = pair.indexOf('=');
    const name = equals < 0 ? pair : pair.slice(0, equals);
    const [decoded] = new URLSearchParams(`${name}=`).keys();
    // Any case: `?Token=` does not authenticate, but is no less a secret.
    if (decoded?.toLowerCase() === 'token') {
      pairs[i] = `${name}=[redacted]`;
      changed = true;
    }
  }
  return changed ? `${url.slice(0, query + 1)}${pairs.join('&')}` : url;
}
