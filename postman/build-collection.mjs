#!/usr/bin/env node
// Source of the Postman collection. Test scripts are written here as plain functions (so they
// can be read and linted), and this file writes secure-file-sharing.postman_collection.json,
// the file you import into Postman. Run `node postman/build-collection.mjs` after editing;
// `--check` exits 1 when the committed JSON differs (test/postman.test.ts runs it).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(HERE, 'secure-file-sharing.postman_collection.json');

/** The body of a function as Postman script lines (Postman runs scripts as plain statements). */
function script(fn) {
  const src = fn.toString();
  const body = src.slice(src.indexOf('{') + 1, src.lastIndexOf('}'));
  const lines = body.split('\n');
  while (lines.length && !lines[0].trim()) lines.shift();
  while (lines.length && !lines.at(-1).trim()) lines.pop();
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^ */)[0].length));
  return lines.map((l) => l.slice(indent));
}

const url = (raw) => {
  const [base, query] = raw.split('?');
  const u = { raw, host: ['{{baseUrl}}'], path: base.replace('{{baseUrl}}/', '').split('/') };
  if (query) u.query = query.split('&').map((kv) => ({ key: kv.split('=')[0], value: kv.split('=').slice(1).join('=') }));
  return u;
};
const json = (obj) => ({ mode: 'raw', raw: JSON.stringify(obj, null, 2), options: { raw: { language: 'json' } } });
const JSON_HEADER = { key: 'Content-Type', value: 'application/json' };
const NO_AUTH = { type: 'noauth' };
const basic = (password) => ({
  type: 'basic',
  basic: [
    { key: 'username', value: 'recipient', type: 'string' },
    { key: 'password', value: password, type: 'string' },
  ],
});

/** One request item. */
function req(name, { method = 'GET', path: p, headers = [], body, auth, description, prerequest, test }) {
  const item = {
    name,
    request: { method, header: headers, url: url(`{{baseUrl}}${p}`), ...(description ? { description } : {}) },
    event: [],
  };
  if (body) item.request.body = body;
  if (auth) item.request.auth = auth;
  if (prerequest) item.event.push({ listen: 'prerequest', script: { type: 'text/javascript', exec: script(prerequest) } });
  item.event.push({ listen: 'test', script: { type: 'text/javascript', exec: script(test) } });
  return item;
}

const folder = (name, description, item) => ({ name, description, item });

// Before every request: skip ngrok's browser warning page, so a tunnel URL works as baseUrl.
const collectionPrerequest = script(function () {
  pm.request.headers.upsert({ key: 'ngrok-skip-browser-warning', value: '1' });
});

// ---------------------------------------------------------------------------------------------
// The collection-level test script: helpers the request scripts call (`sfs.*`) and the
// checks every response must pass.
// ---------------------------------------------------------------------------------------------
const collectionTest = script(function () {
  // Helpers for the request test scripts, which Postman runs after this one in the same context.
  sfs = {
    /** SHA-256 (hex) of the raw response bytes, binary-safe. */
    sha256(buffer) {
      const CryptoJS = require('crypto-js');
      const words = [];
      for (let i = 0; i < buffer.length; i++) words[i >>> 2] |= buffer[i] << (24 - (i % 4) * 8);
      return CryptoJS.SHA256(CryptoJS.lib.WordArray.create(words, buffer.length)).toString(CryptoJS.enc.Hex);
    },
    /** Asserts an RFC 9457 problem with this status and code. */
    problem(status, code) {
      pm.test(`status is ${status}`, () => pm.response.to.have.status(status));
      pm.test('Content-Type is application/problem+json', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/problem\+json/));
      const body = pm.response.json();
      pm.test(`problem code is ${code}`, () => {
        pm.expect(body.code).to.equal(code);
        pm.expect(body.status).to.equal(status);
        pm.expect(body.type).to.equal(`urn:sfs:problem:${code}`);
        pm.expect(body.title).to.be.a('string').and.not.empty;
        pm.expect(body.detail).to.be.a('string').and.not.empty;
        pm.expect(body.requestId).to.equal(pm.response.headers.get('X-Request-Id'));
      });
      return body;
    },
  };

  // Checks for every response: a request id to quote, no framework banner, never a stack trace.
  pm.test('has an X-Request-Id', () => pm.expect(pm.response.headers.get('X-Request-Id')).to.be.a('string').and.not.empty);
  pm.test('no X-Powered-By', () => pm.expect(pm.response.headers.has('X-Powered-By')).to.be.false);
  pm.test('no stack trace in the body', () => pm.expect(pm.response.text()).not.to.match(/\n\s+at [^\n]+:\d+:\d+/));
});

