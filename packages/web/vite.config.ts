import { defaultClientConditions, defineConfig } from 'vite';

/** In `npm run dev`, the API and the WebSocket are those of a server on port 8000 (`npm start`). */
const server = process.env.PARLEY_URL ?? 'http://localhost:8000';
const api = [
  '/auth',
  '/me',
  '/rooms',
  '/channels',
  '/tasks',
  '/publish',
  '/readyz',
  '/healthz',
  '/docs',
  '/openapi.json',
];

export default defineConfig({
  resolve: {
    // @parley/client from its TypeScript source (its package.json's "@parley/source" condition), not a
    // dist/ that would have to be built first and could be stale.
    conditions: ['@parley/source', ...defaultClientConditions],
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
  },
  server: {
    proxy: {
      ...Object.fromEntries(api.map((path) => [path, server])),
      '/ws': { target: server.replace(/^http/, 'ws'), ws: true },
    },
  },
});
