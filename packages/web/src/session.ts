/**
 * Signing in and the HTTP API. Tokens live in sessionStorage: they survive a
 * reload but not the closing of the tab, and no other tab shares them, so two
 * tabs never spend the same single-use refresh token.
 */

const STORAGE_KEY = 'parley.session';
/** Renew this long before the access token expires (or at 80% of a shorter lifetime). */
const REFRESH_MARGIN_MS = 60_000;

interface StoredTokens {
  user: string;
  accessToken: string;
  refreshToken: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  lifetimeMs: number;
}

interface TokenPair {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

/** An HTTP API failure: the server's error code and message, or `network` when no answer came. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

async function call<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let parsed: any;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const error = parsed?.error;
    throw new ApiError(
      response.status,
      typeof error?.code === 'string' ? error.code : 'internal',
      typeof error?.message === 'string' ? error.message : `HTTP ${response.status}`,
    );
  }
  return parsed as T;
}

export async function register(username: string, password: string): Promise<void> {
  await call('POST', '/auth/register', { username, password });
}

export class Session {
  private refreshing: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly expiredListeners = new Set<() => void>();
  private ended = false;

  private constructor(private tokens: StoredTokens) {
    this.schedule();
  }

  static async signIn(username: string, password: string): Promise<Session> {
    const pair = await call<TokenPair>('POST', '/auth/token', { username, password });
    const session = new Session(toStored(username, pair));
    session.save();
    return session;
  }

  /** The session of this tab, if it signed in and has not signed out. */
  static restore(): Session | undefined {
    try {
      const raw = sessionStorage.getItem(STORAGE_KEY);
      if (!raw) return undefined;
      const tokens = JSON.parse(raw) as StoredTokens;
      if (typeof tokens.user !== 'string' || typeof tokens.refreshToken !== 'string') return undefined;
      return new Session(tokens);
    } catch {
      return undefined;
    }
  }

  get user(): string {
    return this.tokens.user;
  }

  /** Called once when the session cannot be renewed (refresh token spent, revoked or expired). */
  onExpired(listener: () => void): void {
    this.expiredListeners.add(listener);
  }

  /** An access token good for at least a while: renewed first when it is close to expiry. */
  async accessToken(): Promise<string> {
    if (Date.now() >= this.renewAt()) await this.refresh();
    return this.tokens.accessToken;
  }

  /** An API call with the bearer token; a 401 renews the token once and tries again. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const token = await this.accessToken();
    try {
      return await call<T>(method, path, body, token);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401 || this.ended) throw error;
      // Requests refused together need one renewal between them, not one each.
      if (this.tokens.accessToken === token) await this.refresh();
      return call<T>(method, path, body, this.tokens.accessToken);
    }
  }

  signOut(): void {
    this.ended = true;
    clearTimeout(this.timer);
    sessionStorage.removeItem(STORAGE_KEY);
  }

  /**
   * One refresh at a time: a refresh token works once, and presenting it
   * twice revokes every refresh token of the user.
   */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    if (this.ended) throw new ApiError(401, 'unauthorized', 'signed out');
    let pair: TokenPair;
    try {
      pair = await call<TokenPair>('POST', '/auth/refresh', { refresh_token: this.tokens.refreshToken });
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 400)) this.expire();
      else this.schedule(10_000);
      throw error;
    }
    if (this.ended) return;
    this.tokens = toStored(this.tokens.user, pair);
    this.save();
    this.schedule();
  }

  private expire(): void {
    if (this.ended) return;
    this.signOut();
    for (const listener of this.expiredListeners) listener();
  }

  private renewAt(): number {
    const margin = Math.min(REFRESH_MARGIN_MS, this.tokens.lifetimeMs * 0.2);
    return this.tokens.expiresAt - margin;
  }

  /** Renews ahead of expiry, so neither the socket nor a request meets an expired token. */
  private schedule(delayMs = Math.max(0, this.renewAt() - Date.now())): void {
    clearTimeout(this.timer);
    if (this.ended) return;
    this.timer = setTimeout(() => {
      this.refresh().catch(() => undefined);
    }, delayMs);
  }

  private save(): void {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.tokens));
  }
}

function toStored(user: string, pair: TokenPair): StoredTokens {
  const lifetimeMs = pair.expires_in * 1000;
  return {
    user,
    accessToken: pair.access_token,
    refreshToken: pair.refresh_token,
    expiresAt: Date.now() + lifetimeMs,
    lifetimeMs,
  };
}
