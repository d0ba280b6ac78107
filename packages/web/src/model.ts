/**
 * The app's pure logic: channel names, ordering and merging of messages,
 * how a message and a task event read. No DOM, so the unit tests run it in Node.
 */

export interface ChatMessage {
  id: string;
  channel: string;
  offset: number;
  epoch: string;
  from: string;
  data: unknown;
  ts: string;
}

export interface Task {
  id: string;
  title: string;
  description: string;
  done: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface TaskEvent {
  event: 'task.created' | 'task.updated' | 'task.deleted';
  task: Task;
}

/** A username as the server accepts it inside a channel name (PROTOCOL §2). */
export const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** What registration accepts (PROTOCOL §4). */
export const USERNAME = /^[a-z0-9_.-]{3,32}$/;

/** The `dm:` channel of two users: names sorted by code unit, as the server compares them. */
export function dmChannel(a: string, b: string): string {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/** The other user of a `dm:` channel, or undefined when `me` is not in it. */
export function dmPartner(channel: string, me: string): string | undefined {
  const [namespace, a, b] = channel.split(':');
  if (namespace !== 'dm' || a === undefined || b === undefined) return undefined;
  if (a === me) return b;
  if (b === me) return a;
  return undefined;
}

/**
 * The partner of a `dm.started` notification on `user:<me>` (the server sends
 * one with a conversation's first message, so a DM from someone new shows up
 * without the recipient ever opening it), or undefined for anything else.
 */
export function dmStartedBy(message: ChatMessage, me: string): string | undefined {
  if (message.channel !== `user:${me}`) return undefined;
  const data = message.data as { event?: unknown; channel?: unknown } | null;
  if (data === null || typeof data !== 'object' || data.event !== 'dm.started') return undefined;
  if (typeof data.channel !== 'string') return undefined;
  const partner = dmPartner(data.channel, me);
  return partner !== undefined && partner !== me && NAME.test(partner) ? partner : undefined;
}

/**
 * The room of a `room.added` notification on `user:<me>` (the server sends
 * one when someone adds this user to a private room), or undefined.
 */
export function roomAddedTo(message: ChatMessage, me: string): string | undefined {
  if (message.channel !== `user:${me}`) return undefined;
  const data = message.data as { event?: unknown; room?: unknown } | null;
  if (data === null || typeof data !== 'object' || data.event !== 'room.added') return undefined;
  return typeof data.room === 'string' && NAME.test(data.room) ? data.room : undefined;
}

/**
 * One idempotency key per draft. A send that failed (a timeout, above all)
 * may have been stored all the same; when the user sends the same text
 * again it goes with the same key, so the server stores it once. Editing
 * the text makes it another message, with a key of its own.
 */
export class DraftKeys {
  private failed: { text: string; key: string } | undefined;

  constructor(private readonly newKey: () => string) {}

  /** The key to send `text` with. */
  take(text: string): string {
    const key = this.failed?.text === text ? this.failed.key : this.newKey();
    this.failed = undefined;
    return key;
  }

  /** Sending `text` with `key` failed: the user may try it again. */
  fail(text: string, key: string): void {
    this.failed = { text, key };
  }
}

/**
 * `incoming` merged into `existing`, ordered by offset, each offset once.
 * History pages and live pushes overlap (a push can arrive while the page
 * that also holds it is on its way), so every path into a list goes through
 * here. A message from another epoch than the newest replaces the list: the
 * channel's history was lost and its offsets started again.
 */
export function mergeMessages(existing: readonly ChatMessage[], incoming: readonly ChatMessage[]): ChatMessage[] {
  if (incoming.length === 0) return [...existing];
  const epoch = incoming[incoming.length - 1]!.epoch;
  const byOffset = new Map<number, ChatMessage>();
  for (const message of existing) if (message.epoch === epoch) byOffset.set(message.offset, message);
  for (const message of incoming) if (message.epoch === epoch) byOffset.set(message.offset, message);
  return [...byOffset.values()].sort((a, b) => a.offset - b.offset);
}

/** The text of a message: `data.text` as the web client sends it, else the JSON, so nothing is hidden. */
export function messageText(data: unknown): string {
  if (typeof data === 'string') return data;
  if (data !== null && typeof data === 'object' && typeof (data as { text?: unknown }).text === 'string') {
    return (data as { text: string }).text;
  }
  return JSON.stringify(data) ?? String(data);
}

export function isTaskEvent(data: unknown): data is TaskEvent {
  if (data === null || typeof data !== 'object') return false;
  const { event, task } = data as Partial<TaskEvent>;
  return (
    (event === 'task.created' || event === 'task.updated' || event === 'task.deleted') &&
    task !== null &&
    typeof task === 'object' &&
    typeof task.id === 'string'
  );
}

/** One line for the notifications panel. */
export function describeNotification(message: ChatMessage, me: string): string {
  if (isTaskEvent(message.data)) {
    const { event, task } = message.data;
    const who = message.from === me ? 'You' : message.from === 'server' ? 'Someone' : message.from;
    const title = `“${task.title}”`;
    if (event === 'task.created') return `${who} added the task ${title}`;
    if (event === 'task.deleted') return `${who} deleted the task ${title}`;
    return task.done ? `${who} completed ${title}` : `${who} updated ${title}`;
  }
  const partner = dmStartedBy(message, me);
  if (partner !== undefined) return `${partner} sent you a direct message`;
  const added = roomAddedTo(message, me);
  if (added !== undefined) return `${message.from} added you to #${added}`;
  const data = message.data as { title?: unknown; body?: unknown } | null;
  if (data && typeof data === 'object' && typeof data.title === 'string') {
    return typeof data.body === 'string' ? `${data.title}: ${data.body}` : data.title;
  }
  return messageText(message.data);
}

/**
 * The task list after an event. Task events carry the whole task, so an
 * event is applied by replacing; `updatedAt` keeps a late event (or our own
 * request's answer racing the broadcast) from undoing a newer state, and
 * `deleted` keeps a late update from bringing a deleted task back.
 */
export function applyTaskEvent(tasks: readonly Task[], event: TaskEvent, deleted: Set<string>): Task[] {
  const { task } = event;
  if (event.event === 'task.deleted') {
    deleted.add(task.id);
    return tasks.filter((t) => t.id !== task.id);
  }
  if (deleted.has(task.id)) return [...tasks];
  const index = tasks.findIndex((t) => t.id === task.id);
  if (index === -1) return [...tasks, task];
  const current = tasks[index]!;
  if (Date.parse(current.updatedAt) > Date.parse(task.updatedAt)) return [...tasks];
  const next = [...tasks];
  next[index] = task;
  return next;
}

/**
 * Rate-limits typing notices: `shouldSend` is true at most once per
 * `intervalMs` while the user keeps typing.
 */
export class TypingThrottle {
  private last = Number.NEGATIVE_INFINITY;

  constructor(private readonly intervalMs = 2000) {}

  shouldSend(now: number): boolean {
    if (now - this.last < this.intervalMs) return false;
    this.last = now;
    return true;
  }

  /** After a send: the next keystroke starts a new burst of typing. */
  reset(): void {
    this.last = Number.NEGATIVE_INFINITY;
  }
}

/** "alice is typing…", "alice and bob are typing…", "3 people are typing…". */
export function typingText(users: readonly string[]): string {
  if (users.length === 0) return '';
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}

/** Messages from one author within this long read as one group. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;

export function startsGroup(previous: ChatMessage | undefined, message: ChatMessage): boolean {
  if (!previous || previous.from !== message.from) return true;
  if (!sameDay(previous.ts, message.ts)) return true;
  return Date.parse(message.ts) - Date.parse(previous.ts) > GROUP_WINDOW_MS;
}

export function sameDay(a: string, b: string): boolean {
  return new Date(a).toDateString() === new Date(b).toDateString();
}

export function formatTime(ts: string): string {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function formatDay(ts: string, now = new Date()): string {
  const date = new Date(ts);
  if (date.toDateString() === now.toDateString()) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return date.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' });
}

/** Where the app is, as kept in the URL's hash so a reload lands in the same place. */
export type Route =
  | { view: 'room'; room: string }
  | { view: 'dm'; user: string }
  | { view: 'tasks' }
  | { view: 'notifications' }
  | { view: 'home' };

export function parseRoute(hash: string): Route {
  const [view, name] = hash.replace(/^#\/?/, '').split('/');
  const decoded = name === undefined ? undefined : safeDecode(name);
  if (view === 'room' && decoded && NAME.test(decoded)) return { view: 'room', room: decoded };
  if (view === 'dm' && decoded && NAME.test(decoded)) return { view: 'dm', user: decoded };
  if (view === 'tasks') return { view: 'tasks' };
  if (view === 'notifications') return { view: 'notifications' };
  return { view: 'home' };
}

export function routeHash(route: Route): string {
  switch (route.view) {
    case 'room':
      return `#/room/${encodeURIComponent(route.room)}`;
    case 'dm':
      return `#/dm/${encodeURIComponent(route.user)}`;
    case 'home':
      return '#/';
    default:
      return `#/${route.view}`;
  }
}

function safeDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}
