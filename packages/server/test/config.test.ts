import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Config, ConfigError, loadConfig } from '../src/config.ts';

const SECRET = 'a-test-secret-that-is-long-enough-0123456789';

/** Asserts that loading `env` fails with a one-line ConfigError naming `variable`. */
function rejects(env: Record<string, string>, variable: string): ConfigError {
  let caught: unknown;
  try {
    loadConfig(env);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `${JSON.stringify(env)} should throw a ConfigError, got ${String(caught)}`);
  assert.equal(caught.variable, variable);
  assert.ok(caught.message.includes(variable), `"${caught.message}" names ${variable}`);
  assert.ok(!caught.message.includes('\n'), 'one line');
  return caught;
}

describe('loadConfig defaults', () => {
  it('match PROTOCOL §1 exactly', () => {
    const config = loadConfig({});
    const { jwtSecret, instanceId, ...rest } = config;
    assert.deepEqual(rest, {
      port: 8000,
      host: '0.0.0.0',
      nodeEnv: 'development',
      jwtSecretGenerated: true,
      jwtJwksUrl: undefined,
      accessTokenTtl: 900,
      refreshTokenTtl: 2592000,
      databaseUrl: 'sqlite:./data/parley.db',
      redisUrl: undefined,
      redisKeyPrefix: 'parley:',
      trustProxy: false,
      serverApiKey: undefined,
      allowedOrigins: undefined,
      maxConnections: 100000,
      maxConnectionsPerUser: 20,
      maxMessageBytes: 65536,
      maxSubscriptions: 1000,
      rateLimitPerSec: 50,
      rateLimitBurst: 100,
      heartbeatMs: 25000,
      authTimeoutMs: 5000,
      compression: false,
      recoveryMax: 1000,
      shutdownDrainMs: 10000,
      logLevel: 'info',
    });
    assert.equal(instanceId, `${hostname()}-${process.pid}`);
    assert.ok(Buffer.byteLength(jwtSecret) >= 32, 'a generated secret is long enough for HS256');
    assert.ok(Object.isFrozen(config));
  });

  it('generates a different random secret per process', () => {
    assert.notEqual(loadConfig({}).jwtSecret, loadConfig({}).jwtSecret);
  });

  it('treats empty and blank values as unset', () => {
    const config = loadConfig({ PORT: '', HOST: '   ', LOG_LEVEL: '', REDIS_URL: ' ', JWT_SECRET: '' });
    assert.equal(config.port, 8000);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.logLevel, 'info');
    assert.equal(config.redisUrl, undefined);
    assert.equal(config.jwtSecretGenerated, true);
  });

  it('reads given values', () => {
    const config = loadConfig({
      PORT: ' 0 ',
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
      JWT_SECRET: SECRET,
      JWT_JWKS_URL: 'https://idp.example.com/.well-known/jwks.json',
      DATABASE_URL: 'postgres://parley:pw@db:5432/parley',
      REDIS_URL: 'redis://cache:6379',
      SERVER_API_KEY: 'key',
      ALLOWED_ORIGINS: 'https://chat.example.com, http://localhost:5173/',
      COMPRESSION: 'on',
      LOG_LEVEL: 'DEBUG',
      INSTANCE_ID: 'parley-1',
      RECOVERY_MAX: '0',
      SHUTDOWN_DRAIN_MS: '0',
    });
    assert.equal(config.port, 0);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.jwtSecret, SECRET);
    assert.equal(config.jwtSecretGenerated, false);
    assert.equal(config.jwtJwksUrl?.href, 'https://idp.example.com/.well-known/jwks.json');
    assert.equal(config.databaseUrl, 'postgres://parley:pw@db:5432/parley');
    assert.equal(config.redisUrl, 'redis://cache:6379');
    assert.equal(config.serverApiKey, 'key');
    // Normalized to what a browser sends in its Origin header.
    assert.deepEqual(config.allowedOrigins, ['https://chat.example.com', 'http://localhost:5173']);
    assert.equal(config.compression, true);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.instanceId, 'parley-1');
    assert.equal(config.recoveryMax, 0);
    assert.equal(config.shutdownDrainMs, 0);
  });

  it('accepts the sqlite forms of DATABASE_URL', () => {
    for (const url of ['sqlite::memory:', 'sqlite:./data/x.db', 'sqlite:/var/lib/parley.db', 'postgresql://h/db']) {
      assert.equal(loadConfig({ DATABASE_URL: url }).databaseUrl, url);
    }
  });

  it('reads COMPRESSION on/off words', () => {
    for (const on of ['on', 'ON', 'true', '1', 'yes']) assert.equal(loadConfig({ COMPRESSION: on }).compression, true);
    for (const off of ['off', 'Off', 'false', '0', 'no']) {
      assert.equal(loadConfig({ COMPRESSION: off }).compression, false);
    }
  });

  it('lets "*" in ALLOWED_ORIGINS mean any origin', () => {
    assert.equal(loadConfig({ ALLOWED_ORIGINS: '*' }).allowedOrigins, undefined);
    assert.equal(loadConfig({ ALLOWED_ORIGINS: 'https://a.example, *' }).allowedOrigins, undefined);
  });
});

