/**
 * The honest plaintext baseline: what any server that is careful with files must do, without
 * encryption. Per request it looks up the bearer token (SHA-256 of it) in a SQLite table;
 * an upload writes the blob, fsyncs it, then inserts the file row and an audit row in one
 * transaction before answering; a download looks up the file row, inserts an audit row and
 * serves the blob with res.sendFile. Same stack as the product (Express 5, multer,
 * better-sqlite3 with WAL and synchronous=NORMAL, as src/db/database.ts sets them), so
 * the gap between it and sfs is what encryption and the product's own extras cost.
 *
 * Env: PORT (0 = any), HOST (loopback), UPLOADS_DIR, BASELINE_TOKEN (the one valid bearer
 * token; only its hash is stored). Prints "honest baseline listening on PORT".
 * Exits when its parent goes away (IPC channel closed), so it never outlives the bench.
 */
import Database from 'better-sqlite3';
import express from 'express';
import multer from 'multer';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { serveBaseline } from './lib.mjs';

const root = path.resolve(process.env.UPLOADS_DIR ?? 'honest-baseline-uploads');
const blobs = path.join(root, 'blobs');
fs.mkdirSync(blobs, { recursive: true });
const host = process.env.HOST ?? '127.0.0.1';
const token = process.env.BASELINE_TOKEN;
if (!token) throw new Error('BASELINE_TOKEN is required');
const sha = (s) => createHash('sha256').update(s).digest('hex');
const newId = () => randomBytes(16).toString('hex');
const ID = /^[0-9a-f]{32}$/;

const db = new Database(path.join(root, 'db.sqlite'));
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`
  CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, user_id INTEGER, action TEXT NOT NULL, file_id TEXT);
`);
db.prepare('INSERT OR REPLACE INTO tokens (hash, user_id) VALUES (?, 1)').run(sha(token));
const q = {
  token: db.prepare('SELECT user_id FROM tokens WHERE hash = ? AND revoked = 0'),
  insertFile: db.prepare('INSERT INTO files (id, user_id, name, size, created_at) VALUES (?, ?, ?, ?, ?)'),
  file: db.prepare('SELECT id, size FROM files WHERE id = ? AND user_id = ?'),
  deleteFile: db.prepare('DELETE FROM files WHERE id = ? AND user_id = ?'),
  audit: db.prepare('INSERT INTO audit (at, user_id, action, file_id) VALUES (?, ?, ?, ?)'),
};
const commitFile = db.transaction((f, userId) => {
  q.insertFile.run(f.id, userId, f.name, f.size, Date.now());
  q.audit.run(Date.now(), userId, 'file.upload', f.id);
});

/** Bearer-token check: one indexed lookup of the token's hash per request. */
function auth(req, res, next) {
  const m = /^Bearer (.+)$/.exec(req.get('authorization') ?? '');
  const row = m && q.token.get(sha(m[1]));
  if (!row) return res.status(401).json({ error: 'unauthorized' });
  req.userId = row.user_id;
  next();
}

/** fsync of a written blob: the row must never point at bytes the kernel has not persisted. */
async function fsyncFile(file) {
  const h = await fs.promises.open(file, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

const upload = multer({
  storage: multer.diskStorage({ destination: blobs, filename: (_req, _file, cb) => cb(null, newId()) }),
}).array('file', 20);

const app = express();
app.disable('x-powered-by');

app.get('/healthz', (_req, res) => {
  res.json({ status: 'ok' });
});

app.post('/api/v1/files', auth, upload, async (req, res) => {
  const files = (req.files ?? []).map((f) => ({ id: f.filename, name: f.originalname, size: f.size }));
  if (!files.length) return res.status(400).json({ error: 'no file part' });
  for (const f of files) await fsyncFile(path.join(blobs, f.id));
  for (const f of files) commitFile(f, req.userId);
  res.status(201).json({ files });
});

app.put('/api/v1/uploads/:name', auth, async (req, res) => {
  const id = newId();
  const file = path.join(blobs, id);
  try {
    await pipeline(req, fs.createWriteStream(file));
    await fsyncFile(file);
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw err;
  }
  const f = { id, name: req.params.name, size: fs.statSync(file).size };
  commitFile(f, req.userId);
  res.status(201).json({ file: f });
});

app.get('/api/v1/files/:id/content', auth, (req, res, next) => {
  const row = ID.test(req.params.id) && q.file.get(req.params.id, req.userId);
  if (!row) return res.status(404).end();
  q.audit.run(Date.now(), req.userId, 'file.download', row.id);
  res.sendFile(row.id, { root: blobs, dotfiles: 'deny' }, (err) => {
    if (err && !res.headersSent) next(err);
  });
});

app.delete('/api/v1/files/:id', auth, (req, res) => {
  if (!ID.test(req.params.id) || !q.deleteFile.run(req.params.id, req.userId).changes) return res.status(404).end();
  q.audit.run(Date.now(), req.userId, 'file.delete', req.params.id);
  fs.rmSync(path.join(blobs, req.params.id), { force: true });
  res.status(204).end();
});

serveBaseline(app, host, 'honest baseline');
