import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname } from 'node:os';

/**
 * The one place the environment is read. Every variable of PROTOCOL §1 is
 * parsed and validated here, once, at boot; the rest of the server receives a
 * frozen `Config` and never touches `process.env`.
 */
export interface Config {
  port: number;
  host: string;
  nodeEnv: string;
  jwtSecret: string;
  /** true when JWT_SECRET was not given and a random one was generated */
  jwtSecretGenerated: boolean;
  jwtJwksUrl: URL | undefined;
  accessTokenTtl: number;
  refreshTokenTtl: number;
  databaseUrl: string;
  redisUrl: string | undefined;
  /** Prefix of every Redis key and pub/sub channel (not in the contract: lets deployments and tests share a Redis). */
  redisKeyPrefix: string;
  serverApiKey: string | undefined;
  allowedOrigins: string[] | undefined;
  /** Whom to believe about X-Forwarded-For (not in the contract; off unless behind a proxy). */
  trustProxy: boolean | number | string;
  maxConnections: number;
  maxConnectionsPerUser: number;
  maxMessageBytes: number;
  maxSubscriptions: number;
  rateLimitPerSec: number;
  rateLimitBurst: number;
  heartbeatMs: number;
  authTimeoutMs: number;
  compression: boolean;
  recoveryMax: number;
  shutdownDrainMs: number;
  instanceId: string;
  logLevel: LogLevel;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Thrown for a bad variable; its message is the one line start-up prints. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    reason: string,
  ) {
    super(`Invalid ${variable}: ${reason}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function integer(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(name, `expected an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${raw}`);
  }
  return value;
}

function onOff(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const lower = raw.toLowerCase();
  if (['on', 'true', '1', 'yes'].includes(lower)) return true;
  if (['off', 'false', '0', 'no'].includes(lower)) return false;
  throw new ConfigError(name, `expected "on" or "off", got "${raw}"`);
}

function url(env: Env, name: string, protocols: string[]): URL | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, 'not a valid URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL`);
  }
  return parsed;
}

function databaseUrl(env: Env): string {
  const raw = read(env, 'DATABASE_URL') ?? 'sqlite:./data/parley.db';
  if (raw.startsWith('sqlite:')) {
    if (raw.length === 'sqlite:'.length) throw new ConfigError('DATABASE_URL', 'sqlite: needs a path or :memory:');
    return raw;
  }
  if (raw.startsWith('postgres://') || raw.startsWith('postgresql://')) {
    try {
      new URL(raw);
    } catch {
      throw new ConfigError('DATABASE_URL', 'not a valid postgres:// URL');
    }
    return raw;
  }
  throw new ConfigError('DATABASE_URL', 'expected sqlite:<path>, sqlite::memory: or postgres://…');
}

function redisKeyPrefix(env: Env): string {
  const raw = read(env, 'REDIS_KEY_PREFIX') ?? 'parley:';
  if (!/^[A-Za-z0-9_.:{}-]{1,64}$/.test(raw)) {
    throw new ConfigError('REDIS_KEY_PREFIX', 'expected 1-64 of A-Z a-z 0-9 _ . : { } -');
  }
  return raw;
}

/**
 * TRUST_PROXY: unset/false trusts no proxy (a client cannot fake its address
 * with X-Forwarded-For); `true` trusts every hop; a number trusts that many
 * hops; otherwise a comma list of proxy addresses or CIDR ranges.
 */
function trustProxy(env: Env): boolean | number | string {
  const raw = read(env, 'TRUST_PROXY');
  if (raw === undefined || raw.toLowerCase() === 'false') return false;
  if (raw.toLowerCase() === 'true') return true;
  if (/^\d+$/.test(raw)) return Number(raw);
  const entries = raw.split(',').map((e) => e.trim());
  for (const entry of entries) {
    if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(entry)) {
      throw new ConfigError('TRUST_PROXY', `"${entry}" is not true, false, a hop count, an address or a CIDR range`);
    }
  }
  return entries.join(',');
}

/** One DNS label (RFC 1123; `_` too, as container names use it). */
const HOST_LABEL = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * HOST: an IPv4 or IPv6 address (no brackets), or a plausible host name,
 * checked here so a typo fails at boot naming HOST rather than later as a
 * bare getaddrinfo error. Whether the name resolves is left to listen.
 */