describe('loadConfig numeric variables', () => {
  /** Each integer variable with its allowed range (max unset = largest safe integer). */
  const numeric: Array<{ name: string; field: keyof Config; min: number; max?: number }> = [
    { name: 'PORT', field: 'port', min: 0, max: 65535 },
    { name: 'ACCESS_TOKEN_TTL', field: 'accessTokenTtl', min: 1 },
    { name: 'REFRESH_TOKEN_TTL', field: 'refreshTokenTtl', min: 1 },
    { name: 'MAX_CONNECTIONS', field: 'maxConnections', min: 1 },
    { name: 'MAX_CONNECTIONS_PER_USER', field: 'maxConnectionsPerUser', min: 1 },
    { name: 'MAX_MESSAGE_BYTES', field: 'maxMessageBytes', min: 64, max: 64 * 1024 * 1024 },
    { name: 'MAX_SUBSCRIPTIONS', field: 'maxSubscriptions', min: 1 },
    { name: 'RATE_LIMIT_PER_SEC', field: 'rateLimitPerSec', min: 1 },
    { name: 'RATE_LIMIT_BURST', field: 'rateLimitBurst', min: 1 },
    { name: 'HEARTBEAT_MS', field: 'heartbeatMs', min: 100 },
    { name: 'AUTH_TIMEOUT_MS', field: 'authTimeoutMs', min: 10 },
    { name: 'RECOVERY_MAX', field: 'recoveryMax', min: 0, max: 100000 },
    { name: 'SHUTDOWN_DRAIN_MS', field: 'shutdownDrainMs', min: 0 },
  ];

  for (const { name, field, min, max } of numeric) {
    it(`${name} rejects non-integers and out-of-range values`, () => {
      for (const value of ['abc', '1.5', '1e3', '0x10', '12abc', '--1', '+5', '1_000', 'Infinity', 'NaN']) {
        const error = rejects({ [name]: value }, name);
        assert.match(error.message, /integer/);
      }
      rejects({ [name]: String(min - 1) }, name);
      rejects({ [name]: '-1' }, name);
      rejects({ [name]: String(max === undefined ? '99999999999999999999' : max + 1) }, name);
      rejects({ [name]: '9007199254740993' }, name);
    });

    it(`${name} accepts its bounds`, () => {
      assert.equal(loadConfig({ [name]: String(min) })[field], min);
      const top = max ?? Number.MAX_SAFE_INTEGER;
      assert.equal(loadConfig({ [name]: String(top) })[field], top);
    });
  }
});

