import { createHmac, timingSafeEqual } from 'node:crypto';
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
} from 'jose';
import { USERNAME_IN_TOKEN } from '../channels/names.ts';

export const ROLES = ['user', 'admin', 'service'] as const;
export type Role = (typeof ROLES)[number];

/** Who is calling, as read from a verified access token. */
export interface Principal {
  user: string;
  role: Role;
  /** When present, the only topics this token may subscribe to. */
  channels: ReadonlySet<string> | undefined;
  /** Token expiry, seconds since the epoch. */
  exp: number;
}

/** A token that does not verify. `expired` tells 4001 (refresh) from 1008 (stop). */
export class TokenError extends Error {
  constructor(
    message: string,
    readonly expired = false,
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

export interface IssuedToken {
  token: string;
  /** Seconds from now. */
  expiresIn: number;
}

const CLOCK_SKEW_SECONDS = 5;
const EXTERNAL_ALGORITHMS = ['RS256', 'ES256'];
const TOPIC = /^topic:[A-Za-z0-9_.-]{1,64}$/;

export interface TokenServiceOptions {
  secret: string;
  accessTokenTtl: number;
  jwksUrl?: URL | undefined;
}

/**
 * Issues HS256 access tokens and verifies them, plus RS256/ES256 tokens of an
 * external identity provider when JWT_JWKS_URL is set.
 */
export class TokenService {
  private readonly key: Uint8Array;
  private readonly jwks: JWTVerifyGetKey | undefined;
  readonly accessTokenTtl: number;

  constructor(options: TokenServiceOptions) {
    this.key = new TextEncoder().encode(options.secret);
    this.accessTokenTtl = options.accessTokenTtl;
    this.jwks = options.jwksUrl ? createRemoteJWKSet(options.jwksUrl) : undefined;
  }

  async issue(user: string, role: Role, extra: { channels?: string[]; ttl?: number } = {}): Promise<IssuedToken> {
    const ttl = extra.ttl ?? this.accessTokenTtl;
    const claims: JWTPayload = { role };
    if (extra.channels) claims.channels = extra.channels;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
      .sign(this.key);
    return { token, expiresIn: ttl };
  }

  async verify(token: string): Promise<Principal> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new TokenError('malformed token');
    }
    const alg = header.alg;
    if (alg === 'HS256') return principalFrom(this.verifyHs256(token, header));
    let payload: JWTPayload;
    try {
      if (alg !== undefined && EXTERNAL_ALGORITHMS.includes(alg) && this.jwks) {
        ({ payload } = await jwtVerify(token, this.jwks, {
          algorithms: EXTERNAL_ALGORITHMS,
          clockTolerance: CLOCK_SKEW_SECONDS,
          requiredClaims: ['exp', 'sub'],
        }));
      } else {
        throw new TokenError(`algorithm ${alg ?? 'none'} is not accepted`);
      }
    } catch (error) {
      if (error instanceof TokenError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw new TokenError('token expired', true);
      throw new TokenError(error instanceof Error ? error.message : 'invalid token');
    }
    return principalFrom(payload);
  }

  /**
   * HS256, this server's own tokens, verified in this thread with
   * node:crypto, to the rules jose's jwtVerify applies with the options the
   * external tokens get (exp and sub required, 5 s of clock skew, nbf and
   * crit honoured). Through WebCrypto (jose's only way) a verification is an
   * async job on the thread pool: 49 µs of CPU here and a second wake-up of
   * the event loop for every connect, against 18 µs and none.
   */
  private verifyHs256(token: string, header: ReturnType<typeof decodeProtectedHeader>): JWTPayload {
    if (header.crit !== undefined || header.b64 !== undefined) throw new TokenError('unsupported JWS header');
    const lastDot = token.lastIndexOf('.');
    const signature = token.slice(lastDot + 1);
    // 32 bytes in base64url, exactly: Node's decoder would skip stray characters.
    if (!HS256_SIGNATURE.test(signature)) throw new TokenError('signature verification failed');
    const expected = createHmac('sha256', this.key).update(token.slice(0, lastDot)).digest();
    if (!timingSafeEqual(expected, Buffer.from(signature, 'base64url'))) {
      throw new TokenError('signature verification failed');
    }
    let payload: JWTPayload;
    try {
      payload = decodeJwt(token);
    } catch {
      throw new TokenError('malformed token');
    }
    const now = Math.floor(Date.now() / 1000);
    const { exp, nbf, iat } = payload;
    if (exp === undefined) throw new TokenError('missing required "exp" claim');
    if (typeof exp !== 'number') throw new TokenError('"exp" claim must be a number');
    if (payload.sub === undefined) throw new TokenError('missing required "sub" claim');
    if (iat !== undefined && typeof iat !== 'number') throw new TokenError('"iat" claim must be a number');
    if (nbf !== undefined) {
      if (typeof nbf !== 'number') throw new TokenError('"nbf" claim must be a number');
      if (nbf > now + CLOCK_SKEW_SECONDS) throw new TokenError('"nbf" claim timestamp check failed');
    }
    if (exp <= now - CLOCK_SKEW_SECONDS) throw new TokenError('token expired', true);
    return payload;
  }
}

/** An HMAC-SHA-256 signature in base64url without padding: 43 characters, the last one of 16. */
const HS256_SIGNATURE = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

function principalFrom(payload: JWTPayload): Principal {
  const { sub, exp } = payload;
  if (typeof sub !== 'string' || !USERNAME_IN_TOKEN.test(sub)) throw new TokenError('sub is not a valid username');
  if (typeof exp !== 'number') throw new TokenError('exp is required');
  const role = payload.role ?? 'user';
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
    throw new TokenError('role must be user, admin or service');
  }
  let channels: Set<string> | undefined;
  if (payload.channels !== undefined) {
    if (!Array.isArray(payload.channels) || !payload.channels.every((c) => typeof c === 'string' && TOPIC.test(c))) {
      throw new TokenError('channels must list full topic names');
    }
    channels = new Set(payload.channels as string[]);
  }
  return { user: sub, role: role as Role, channels, exp };
}
