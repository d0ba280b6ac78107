import type { PresenceEntry, PresenceStore } from './presence.ts';

/** The embedded presence store: one instance only; several need REDIS_URL. */
export class MemoryPresenceStore implements PresenceStore {
  readonly name = 'memory';
  /** channel → user → connection ids */
  private readonly channels = new Map<string, Map<string, Set<string>>>();

  async add(channel: string, user: string, connectionId: string): Promise<boolean> {
    let users = this.channels.get(channel);
    if (!users) {
      users = new Map();
      this.channels.set(channel, users);
    }
    let connections = users.get(user);
    if (!connections) {
      connections = new Set();
      users.set(user, connections);
    }
    const joined = connections.size === 0;
    connections.add(connectionId);
    return joined;
  }

  async remove(channel: string, user: string, connectionId: string): Promise<boolean> {
    const users = this.channels.get(channel);
    const connections = users?.get(user);
    if (!users || !connections?.delete(connectionId)) return false;
    if (connections.size > 0) return false;
    users.delete(user);
    if (users.size === 0) this.channels.delete(channel);
    return true;
  }

  async list(channel: string): Promise<PresenceEntry[]> {
    const users = this.channels.get(channel);
    if (!users) return [];
    return [...users]
      .map(([user, connections]) => ({ user, connections: connections.size }))
      .sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
  }

  async reap(_channels: string[]): Promise<Array<{ channel: string; user: string }>> {
    // One process: its connections die with it, so there is never anyone to reap.
    return [];
  }

  isReady(): boolean {
    // In-process: usable whenever the process runs (also after close, which only forgets).
    return true;
  }

  async close(): Promise<void> {
    this.channels.clear();
  }
}
