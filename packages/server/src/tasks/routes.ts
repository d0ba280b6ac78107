import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../app.ts';
import { principalOf, requireUser } from '../auth/http-auth.ts';
import { BEARER, errors } from '../schemas.ts';
import { TasksService } from './tasks-service.ts';

const Title = Type.String({ minLength: 1, maxLength: 200 });
const Description = Type.String({ maxLength: 2000 });

const Task = Type.Object(
  {
    id: Type.String(),
    title: Title,
    description: Description,
    done: Type.Boolean(),
    createdBy: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
  },
  { description: 'A task' },
);

const TaskParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

const CHANGES =
  'Every change is published to `topic:tasks` as `{"event": "task.created" | "task.updated" | "task.deleted", "task": {…}}`.';

/** The shared task board (PROTOCOL §4). */
export function registerTaskRoutes(fastify: FastifyInstance, ctx: AppContext): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const tasks = new TasksService(ctx.database.db, ctx.channels, ctx.log);
  const onRequest = requireUser(ctx.tokens);

  app.get(
    '/tasks',
    {
      onRequest,
      schema: {
        tags: ['tasks'],
        summary: 'Every task, oldest first',
        security: BEARER,
        response: { 200: Type.Object({ tasks: Type.Array(Task) }), ...errors(401) },
      },
    },
    async () => ({ tasks: await tasks.list() }),
  );

  app.post(
    '/tasks',
    {
      onRequest,
      schema: {
        tags: ['tasks'],
        summary: 'Create a task',
        description: CHANGES,
        security: BEARER,
        body: Type.Object({ title: Title, description: Type.Optional(Description) }),
        response: { 201: Task, ...errors(400, 401) },
      },
    },
    async (request, reply) => {
      const task = await tasks.create(request.body, principalOf(request).user);
      return reply.code(201).send(task);
    },
  );

  app.get(
    '/tasks/:id',
    {
      onRequest,
      schema: {
        tags: ['tasks'],
        summary: 'One task',
        security: BEARER,
        params: TaskParams,
        response: { 200: Task, ...errors(400, 401, 404) },
      },
    },
    async (request) => tasks.get(request.params.id),
  );

  app.patch(
    '/tasks/:id',
    {
      onRequest,
      schema: {
        tags: ['tasks'],
        summary: 'Change a task: any of title, description, done (at least one)',
        description: CHANGES,
        security: BEARER,
        params: TaskParams,
        body: Type.Object(
          { title: Type.Optional(Title), description: Type.Optional(Description), done: Type.Optional(Type.Boolean()) },
          { minProperties: 1, additionalProperties: false },
        ),
        response: { 200: Task, ...errors(400, 401, 404) },
      },
    },
    async (request) => tasks.update(request.params.id, request.body, principalOf(request).user),
  );

  app.delete(
    '/tasks/:id',
    {
      onRequest,
      schema: {
        tags: ['tasks'],
        summary: 'Delete a task; the `task.deleted` event carries the task as it was',
        description: CHANGES,
        security: BEARER,
        params: TaskParams,
        response: { 204: Type.Null({ description: 'Deleted' }), ...errors(400, 401, 404) },
      },
    },
    async (request, reply) => {
      await tasks.remove(request.params.id, principalOf(request).user);
      return reply.code(204).send(null);
    },
  );
}
