import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';

/**
 * scrypt parameters. OWASP's Password Storage Cheat Sheet lists N=2^17, r=8,
 * p=1 and, as equivalent, N=2^15, r=8, p=3. We take the second: the same
 * work for an attacker but 32 MiB per hash instead of 128 MiB, which matters
 * when the libuv pool runs four logins at once. N=2^15 with p=1 would be a
 * third of the recommended work.
 */
const PARAMS = { N: 2 ** 15, r: 8, p: 3 } as const;
const SALT_BYTES = 16;
const KEY_BYTES = 64;

/**
 * Node's default maxmem (32 MiB) refuses N=2^15, r=8 by a few bytes of
 * overhead. The ceiling also bounds what a corrupt or hostile stored hash can
 * make us allocate.
 */
const MAX_MEMORY = 256 * 1024 * 1024;

const PREFIX = 'scrypt';

function derive(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // NFC so that the same password typed on two keyboards (é as one code point or two) matches.
    scrypt(password.normalize('NFC'), salt, keyLength, { ...options, maxmem: MAX_MEMORY }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

interface Decoded {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

function decode(encoded: string): Decoded | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== PREFIX) return undefined;
  const [N, r, p] = parts.slice(1, 4).map((part) => (/^\d{1,10}$/.test(part) ? Number(part) : Number.NaN)) as [
    number,
    number,
    number,
  ];
  // Power-of-two N, and a memory need (128·N·r) within MAX_MEMORY: anything else is not ours.
  if (!(N > 1 && (N & (N - 1)) === 0 && r >= 1 && p >= 1 && p <= 16 && 128 * N * r <= MAX_MEMORY / 2)) {
    return undefined;
  }
  const salt = Buffer.from(parts[4] ?? '', 'base64url');
  const hash = Buffer.from(parts[5] ?? '', 'base64url');
  if (salt.length < 8 || hash.length < 16) return undefined;
  return { N, r, p, salt, hash };
}

/** Hashes a password into a self-describing string `scrypt$N$r$p$salt$hash` (base64url salt and hash). */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, KEY_BYTES, PARAMS);
  return [PREFIX, PARAMS.N, PARAMS.r, PARAMS.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/**
 * Checks a password against a string from `hashPassword`, in constant time. A
 * malformed stored hash never matches.
 */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const decoded = decode(encoded);
  if (!decoded) return false;
  const { N, r, p, salt, hash } = decoded;
  const candidate = await derive(password, salt, hash.length, { N, r, p });
  return timingSafeEqual(candidate, hash);
}

/** True when a stored hash was made with other parameters than today's, so a successful login should rehash. */
export function needsRehash(encoded: string): boolean {
  const decoded = decode(encoded);
  return (
    !decoded ||
    decoded.N !== PARAMS.N ||
    decoded.r !== PARAMS.r ||
    decoded.p !== PARAMS.p ||
    decoded.hash.length !== KEY_BYTES
  );
}

let dummy: Promise<string> | undefined;

/** Computes the dummy hash ahead of the first login, so even that one takes no longer for an unknown user. */
export function prepareDummyHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(16).toString('base64url'));
  return dummy;
}

/**
 * Spends the same time as `verifyPassword` on a real hash and fails. Called
 * when the user does not exist, so the response time does not tell an
 * attacker which usernames are registered.
 */
export async function verifyAgainstDummy(password: string): Promise<false> {
  await verifyPassword(password, await prepareDummyHash());
  return false;
}