// ---------------------------------------------------------------------------------------------
const setup = folder('1. Setup and token', 'Create the first admin (only on a fresh server; leave setupCode empty otherwise) and get an API token.', [
  req('Setup: create the first admin', {
    method: 'POST',
    path: '/api/v1/setup',
    auth: NO_AUTH,
    headers: [JSON_HEADER],
    body: json({ setupCode: '{{setupCode}}', username: '{{username}}', password: '{{password}}' }),
    description: 'Needs the one-time code from the server log or data/setup-code. Skipped when the environment has no setupCode.',
    prerequest() {
      if (!pm.environment.get('setupCode')) pm.execution.skipRequest();
    },
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('the first user is an admin, and no secret comes back', () => {
        pm.expect(body.user.username).to.equal(pm.environment.get('username'));
        pm.expect(body.user.role).to.equal('admin');
        pm.expect(body.user.id).to.match(/^[0-9a-f]{32}$/);
        pm.expect(pm.response.text()).not.to.include(pm.environment.get('password'));
      });
    },
  }),
  req('Get an API token', {
    method: 'POST',
    path: '/api/v1/auth/tokens',
    auth: NO_AUTH,
    headers: [JSON_HEADER],
    body: json({ username: '{{username}}', password: '{{password}}', name: 'postman', expiresInSeconds: 3600 }),
    description: 'An account with a second factor also needs `otp`: set the environment variable `otp` to the current code of the authenticator app (or a recovery code) just before the run; without it the answer is 401 otp_required.',
    prerequest() {
      // Accounts with two-factor authentication: the current code goes in "otp".
      const otp = pm.environment.get('otp');
      if (otp) {
        const body = JSON.parse(pm.request.body.raw);
        body.otp = String(otp);
        pm.request.body.raw = JSON.stringify(body, null, 2);
      }
    },
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('a token shown once, expiring in an hour', () => {
        pm.expect(body.token).to.match(/^sfs_[A-Za-z0-9_-]{43}$/);
        pm.expect(body.name).to.equal('postman');
        const ttl = Date.parse(body.expiresAt) - Date.parse(body.createdAt);
        pm.expect(ttl).to.be.within(3599000, 3601000);
      });
      pm.collectionVariables.set('token', body.token);
      pm.collectionVariables.set('tokenId', body.id);
    },
  }),
  req('Who am I', {
    path: '/api/v1/me',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('the token belongs to the configured user, with storage use', () => {
        pm.expect(body.username).to.equal(pm.environment.get('username'));
        pm.expect(body.usageBytes).to.be.a('number');
        pm.expect(body).to.not.have.property('passwordHash');
      });
      pm.collectionVariables.set('usageBefore', body.usageBytes);
    },
  }),
]);

