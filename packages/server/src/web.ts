import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AppContext } from './app.ts';

/** Where `npm run build -w @parley/web` writes the web client. */
export const WEB_DIST = fileURLToPath(new URL('../../web/dist/', import.meta.url));

/**
 * The app renders user content as text only; this policy is the second line
 * of defence should that ever slip: no inline or foreign script, no framing.
 * `ws:`/`wss:` are listed because older browsers do not let 'self' cover them.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self' ws: wss:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function webHeaders(distDir: string) {
  const assets = join(distDir, 'assets', '/');
  return (reply: FastifyReply, path: string): void => {
    if (path.endsWith('.html')) {
      // The page names the current hashed bundles, so it must be revalidated after every deploy.
      reply.header('cache-control', 'no-cache');
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
      reply.header('referrer-policy', 'no-referrer');
    } else if (path.startsWith(assets)) {
      // Vite puts a content hash in every file name under assets/: a changed file is a new URL.
      reply.header('cache-control', 'public, max-age=31536000, immutable');
    } else {
      reply.header('cache-control', 'public, max-age=3600');
    }
    reply.header('x-content-type-options', 'nosniff');
  };
}

/**
 * GET / serves the web client built into packages/web/dist. Until it is
 * built this is a small page that says what is running, where the docs are
 * and how to build the client.
 */
export function registerWebRoutes(app: FastifyInstance, ctx: AppContext, distDir: string = WEB_DIST): void {
  if (existsSync(join(distDir, 'index.html'))) {
    app.register(fastifyStatic, {
      root: distDir,
      // One route per file present at start-up instead of a catch-all `/*`:
      // nothing the API, /docs or the not-found handler answers can be shadowed.
      wildcard: false,
      index: ['index.html'],
      cacheControl: false,
      etag: true,
      lastModified: true,
      serveDotFiles: false,
      setHeaders: webHeaders(distDir),
    });
    return;
  }
  const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>Parley</h1>
<p>Real-time chat server, instance <code>${ctx.config.instanceId.replace(/[<>&"]/g, '')}</code>.</p>
<p>The web client is not built: run <code>npm run build -w @parley/web</code> (or <code>npm install</code>,
which builds it) and restart the server.</p>
<ul><li><a href="/docs">HTTP API (Swagger UI)</a></li><li><a href="/openapi.json">OpenAPI document</a></li>
<li>WebSocket: <code>/ws</code>, <code>/ws/rooms/{room}</code>, <code>/ws/notifications/{topic}</code></li></ul>
</body></html>`;
  app.get('/', { schema: { hide: true } }, async (_request, reply) => {
    reply.type('text/html; charset=utf-8').send(page);
  });
}
