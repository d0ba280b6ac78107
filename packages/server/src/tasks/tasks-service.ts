import { randomBytes } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import type { Logger } from 'pino';
import type { ChannelService } from '../channels/channel-service.ts';
import { type ChannelName, parseChannel } from '../channels/names.ts';
import { badRequest, notFound } from '../errors.ts';
import { type Tables, toMillis } from '../store/schema.ts';

export interface Task {
  id: string;
  title: string;
  description: string;
  done: boolean;
  createdBy: string;
  /** ISO 8601 */
  createdAt: string;
  /** ISO 8601 */
  updatedAt: string;
}

export type TaskEvent = 'task.created' | 'task.updated' | 'task.deleted';

export interface TaskChanges {
  title?: string | undefined;
  description?: string | undefined;
  done?: boolean | undefined;
}

export const TASKS_CHANNEL: ChannelName = parseChannel('topic:tasks');

type TaskRow = Selectable<Tables['tasks']>;

function toTask(row: TaskRow): Task {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    done: row.done === 1,
    createdBy: row.created_by,
    createdAt: new Date(toMillis(row.created_at)).toISOString(),
    updatedAt: new Date(toMillis(row.updated_at)).toISOString(),
  };
}

let lastMillis = 0;
let sequence = 0;

/**
 * A UUIDv7 (RFC 9562): the creation time leads, and a counter in `rand_a`
 * keeps ids made in the same millisecond in order, so (created_at, id) sorts
 * the board oldest first with no ties.
 */
export function taskId(now = Date.now()): string {
  if (now > lastMillis) {
    lastMillis = now;
    sequence = 0;
  } else {
    sequence += 1;
    // 4096 ids in one millisecond: borrow the next one so the order holds.
    if (sequence > 0xfff) {
      lastMillis += 1;
      sequence = 0;
    }
  }
  const bytes = randomBytes(16);
  bytes.writeUIntBE(lastMillis, 0, 6);
  bytes[6] = 0x70 | (sequence >> 8);
  bytes[7] = sequence & 0xff;
  bytes[8] = 0x80 | ((bytes[8] ?? 0) & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The one shared task board. Every change is written first and then
 * published to `topic:tasks` as `{event, task}`, so a subscriber that reacts
 * to an event by reading the board already finds the change.
 */
export class TasksService {
  /**
   * Changes run one at a time on this instance, so the events reach
   * `topic:tasks` in the order the rows changed and the last event about a
   * task is its current state.
   */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Tables>,
    private readonly channels: ChannelService,
    private readonly log: Logger,
  ) {}

  async list(): Promise<Task[]> {
    const rows = await this.db.selectFrom('tasks').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toTask);
  }

  async get(id: string): Promise<Task> {
    const row = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`no task "${id}"`);
    return toTask(row);
  }

  create(input: { title: string; description?: string | undefined }, actor: string): Promise<Task> {
    return this.serially(async () => {
      const now = Date.now();
      const row: TaskRow = {
        id: taskId(now),
        title: input.title,
        description: input.description ?? '',
        done: 0,
        created_by: actor,
        created_at: now,
        updated_at: now,
      };
      await this.db.insertInto('tasks').values(row).execute();
      const task = toTask(row);
      await this.announce('task.created', task, actor);
      return task;
    });
  }

  update(id: string, changes: TaskChanges, actor: string): Promise<Task> {
    const values: Partial<TaskRow> = {};
    if (changes.title !== undefined) values.title = changes.title;
    if (changes.description !== undefined) values.description = changes.description;
    if (changes.done !== undefined) values.done = changes.done ? 1 : 0;
    if (Object.keys(values).length === 0) {
      return Promise.reject(badRequest('give at least one of title, description, done'));
    }
    return this.serially(async () => {
      const row = await this.db
        .updateTable('tasks')
        .set({ ...values, updated_at: Date.now() })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirst();
      if (!row) throw notFound(`no task "${id}"`);
      const task = toTask(row);
      await this.announce('task.updated', task, actor);
      return task;
    });
  }

  remove(id: string, actor: string): Promise<Task> {
    return this.serially(async () => {
      const row = await this.db.deleteFrom('tasks').where('id', '=', id).returningAll().executeTakeFirst();
      if (!row) throw notFound(`no task "${id}"`);
      const task = toTask(row);
      await this.announce('task.deleted', task, actor);
      return task;
    });
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async announce(event: TaskEvent, task: Task, actor: string): Promise<void> {
    try {
      await this.channels.publish(TASKS_CHANNEL, actor, { event, task });
    } catch (error) {
      // The change is committed: failing the request would invite a retry that
      // duplicates it. Clients that missed the event reload the board.
      this.log.warn({ err: error, event, task: task.id }, 'task event not published');
    }
  }
}