const files = folder('2. Files', 'Upload (multipart and raw), list, metadata, full and ranged download with checksum checks.', [
  req('Upload (multipart form-data) with a checksum', {
    method: 'POST',
    path: '/api/v1/files',
    description: 'The sha256 field must come BEFORE the file part it applies to.',
    body: {
      mode: 'formdata',
      formdata: [
        { key: 'sha256', value: '{{sampleSha256}}', type: 'text' },
        { key: 'file', type: 'file', src: 'files/sample.bin' },
      ],
    },
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('one file stored with the checksum we sent', () => {
        pm.expect(body.files).to.have.length(1);
        const f = body.files[0];
        pm.expect(f.name).to.equal('sample.bin');
        pm.expect(f.size).to.equal(1024);
        pm.expect(f.sha256).to.equal(pm.environment.get('sampleSha256'));
        pm.expect(f.id).to.match(/^[0-9a-f]{32}$/);
      });
      pm.collectionVariables.set('fileId', body.files[0].id);
    },
  }),
  req('Upload (raw PUT body)', {
    method: 'PUT',
    path: '/api/v1/uploads/notes.txt',
    headers: [{ key: 'Content-Type', value: 'text/plain; charset=utf-8' }],
    body: { mode: 'file', file: { src: 'files/notes.txt' } },
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      const body = pm.response.json();
      pm.test('Location points at the new file', () => pm.expect(pm.response.headers.get('Location')).to.equal(`/api/v1/files/${body.file.id}`));
      pm.test('stored under the name from the path', () => {
        pm.expect(body.file.name).to.equal('notes.txt');
        pm.expect(body.file.size).to.equal(51);
        pm.expect(body.file.mimeType).to.match(/^text\/plain/);
        pm.expect(body.file.sha256).to.equal(pm.environment.get('notesSha256'));
      });
      pm.collectionVariables.set('rawFileId', body.file.id);
    },
  }),
  req('List files (newest first)', {
    path: '/api/v1/files?limit=1',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('one per page, the newest first, with a cursor to the next', () => {
        pm.expect(body.files).to.have.length(1);
        pm.expect(body.files[0].id).to.equal(pm.collectionVariables.get('rawFileId'));
        pm.expect(body.nextCursor).to.be.a('string').and.not.empty;
      });
      pm.collectionVariables.set('nextCursor', body.nextCursor);
    },
  }),
  req('List files (next page)', {
    path: '/api/v1/files?limit=1&cursor={{nextCursor}}',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('the next page holds the older upload', () => pm.expect(pm.response.json().files[0].id).to.equal(pm.collectionVariables.get('fileId')));
    },
  }),
  req('File metadata', {
    path: '/api/v1/files/{{fileId}}',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('exactly the documented fields', () => {
        const body = pm.response.json();
        pm.expect(Object.keys(body).sort()).to.eql(['createdAt', 'expiresAt', 'id', 'legalHold', 'mimeType', 'name', 'sha256', 'size']);
        pm.expect(body.id).to.equal(pm.collectionVariables.get('fileId'));
        pm.expect(new Date(body.createdAt).toISOString()).to.equal(body.createdAt);
        pm.expect(body.legalHold).to.equal(false);
      });
    },
  }),
  req("Change a file's expiry (PATCH)", {
    method: 'PATCH',
    path: '/api/v1/files/{{fileId}}',
    headers: [JSON_HEADER],
    body: json({ expiresInSeconds: 86400 }),
    description: 'The purge job crypto-shreds the file at expiresAt; at most FILE_MAX_RETENTION after the upload.',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('expires in about a day', () => {
        const left = Date.parse(body.expiresAt) - Date.now();
        pm.expect(left).to.be.above(86400e3 - 600e3).and.below(86400e3 + 600e3);
        pm.expect(body.id).to.equal(pm.collectionVariables.get('fileId'));
      });
    },
  }),
  req('400 for an expiry under a minute', {
    method: 'PATCH',
    path: '/api/v1/files/{{fileId}}',
    headers: [JSON_HEADER],
    body: json({ expiresInSeconds: 5 }),
    test() {
      const body = sfs.problem(400, 'validation_error');
      pm.test('names the field', () => pm.expect(body.detail).to.match(/expiresInSeconds/));
    },
  }),
  req('Download (full) and verify the checksum', {
    path: '/api/v1/files/{{fileId}}/content',
    test() {
      const expected = pm.environment.get('sampleSha256');
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('download headers', () => {
        pm.expect(pm.response.headers.get('Content-Disposition')).to.equal('attachment; filename=sample.bin');
        pm.expect(pm.response.headers.get('ETag')).to.equal(`"${expected}"`);
        pm.expect(pm.response.headers.get('Accept-Ranges')).to.equal('bytes');
        pm.expect(pm.response.headers.get('X-Content-Type-Options')).to.equal('nosniff');
        pm.expect(pm.response.headers.get('Content-Security-Policy')).to.equal("sandbox; default-src 'none'");
        pm.expect(pm.response.headers.get('Cache-Control')).to.equal('private, no-store');
      });
      pm.test('Repr-Digest is the SHA-256 of the file (RFC 9530)', () => {
        const b64 = require('crypto-js').enc.Base64.stringify(require('crypto-js').enc.Hex.parse(expected));
        pm.expect(pm.response.headers.get('Repr-Digest')).to.equal(`sha-256=:${b64}:`);
      });
      pm.test('the bytes received hash to the uploaded SHA-256', () => {
        pm.expect(pm.response.stream.length).to.equal(1024);
        pm.expect(sfs.sha256(pm.response.stream)).to.equal(expected);
      });
    },
  }),
  req('Download a range (bytes=100-199)', {
    path: '/api/v1/files/{{fileId}}/content',
    headers: [{ key: 'Range', value: 'bytes=100-199' }],
    test() {
      pm.test('status is 206 Partial Content', () => pm.response.to.have.status(206));
      pm.test('Content-Range and Content-Length describe the slice', () => {
        pm.expect(pm.response.headers.get('Content-Range')).to.equal('bytes 100-199/1024');
        pm.expect(pm.response.headers.get('Content-Length')).to.equal('100');
      });
      pm.test('the slice holds bytes 100..199 of the file', () => {
        const b = pm.response.stream;
        pm.expect(b.length).to.equal(100);
        for (let i = 0; i < b.length; i++) if (b[i] !== (100 + i) % 256) throw new Error(`byte ${i} is ${b[i]}`);
      });
    },
  }),
  req('Resume: the rest of the file (bytes=1000-)', {
    path: '/api/v1/files/{{fileId}}/content',
    headers: [{ key: 'Range', value: 'bytes=1000-' }],
    test() {
      pm.test('status is 206 Partial Content', () => pm.response.to.have.status(206));
      pm.test('Content-Range runs to the end', () => pm.expect(pm.response.headers.get('Content-Range')).to.equal('bytes 1000-1023/1024'));
      pm.test('24 bytes, the last of the file', () => {
        const b = pm.response.stream;
        pm.expect(b.length).to.equal(24);
        pm.expect(b[23]).to.equal(1023 % 256);
      });
    },
  }),
]);