describe('loadConfig rejects bad values, naming the variable', () => {
  it('JWT_SECRET missing when NODE_ENV=production', () => {
    const error = rejects({ NODE_ENV: 'production' }, 'JWT_SECRET');
    assert.match(error.message, /production/);
    assert.equal(loadConfig({ NODE_ENV: 'production', JWT_SECRET: SECRET }).jwtSecretGenerated, false);
  });

  it('JWT_SECRET shorter than 32 bytes', () => {
    rejects({ JWT_SECRET: 'short' }, 'JWT_SECRET');
    rejects({ JWT_SECRET: 'x'.repeat(31) }, 'JWT_SECRET');
    rejects({ JWT_SECRET: 'x'.repeat(31), NODE_ENV: 'production' }, 'JWT_SECRET');
    assert.equal(loadConfig({ JWT_SECRET: 'x'.repeat(32) }).jwtSecret, 'x'.repeat(32));
    assert.equal(loadConfig({ JWT_SECRET: 'é'.repeat(16) }).jwtSecret, 'é'.repeat(16), '32 bytes of UTF-8');
  });

  it('DATABASE_URL', () => {
    for (const value of ['sqlite:', 'mysql://db/parley', './data/parley.db', 'postgres://[bad', 'memory']) {
      rejects({ DATABASE_URL: value }, 'DATABASE_URL');
    }
  });

  it('REDIS_URL', () => {
    for (const value of ['not a url', 'http://cache:6379', 'localhost:6379', 'cache']) {
      rejects({ REDIS_URL: value }, 'REDIS_URL');
    }
    assert.equal(loadConfig({ REDIS_URL: 'rediss://cache:6380' }).redisUrl, 'rediss://cache:6380');
  });

  it('JWT_JWKS_URL', () => {
    for (const value of ['not a url', 'ftp://idp/jwks', '/jwks.json']) rejects({ JWT_JWKS_URL: value }, 'JWT_JWKS_URL');
  });

  it('ALLOWED_ORIGINS with an entry that is not an origin', () => {
    for (const value of [
      'chat.example.com',
      'https://chat.example.com/path',
      'https://ok.example.com, nope',
      'https://chat.example.com?x=1',
      'file:///etc/passwd',
      'null',
    ]) {
      rejects({ ALLOWED_ORIGINS: value }, 'ALLOWED_ORIGINS');
    }
  });

  it('COMPRESSION', () => {
    for (const value of ['maybe', 'deflate', '2']) rejects({ COMPRESSION: value }, 'COMPRESSION');
  });

  it('HOST: an IP address or a plausible host name', () => {
    for (const value of [
      '0.0.0.0',
      '127.0.0.1',
      '::',
      '::1',
      'fe80::1%eth0',
      '::ffff:10.0.0.1',
      'localhost',
      'parley-1',
      'parley_web_1',
      'api.example.com',
      'api.example.com.',
      '10-0-0-1.internal',
      `${'a'.repeat(63)}.example`,
    ]) {
      assert.equal(loadConfig({ HOST: value }).host, value, value);
    }
    for (const value of [
      '[::1]',
      'http://localhost',
      'localhost:8000',
      '1.2.3',
      '256.1.1.1',
      '127.0.0.1.5',
      'bad host',
      '-leading.example',
      'trailing-.example',
      'a..b',
      '.example',
      `${'a'.repeat(64)}.example`,
      `${'abcdefghi.'.repeat(26)}com`,
      'héte',
      '0x7f.1',
      '*',
    ]) {
      const error = rejects({ HOST: value }, 'HOST');
      assert.ok(error.message.includes(value), `"${error.message}" quotes the value`);
    }
  });

  it('LOG_LEVEL', () => {
    for (const value of ['verbose', 'warning', 'all']) rejects({ LOG_LEVEL: value }, 'LOG_LEVEL');
  });
});

describe('start-up with a bad variable', () => {
  it('exits 1 with one stderr line naming the variable', async () => {
    const cwd = fileURLToPath(new URL('..', import.meta.url));
    const env: Record<string, string> = { PORT: 'abc', LOG_LEVEL: 'silent' };
    for (const name of ['PATH', 'HOME', 'SYSTEMROOT', 'TMPDIR']) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ['--import', 'tsx', 'src/main.ts'],
        { cwd, env, timeout: 20_000 },
        (_error, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }),
      );
    });
    assert.equal(result.code, 1, `exit code (stderr: ${result.stderr})`);
    const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
    assert.equal(lines.length, 1, `one line: ${JSON.stringify(result.stderr)}`);
    assert.match(lines[0] as string, /PORT/);
    assert.equal(result.stdout, '');
  });
});

describe('settings beyond the contract', () => {
  it('TRUST_PROXY: off by default; true, a hop count, or addresses and CIDR ranges', () => {
    assert.equal(loadConfig({}).trustProxy, false);
    assert.equal(loadConfig({ TRUST_PROXY: 'false' }).trustProxy, false);
    assert.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true);
    assert.equal(loadConfig({ TRUST_PROXY: '1' }).trustProxy, 1);
    assert.equal(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' }).trustProxy, '10.0.0.0/8,127.0.0.1');
    assert.throws(() => loadConfig({ TRUST_PROXY: 'everyone' }), /Invalid TRUST_PROXY/);
  });

  it('REDIS_KEY_PREFIX: parley: by default; 1-64 safe characters', () => {
    assert.equal(loadConfig({}).redisKeyPrefix, 'parley:');
    assert.equal(loadConfig({ REDIS_KEY_PREFIX: '{parley}:' }).redisKeyPrefix, '{parley}:');
    assert.throws(() => loadConfig({ REDIS_KEY_PREFIX: 'has space' }), /Invalid REDIS_KEY_PREFIX/);
    assert.throws(() => loadConfig({ REDIS_KEY_PREFIX: 'x'.repeat(65) }), /Invalid REDIS_KEY_PREFIX/);
  });

  it('ALLOWED_ORIGINS that lists no origin is refused', () => {
    assert.throws(() => loadConfig({ ALLOWED_ORIGINS: ',' }), /Invalid ALLOWED_ORIGINS/);
  });
});
