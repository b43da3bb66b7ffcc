/**
 * /api/docs: the human API reference, rendered by Swagger UI (swagger-ui-dist, served from
 * node_modules by this app, no CDN) from /api/v1/openapi.json. The page gets its own CSP:
 * scripts, styles and fetches from this origin only, images also as data: URLs (Swagger UI's
 * stylesheet uses them for icons); nothing inline.
 */
import express, { Router } from 'express';
import helmet from 'helmet';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { API_PREFIX } from '../api-table.js';

const require = createRequire(import.meta.url);
const SWAGGER_DIST = path.dirname(require.resolve('swagger-ui-dist/package.json'));
const INIT_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'public', 'api-docs.js');

/** The only files of swagger-ui-dist the page needs (its index.html has an inline script; not served). */
const ASSETS = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png', 'favicon-16x16.png']);

/** The CSP of the docs page; `publicUrl` (PUBLIC_URL) may differ from the page's origin, and "Try it out" calls it. */
export function apiDocsCsp(publicUrl?: string) {
  const connect = ["'self'", ...(publicUrl ? [new URL(publicUrl).origin] : [])];
  return {
    useDefaults: false,
    directives: {
      defaultSrc: ["'none'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", 'data:'],
      connectSrc: connect,
      baseUri: ["'none'"],
      formAction: ["'none'"],
      frameAncestors: ["'none'"],
    },
  };
}

/** Routes under /api/docs: the page, its init script and the Swagger UI assets. */
export function apiDocsRoutes(publicUrl?: string): Router {
  const r = Router({ strict: false });
  r.use(helmet.contentSecurityPolicy(apiDocsCsp(publicUrl)));
  r.get('/', (_req, res) => {
    res.render('api-docs', { assets: '/api/docs/assets', specUrl: `${API_PREFIX}/openapi.json` });
  });
  r.get('/assets/init.js', (_req, res) => {
    res.sendFile(INIT_SCRIPT, { maxAge: '1h' });
  });
  const assets = express.static(SWAGGER_DIST, { index: false, maxAge: '1d', fallthrough: true });
  r.use('/assets', (req, res, next) => {
    if (!ASSETS.has(req.path.replace(/^\//, ''))) return next();
    assets(req, res, next);
  });
  return r;
}