const sharing = folder('3. Sharing', 'A link with a password and one download; the recipient side; revocation; a bundle of two files as a resumable zip.', [
  req('Create a share link (password, 1 download)', {
    method: 'POST',
    path: '/api/v1/files/{{fileId}}/shares',
    headers: [JSON_HEADER],
    body: json({ maxDownloads: 1, password: '{{sharePassword}}', expiresInSeconds: 3600, note: 'from Postman' }),
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('the link, its token and its limits', () => {
        pm.expect(body.token).to.match(/^[A-Za-z0-9_-]{43}$/);
        pm.expect(body.url).to.match(new RegExp(`/s/${body.token}$`));
        pm.expect(body).to.include({ maxDownloads: 1, downloads: 0, passwordProtected: true, status: 'active', note: 'from Postman' });
        pm.expect(pm.response.text()).not.to.include(pm.environment.get('sharePassword'));
      });
      pm.collectionVariables.set('shareId', body.id);
      pm.collectionVariables.set('shareToken', body.token);
    },
  }),
  req('Recipient: no password gives 401', {
    path: '/s/{{shareToken}}/content',
    auth: NO_AUTH,
    test() {
      sfs.problem(401, 'unauthorized');
      pm.test('asks for HTTP Basic auth', () => pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Basic /));
    },
  }),
  req('Recipient: wrong password gives 401', {
    path: '/s/{{shareToken}}/content',
    auth: basic('not the password'),
    test() {
      const body = sfs.problem(401, 'unauthorized');
      pm.test('says the password is wrong', () => pm.expect(body.detail).to.match(/wrong password/));
      pm.test('asks for HTTP Basic auth', () => pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Basic /));
    },
  }),
  req('Recipient: download with the password', {
    path: '/s/{{shareToken}}/content',
    auth: basic('{{sharePassword}}'),
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('download headers', () => {
        pm.expect(pm.response.headers.get('Content-Disposition')).to.match(/^attachment;.*sample\.bin/);
        pm.expect(pm.response.headers.get('ETag')).to.equal(`"${pm.environment.get('sampleSha256')}"`);
      });
      pm.test('the bytes hash to the original SHA-256', () => pm.expect(sfs.sha256(pm.response.stream)).to.equal(pm.environment.get('sampleSha256')));
    },
  }),
  req('Recipient: the used-up link gives 404', {
    path: '/s/{{shareToken}}/content',
    auth: basic('{{sharePassword}}'),
    test() {
      const body = sfs.problem(404, 'not_found');
      pm.collectionVariables.set('goneDetail', body.detail);
    },
  }),
  req('Owner: the link shows one completed download', {
    path: '/api/v1/files/{{fileId}}/shares',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('downloads 1 of 1, exhausted, 1024 bytes served', () => {
        const s = body.shares.find((x) => x.id === pm.collectionVariables.get('shareId'));
        pm.expect(s).to.include({ downloads: 1, maxDownloads: 1, status: 'exhausted', bytesServed: 1024 });
      });
      pm.test('no link token or password hash in the list', () => {
        pm.expect(pm.response.text()).not.to.include(pm.collectionVariables.get('shareToken'));
        pm.expect(pm.response.text()).not.to.match(/argon2/);
      });
    },
  }),
  req('Create a second link (no password, unlimited)', {
    method: 'POST',
    path: '/api/v1/files/{{fileId}}/shares',
    headers: [JSON_HEADER],
    body: json({}),
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('unlimited, no password, 7 days by default', () => {
        pm.expect(body).to.include({ maxDownloads: null, passwordProtected: false });
        const days = (Date.parse(body.expiresAt) - Date.parse(body.createdAt)) / 86400000;
        pm.expect(days).to.be.closeTo(7, 0.01);
      });
      pm.collectionVariables.set('share2Id', body.id);
      pm.collectionVariables.set('share2Token', body.token);
    },
  }),
  req('Recipient: the second link works without a password', {
    method: 'HEAD',
    path: '/s/{{share2Token}}/content',
    auth: NO_AUTH,
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('headers only: the length of the file', () => pm.expect(pm.response.headers.get('Content-Length')).to.equal('1024'));
      pm.test('no body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('Revoke the second link', {
    method: 'DELETE',
    path: '/api/v1/shares/{{share2Id}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('Recipient: the revoked link gives the same 404', {
    path: '/s/{{share2Token}}/content',
    auth: NO_AUTH,
    test() {
      const body = sfs.problem(404, 'not_found');
      pm.test('indistinguishable from a used-up link', () => pm.expect(body.detail).to.equal(pm.collectionVariables.get('goneDetail')));
    },
  }),
  req('Create a bundle: one link to two files (1 download)', {
    method: 'POST',
    path: '/api/v1/shares',
    headers: [JSON_HEADER],
    body: json({ fileIds: ['{{fileId}}', '{{rawFileId}}'], maxDownloads: 1 }),
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('a bundle of both files, in order', () => {
        pm.expect(body.bundle).to.equal(true);
        pm.expect(body.fileIds).to.eql([pm.collectionVariables.get('fileId'), pm.collectionVariables.get('rawFileId')]);
        pm.expect(body.url).to.match(/\/s\/[A-Za-z0-9_-]{43}$/);
      });
      pm.collectionVariables.set('bundleToken', body.token);
    },
  }),
  req("Recipient: the bundle's zip (HEAD): exact length and a strong ETag", {
    method: 'HEAD',
    path: '/s/{{bundleToken}}/zip',
    auth: NO_AUTH,
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('a zip with a length and a strong ETag, resumable', () => {
        pm.expect(pm.response.headers.get('Content-Type')).to.equal('application/zip');
        pm.expect(pm.response.headers.get('ETag')).to.match(/^"zip-[A-Za-z0-9_-]{32}"$/);
        pm.expect(pm.response.headers.get('Accept-Ranges')).to.equal('bytes');
        pm.expect(Number(pm.response.headers.get('Content-Length'))).to.be.above(1024);
      });
      pm.test('no body', () => pm.expect(pm.response.text()).to.equal(''));
      pm.collectionVariables.set('zipLength', pm.response.headers.get('Content-Length'));
      pm.collectionVariables.set('zipEtag', pm.response.headers.get('ETag'));
    },
  }),
  req('Recipient: the first 100 bytes of the zip (not a download yet)', {
    path: '/s/{{bundleToken}}/zip',
    auth: NO_AUTH,
    headers: [{ key: 'Range', value: 'bytes=0-99' }],
    test() {
      pm.test('status is 206 Partial Content', () => pm.response.to.have.status(206));
      pm.test('Content-Range names the whole length', () => pm.expect(pm.response.headers.get('Content-Range')).to.equal(`bytes 0-99/${pm.collectionVariables.get('zipLength')}`));
      pm.test('a zip local file header first', () => {
        const b = pm.response.stream;
        pm.expect(b.length).to.equal(100);
        pm.expect([b[0], b[1], b[2], b[3]]).to.eql([0x50, 0x4b, 0x03, 0x04]);
      });
    },
  }),
  req('Recipient: resume the zip (bytes=100-, If-Range)', {
    path: '/s/{{bundleToken}}/zip',
    auth: NO_AUTH,
    headers: [
      { key: 'Range', value: 'bytes=100-' },
      { key: 'If-Range', value: '{{zipEtag}}' },
    ],
    test() {
      const len = Number(pm.collectionVariables.get('zipLength'));
      pm.test('status is 206 Partial Content', () => pm.response.to.have.status(206));
      pm.test('the rest of the zip, to its last byte', () => pm.expect(pm.response.headers.get('Content-Range')).to.equal(`bytes 100-${len - 1}/${len}`));
      pm.test('ends with the end of central directory record', () => {
        const b = pm.response.stream;
        pm.expect(b.length).to.equal(len - 100);
        pm.expect([b[b.length - 22], b[b.length - 21], b[b.length - 20], b[b.length - 19]]).to.eql([0x50, 0x4b, 0x05, 0x06]);
      });
    },
  }),
  req('Recipient: the resumed zip was the one download', {
    path: '/s/{{bundleToken}}/zip',
    auth: NO_AUTH,
    test() {
      const body = sfs.problem(404, 'not_found');
      pm.test('the same 404 as any used-up link', () => pm.expect(body.detail).to.equal(pm.collectionVariables.get('goneDetail')));
    },
  }),
]);

