/**
 * The plaintext baseline: the same stack as the product (Express 5, multer) without
 * encryption, hashing, a database or durability. Uploads are stored as they are by
 * multer's diskStorage (or piped to a file for PUT) and served with res.sendFile.
 * It answers the same paths as the product so the client can point at either server.
 *
 * Env: PORT (0 = any), HOST (loopback), UPLOADS_DIR. Prints "baseline listening on PORT".
 * Exits when its parent goes away (IPC channel closed), so it never outlives the bench.
 */
import express from 'express';
import multer from 'multer';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { serveBaseline } from './lib.mjs';

const root = path.resolve(process.env.UPLOADS_DIR ?? 'baseline-uploads');
fs.mkdirSync(root, { recursive: true });
const host = process.env.HOST ?? '127.0.0.1';
const newId = () => randomBytes(16).toString('hex');
const ID = /^[0-9a-f]{32}$/;

const upload = multer({
  storage: multer.diskStorage({
    destination: root,
    filename: (_req, _file, cb) => cb(null, newId()),
  }),
}).array('file', 20);

const app = express();
app.disable('x-powered-by');

app.get('/healthz', (_req, res) => {
  res.json({ status: 'ok' });
});

app.post('/api/v1/files', upload, (req, res) => {
  const files = (req.files ?? []).map((f) => ({ id: f.filename, name: f.originalname, size: f.size }));
  if (!files.length) return res.status(400).json({ error: 'no file part' });
  res.status(201).json({ files });
});

app.put('/api/v1/uploads/:name', async (req, res) => {
  const id = newId();
  const file = path.join(root, id);
  try {
    await pipeline(req, fs.createWriteStream(file));
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw err;
  }
  res.status(201).json({ file: { id, name: req.params.name, size: fs.statSync(file).size } });
});

app.get('/api/v1/files/:id/content', (req, res, next) => {
  if (!ID.test(req.params.id)) return res.status(404).end();
  res.sendFile(req.params.id, { root, dotfiles: 'deny' }, (err) => {
    if (err && !res.headersSent) next(err);
  });
});

app.delete('/api/v1/files/:id', (req, res) => {
  if (!ID.test(req.params.id)) return res.status(404).end();
  fs.rmSync(path.join(root, req.params.id), { force: true });
  res.status(204).end();
});

serveBaseline(app, host, 'baseline');