function host(env: Env): string {
  const raw = read(env, 'HOST') ?? '0.0.0.0';
  if (isIP(raw) !== 0) return raw;
  const name = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  const labels = name.split('.');
  // An all-digit last label is a mistyped address (1.2.3, 256.1.1.1), not a name.
  if (name.length <= 253 && labels.every((label) => HOST_LABEL.test(label)) && !/^\d+$/.test(labels.at(-1) ?? '')) {
    return raw;
  }
  throw new ConfigError('HOST', `expected an IP address (without brackets) or a host name, got "${raw}"`);
}

const MIN_SECRET_BYTES = 32;

export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = read(env, 'NODE_ENV') ?? 'development';
  const givenSecret = read(env, 'JWT_SECRET');
  if (givenSecret === undefined && nodeEnv === 'production') {
    throw new ConfigError('JWT_SECRET', 'required when NODE_ENV=production');
  }
  if (givenSecret !== undefined && Buffer.byteLength(givenSecret) < MIN_SECRET_BYTES) {
    throw new ConfigError('JWT_SECRET', `must be at least ${MIN_SECRET_BYTES} bytes for HS256`);
  }

  const logLevel = (read(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }

  const origins = read(env, 'ALLOWED_ORIGINS');
  let allowedOrigins: string[] | undefined;
  if (origins !== undefined) {
    // Stored as the browser sends them (`https://chat.example.com/` → `https://chat.example.com`),
    // since the gateway compares the Origin header with these strings exactly.
    allowedOrigins = origins
      .split(',')
      .map((o) => o.trim())
      .filter((o) => o !== '')
      .map((origin) => {
        if (origin === '*') return origin;
        try {
          const parsed = new URL(origin);
          if (parsed.origin !== origin.replace(/\/$/, '')) throw new Error('not an origin');
          return parsed.origin;
        } catch {
          throw new ConfigError('ALLOWED_ORIGINS', `"${origin}" is not an origin like https://chat.example.com`);
        }
      });
    if (allowedOrigins.length === 0) throw new ConfigError('ALLOWED_ORIGINS', 'lists no origin');
    if (allowedOrigins.includes('*')) allowedOrigins = undefined;
  }

  const rateLimitPerSec = integer(env, 'RATE_LIMIT_PER_SEC', 50, 1);
  const rateLimitBurst = integer(env, 'RATE_LIMIT_BURST', 100, 1);

  const config: Config = {
    port: integer(env, 'PORT', 8000, 0, 65535),
    host: host(env),
    nodeEnv,
    jwtSecret: givenSecret ?? randomBytes(48).toString('base64url'),
    jwtSecretGenerated: givenSecret === undefined,
    jwtJwksUrl: url(env, 'JWT_JWKS_URL', ['http:', 'https:']),
    accessTokenTtl: integer(env, 'ACCESS_TOKEN_TTL', 900, 1),
    refreshTokenTtl: integer(env, 'REFRESH_TOKEN_TTL', 2592000, 1),
    databaseUrl: databaseUrl(env),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:'])?.toString(),
    redisKeyPrefix: redisKeyPrefix(env),
    serverApiKey: read(env, 'SERVER_API_KEY'),
    allowedOrigins,
    trustProxy: trustProxy(env),
    maxConnections: integer(env, 'MAX_CONNECTIONS', 100000, 1),
    maxConnectionsPerUser: integer(env, 'MAX_CONNECTIONS_PER_USER', 20, 1),
    maxMessageBytes: integer(env, 'MAX_MESSAGE_BYTES', 65536, 64, 64 * 1024 * 1024),
    maxSubscriptions: integer(env, 'MAX_SUBSCRIPTIONS', 1000, 1),
    rateLimitPerSec,
    rateLimitBurst,
    heartbeatMs: integer(env, 'HEARTBEAT_MS', 25000, 100),
    authTimeoutMs: integer(env, 'AUTH_TIMEOUT_MS', 5000, 10),
    compression: onOff(env, 'COMPRESSION', false),
    recoveryMax: integer(env, 'RECOVERY_MAX', 1000, 0, 100000),
    shutdownDrainMs: integer(env, 'SHUTDOWN_DRAIN_MS', 10000, 0),
    instanceId: read(env, 'INSTANCE_ID') ?? `${hostname()}-${process.pid}`,
    logLevel: logLevel as LogLevel,
  };
  return Object.freeze(config);
}