const errors = folder('4. Errors', 'The main error cases, each an RFC 9457 problem with a stable code.', [
  req('401 without a token', {
    path: '/api/v1/files',
    auth: NO_AUTH,
    test() {
      sfs.problem(401, 'unauthorized');
      pm.test('WWW-Authenticate: Bearer', () => pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Bearer/));
    },
  }),
  req('401 with a wrong password', {
    method: 'POST',
    path: '/api/v1/auth/tokens',
    auth: NO_AUTH,
    headers: [JSON_HEADER],
    body: json({ username: '{{username}}', password: 'certainly not the password' }),
    test() {
      const body = sfs.problem(401, 'unauthorized');
      pm.test('does not say which part was wrong', () => pm.expect(body.detail).to.equal('invalid username or password'));
    },
  }),
  req('404 for a file that does not exist', {
    path: '/api/v1/files/00000000000000000000000000000000',
    test() {
      sfs.problem(404, 'not_found');
      pm.test('not cacheable as a success', () => pm.expect(pm.response.headers.has('ETag') && pm.response.code === 200).to.be.false);
    },
  }),
  req('400 for an invalid share request', {
    method: 'POST',
    path: '/api/v1/files/{{fileId}}/shares',
    headers: [JSON_HEADER],
    body: json({ maxDownloads: 0 }),
    test() {
      const body = sfs.problem(400, 'validation_error');
      pm.test('names the field', () => pm.expect(body.detail).to.include('maxDownloads'));
    },
  }),
  req('413 for a JSON body over the limit', {
    method: 'POST',
    path: '/api/v1/auth/tokens',
    auth: NO_AUTH,
    headers: [JSON_HEADER],
    body: { mode: 'raw', raw: '{"username":"{{username}}","password":"{{hugeValue}}"}' },
    prerequest() {
      // 70 kB: the API takes JSON bodies up to 64 kB.
      pm.variables.set('hugeValue', 'x'.repeat(70 * 1024));
    },
    test() {
      sfs.problem(413, 'payload_too_large');
      pm.test('the server closes the connection', () => pm.expect(pm.response.headers.get('Connection')).to.equal('close'));
    },
  }),
  req('413 for a file over MAX_FILE_SIZE', {
    method: 'PUT',
    path: '/api/v1/uploads/too-big.bin',
    headers: [{ key: 'Content-Type', value: 'application/octet-stream' }],
    body: { mode: 'raw', raw: '{{oversizeBody}}' },
    description: "Runs only when the environment's maxFileSize is set (bytes, at most 8 MiB) to the server's MAX_FILE_SIZE.",
    prerequest() {
      const limit = Number(pm.environment.get('maxFileSize'));
      if (!limit || limit > 8 * 1024 * 1024) return pm.execution.skipRequest();
      pm.variables.set('oversizeBody', 'x'.repeat(limit + 1));
    },
    test() {
      const body = sfs.problem(413, 'file_too_large');
      pm.test('names the limit', () => pm.expect(body.detail).to.include(String(pm.environment.get('maxFileSize'))));
      pm.test('the server closes the connection', () => pm.expect(pm.response.headers.get('Connection')).to.equal('close'));
    },
  }),
  req('416 for a range past the end', {
    path: '/api/v1/files/{{fileId}}/content',
    headers: [{ key: 'Range', value: 'bytes=5000-' }],
    test() {
      sfs.problem(416, 'range_not_satisfiable');
      pm.test('Content-Range gives the size', () => pm.expect(pm.response.headers.get('Content-Range')).to.equal('bytes */1024'));
    },
  }),
  req('422 for a checksum that does not match (multipart)', {
    method: 'POST',
    path: '/api/v1/files',
    body: {
      mode: 'formdata',
      formdata: [
        { key: 'sha256', value: '0000000000000000000000000000000000000000000000000000000000000000', type: 'text' },
        { key: 'file', type: 'file', src: 'files/sample.bin' },
      ],
    },
    test() {
      const body = sfs.problem(422, 'checksum_mismatch');
      pm.test('says what did not match', () => pm.expect(body.detail).to.match(/SHA-256/));
    },
  }),
  req('422 for a Content-Digest that does not match (PUT)', {
    method: 'PUT',
    path: '/api/v1/uploads/notes.txt',
    headers: [{ key: 'Content-Digest', value: 'sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:' }],
    body: { mode: 'file', file: { src: 'files/notes.txt' } },
    test() {
      sfs.problem(422, 'checksum_mismatch');
    },
  }),
  req('Nothing was stored by the refused uploads', {
    path: '/api/v1/me',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('storage use is the two accepted uploads only', () =>
        pm.expect(pm.response.json().usageBytes).to.equal(Number(pm.collectionVariables.get('usageBefore')) + 1024 + 51));
    },
  }),
]);

const notifications = folder('5. Notifications', 'Notification settings on PATCH /me, and the webhook address check (SSRF refusal).', [
  req('Choose notifications (PATCH /me)', {
    method: 'PATCH',
    path: '/api/v1/me',
    headers: [JSON_HEADER],
    body: json({ email: 'postman@example.com', notifications: { shareDownloaded: ['email'], newSignIn: ['email', 'webhook'] } }),
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('the address and choices are stored', () => {
        pm.expect(body.email).to.equal('postman@example.com');
        pm.expect(body.notifications.shareDownloaded).to.eql(['email']);
        pm.expect(body.notifications.newSignIn).to.eql(['email', 'webhook']);
        pm.expect(body.notifications.accountChanged).to.eql([]);
      });
      pm.test('no password change happened', () => pm.expect(body.revokedTokens).to.equal(0));
    },
  }),
  req('A webhook to a private address is refused', {
    method: 'PUT',
    path: '/api/v1/me/webhook',
    headers: [JSON_HEADER],
    body: json({ url: 'https://10.0.0.1/hook' }),
    test() {
      const body = sfs.problem(422, 'webhook_url_refused');
      pm.test('says why', () => pm.expect(body.detail).to.match(/private/));
    },
  }),
  req('No webhook is set', {
    path: '/api/v1/me/webhook',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('webhook is null and the log is a list', () => {
        pm.expect(body.webhook).to.equal(null);
        pm.expect(body.deliveries).to.be.an('array');
      });
    },
  }),
  req('Turn the notifications off again', {
    method: 'PATCH',
    path: '/api/v1/me',
    headers: [JSON_HEADER],
    body: json({ email: null, notifications: { shareDownloaded: [], newSignIn: [] } }),
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('nothing is chosen', () => pm.expect(Object.values(pm.response.json().notifications).every((c) => c.length === 0)).to.be.true);
    },
  }),
]);

const requests = folder('6. Upload requests', 'Ask for files: a request with a password and limits; an uploader without an account sends a file; what the owner sees; closing.', [
  req('Create an upload request (password, 2 files, .txt only, files kept 30 days)', {
    method: 'POST',
    path: '/api/v1/requests',
    headers: [JSON_HEADER],
    body: json({ title: 'Send me your notes', message: 'Text files only, please.', expiresInSeconds: 3600, password: '{{sharePassword}}', maxFiles: 2, maxBytes: 100000, maxFileBytes: 50000, allowedTypes: ['txt'], requireName: true, fileRetentionSeconds: '30d' }),
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('the link, its token and its limits', () => {
        pm.expect(body.token).to.match(/^[A-Za-z0-9_-]{43}$/);
        pm.expect(body.url).to.match(new RegExp(`/r/${body.token}$`));
        pm.expect(body).to.include({ maxFiles: 2, maxBytes: 100000, maxFileBytes: 50000, passwordProtected: true, requireName: true, status: 'active', filesReceived: 0, fileRetentionSeconds: 2592000 });
        pm.expect(body.allowedTypes).to.eql(['txt']);
        pm.expect(pm.response.text()).not.to.include(pm.environment.get('sharePassword'));
      });
      pm.collectionVariables.set('requestId', body.id);
      pm.collectionVariables.set('requestToken', body.token);
    },
  }),
  req('Uploader: no password gives 401', {
    method: 'PUT',
    path: '/r/{{requestToken}}/notes.txt',
    auth: NO_AUTH,
    headers: [{ key: 'X-Uploader-Name', value: 'Postman Uploader' }],
    body: { mode: 'raw', raw: 'notes from an uploader\n' },
    test() {
      sfs.problem(401, 'unauthorized');
      pm.test('asks for HTTP Basic auth', () => pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Basic /));
    },
  }),
  req('Uploader: a type the request does not take gives 415', {
    method: 'PUT',
    path: '/r/{{requestToken}}/tool.exe',
    auth: basic('{{sharePassword}}'),
    headers: [{ key: 'X-Uploader-Name', value: 'Postman Uploader' }],
    body: { mode: 'raw', raw: 'MZ not really a program' },
    test() {
      sfs.problem(415, 'file_type_not_allowed');
    },
  }),
  req('Uploader: send a file with the password (curl -T)', {
    method: 'PUT',
    path: '/r/{{requestToken}}/notes.txt',
    auth: basic('{{sharePassword}}'),
    headers: [{ key: 'X-Uploader-Name', value: 'Postman Uploader' }],
    body: { mode: 'raw', raw: 'notes from an uploader\n' },
    test() {
      pm.test('status is 201 Created', () => pm.response.to.have.status(201));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('a receipt of this file only: name, size, SHA-256, time', () => {
        pm.expect(body.files).to.have.lengthOf(1);
        pm.expect(body.files[0]).to.include({ name: 'notes.txt', size: 23 });
        pm.expect(body.files[0].sha256).to.match(/^[0-9a-f]{64}$/);
        pm.expect(Date.parse(body.receivedAt)).to.be.above(0);
        pm.expect(body.files[0]).not.to.have.property('id');
      });
      pm.collectionVariables.set('requestFileSha', body.files[0].sha256);
    },
  }),
  req("Owner: the request's files, with the uploader's name", {
    path: '/api/v1/files?requestId={{requestId}}',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('one file, marked with the request and the uploader', () => {
        pm.expect(body.files).to.have.lengthOf(1);
        pm.expect(body.files[0]).to.include({ name: 'notes.txt', requestId: pm.collectionVariables.get('requestId'), uploaderName: 'Postman Uploader', sha256: pm.collectionVariables.get('requestFileSha') });
      });
      pm.collectionVariables.set('requestFileId', body.files[0].id);
    },
  }),
  req('Owner: the request with what arrived', {
    path: '/api/v1/requests/{{requestId}}',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      const body = pm.response.json();
      pm.test('one file of 23 bytes received', () => {
        pm.expect(body).to.include({ filesReceived: 1, bytesReceived: 23, status: 'active' });
        pm.expect(body.files.map((f) => f.id)).to.eql([pm.collectionVariables.get('requestFileId')]);
      });
    },
  }),
  req('Owner: list upload requests (no tokens)', {
    path: '/api/v1/requests',
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('lists the request, never its token', () => {
        pm.expect(pm.response.json().requests.map((r) => r.id)).to.include(pm.collectionVariables.get('requestId'));
        pm.expect(pm.response.text()).not.to.include(pm.collectionVariables.get('requestToken'));
      });
    },
  }),
  req('Owner: close the request early', {
    method: 'PATCH',
    path: '/api/v1/requests/{{requestId}}',
    headers: [JSON_HEADER],
    body: json({ close: true }),
    test() {
      pm.test('status is 200', () => pm.response.to.have.status(200));
      pm.test('Content-Type is JSON', () => pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\/json/));
      pm.test('closed', () => pm.expect(pm.response.json().status).to.equal('closed'));
    },
  }),
  req('Uploader: the closed request gives 404', {
    method: 'PUT',
    path: '/r/{{requestToken}}/late.txt',
    auth: basic('{{sharePassword}}'),
    headers: [{ key: 'X-Uploader-Name', value: 'Postman Uploader' }],
    body: { mode: 'raw', raw: 'too late\n' },
    test() {
      sfs.problem(404, 'not_found');
    },
  }),
  req('Owner: delete the request', {
    method: 'DELETE',
    path: '/api/v1/requests/{{requestId}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('Owner: the file that came through it stays, and is deleted like any other', {
    method: 'DELETE',
    path: '/api/v1/files/{{requestFileId}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
]);

const cleanup = folder('7. Clean up', 'Delete what the run created and revoke its token.', [
  req('Delete the raw upload', {
    method: 'DELETE',
    path: '/api/v1/files/{{rawFileId}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('Delete the multipart upload', {
    method: 'DELETE',
    path: '/api/v1/files/{{fileId}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('The deleted file is 404', {
    path: '/api/v1/files/{{fileId}}/content',
    test() {
      sfs.problem(404, 'not_found');
      pm.test('no download headers', () => pm.expect(pm.response.headers.has('Content-Disposition')).to.be.false);
    },
  }),
  req('Revoke the token', {
    method: 'DELETE',
    path: '/api/v1/auth/tokens/{{tokenId}}',
    test() {
      pm.test('status is 204 No Content', () => pm.response.to.have.status(204));
      pm.test('no Content-Type', () => pm.expect(pm.response.headers.has('Content-Type')).to.be.false);
      pm.test('empty body', () => pm.expect(pm.response.text()).to.equal(''));
    },
  }),
  req('The revoked token is refused', {
    path: '/api/v1/me',
    test() {
      sfs.problem(401, 'unauthorized');
      pm.test('WWW-Authenticate: Bearer', () => pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Bearer/));
    },
  }),
]);

const collection = {
  info: {
    name: 'Secure file sharing',
    description:
      'The REST API of the secure file sharing server, as a run that checks itself: setup, tokens, uploads, downloads with checksum checks, ' +
      'share links, the recipient side and the main errors. Import this file and secure-file-sharing.postman_environment.json; set baseUrl ' +
      '(and setupCode on a fresh server). File uploads read postman/files/: set Postman\'s working directory to the postman folder of the repository.',
    schema: 'https://schema.getpostman.com/json/collection/v2.1.0/collection.json',
  },
  auth: { type: 'bearer', bearer: [{ key: 'token', value: '{{token}}', type: 'string' }] },
  event: [
    { listen: 'prerequest', script: { type: 'text/javascript', exec: collectionPrerequest } },
    { listen: 'test', script: { type: 'text/javascript', exec: collectionTest } },
  ],
  variable: ['token', 'tokenId', 'fileId', 'rawFileId', 'nextCursor', 'shareId', 'shareToken', 'share2Id', 'share2Token', 'goneDetail', 'bundleToken', 'zipLength', 'zipEtag', 'usageBefore', 'requestId', 'requestToken', 'requestFileId', 'requestFileSha'].map((key) => ({ key, value: '' })),
  item: [setup, files, sharing, errors, notifications, requests, cleanup],
};

const text = `${JSON.stringify(collection, null, 2)}\n`;
if (process.argv.includes('--check')) {
  const current = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf8') : '';
  if (current !== text) {
    process.stderr.write(`${path.relative(process.cwd(), OUT)} is out of date: run node postman/build-collection.mjs\n`);
    process.exit(1);
  }
} else {
  fs.writeFileSync(OUT, text);
  process.stdout.write(`wrote ${path.relative(process.cwd(), OUT)}\n`);
}
