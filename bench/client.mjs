/**
 * The load client, a separate process from the servers and from the orchestrator
 * (bench/run.mjs forks it and sends one command at a time over IPC). It streams
 * generated test data up, and checks every byte that comes back down: full downloads
 * and range reads against the SHA-256 of the generator's bytes, small files byte for
 * byte. A wrong answer fails the run instead of producing a fast figure.
 */
import autocannon from 'autocannon';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { TestData } from './lib.mjs';

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const digests = new Map();

/** SHA-256 of a generated file, computed once before any timing. */
function expectedSha(seed, size) {
  const k = `${seed}:${size}`;
  if (!digests.has(k)) digests.set(k, new TestData(seed, size).sha256());
  return digests.get(k);
}

function fail(message) {
  throw new Error(message);
}

async function readBody(res) {
  const parts = [];
  for await (const p of res) parts.push(p);
  return Buffer.concat(parts).toString('utf8');
}

function multipartFraming(boundary, filename) {
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
      'Content-Type: application/octet-stream\r\n\r\n',
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return { head, tail };
}

/** Streams a generated file up (multipart POST or raw PUT) and checks the server's answer. */
async function upload({ base, token, mode, seed, size, checkSha }) {
  const sha = expectedSha(seed, size);
  const data = new TestData(seed, size);
  const boundary = `----sfsbench${seed}`;
  const { head, tail } = multipartFraming(boundary, `${seed}.bin`);
  const multipart = mode === 'multipart';
  const headers = {
    authorization: `Bearer ${token}`,
    'content-type': multipart ? `multipart/form-data; boundary=${boundary}` : 'application/octet-stream',
    'content-length': String(multipart ? head.length + size + tail.length : size),
  };
  const path = multipart ? '/api/v1/files' : `/api/v1/uploads/${seed}.bin`;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const req = http.request(base + path, { method: multipart ? 'POST' : 'PUT', headers, agent });
  let answered = false;
  const response = once(req, 'response');
  response.then(() => (answered = true), () => {});
  if (multipart) req.write(head);
  for (const piece of data.pieces()) {
    // An early answer (an error) ends the upload; the status check below reports it.
    if (answered) break;
    if (!req.write(piece)) await Promise.race([once(req, 'drain'), response]);
  }
  if (!answered) req.end(multipart ? tail : undefined);
  const [res] = await response;
  const text = await readBody(res);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  if (res.statusCode !== 201) fail(`${mode} upload answered ${res.statusCode}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text);
  const file = multipart ? body.files?.[0] : body.file;
  if (!file || file.size !== size) fail(`${mode} upload: server recorded size ${file?.size}, sent ${size}`);
  if (checkSha && file.sha256 !== sha) fail(`${mode} upload: server SHA-256 ${file.sha256} != sent ${sha}`);
  return { id: file.id, bytes: size, seconds, clientCpu: (cpu.user + cpu.system) / 1e6 };
}

/** GETs bytes of a file (all, or one range) and checks every byte against the generator. */
async function download({ base, token, id, seed, size, start, end }) {
  const ranged = start !== undefined;
  const want = ranged ? new TestData(seed, size).sha256(start, end + 1) : expectedSha(seed, size);
  const length = ranged ? end - start + 1 : size;
  const headers = { authorization: `Bearer ${token}` };
  if (ranged) headers.range = `bytes=${start}-${end}`;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const req = http.get(`${base}/api/v1/files/${id}/content`, { headers, agent });
  const [res] = await once(req, 'response');
  const tHeaders = performance.now();
  const hash = createHash('sha256');
  let bytes = 0;
  let tFirst;
  for await (const p of res) {
    tFirst ??= performance.now();
    bytes += p.length;
    hash.update(p);
  }
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const status = ranged ? 206 : 200;
  if (res.statusCode !== status) fail(`download answered ${res.statusCode}, expected ${status}`);
  if (!res.complete) fail('download was cut short');
  if (bytes !== length) fail(`download gave ${bytes} bytes, expected ${length}`);
  if (hash.digest('hex') !== want) fail(`download bytes differ from what was uploaded (${id} ${start ?? ''}-${end ?? ''})`);
  return {
    bytes,
    seconds: (t1 - t0) / 1000,
    headersMs: tHeaders - t0,
    ttfbMs: (tFirst ?? t1) - t0,
    totalMs: t1 - t0,
    clientCpu: (cpu.user + cpu.system) / 1e6,
  };
}

async function remove({ base, token, id }) {
  const req = http.request(`${base}/api/v1/files/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` }, agent });
  req.end();
  const [res] = await once(req, 'response');
  await readBody(res);
  if (res.statusCode !== 204) fail(`delete answered ${res.statusCode}`);
  return {};
}

/** Content of small file i: ASCII (autocannon hands bodies over as strings), distinct per file. */
function smallContent(i, size) {
  const unit = createHash('sha256').update(`small:${i}`).digest('hex');
  return unit.repeat(Math.ceil(size / unit.length)).slice(0, size);
}

function smallMultipart(i, size) {
  const boundary = `----sfsbenchsmall${i}`;
  const { head, tail } = multipartFraming(boundary, `small-${i}.txt`);
  const content = smallContent(i, size);
  return {
    content,
    sha256: createHash('sha256').update(content).digest('hex'),
    contentType: `multipart/form-data; boundary=${boundary}`,
    body: Buffer.concat([head, Buffer.from(content), tail]),
  };
}

/** Uploads `count` small files one by one (setup for the download load, not timed). */
async function smallPrepare({ base, token, count, size }) {
  const ids = [];
  for (let i = 0; i < count; i++) {
    const m = smallMultipart(i, size);
    const req = http.request(`${base}/api/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': m.contentType, 'content-length': String(m.body.length) },
      agent,
    });
    req.end(m.body);
    const [res] = await once(req, 'response');
    const text = await readBody(res);
    if (res.statusCode !== 201) fail(`small upload answered ${res.statusCode}: ${text.slice(0, 200)}`);
    ids.push(JSON.parse(text).files[0].id);
  }
  return { ids };
}

function summarize(r, bad) {
  const ok = r['2xx'] ?? 0;
  return {
    requests: ok,
    rps: ok / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    mean: r.latency.average,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    bad,
    seconds: r.duration,
  };
}

function cannon(opts) {
  return new Promise((resolve, reject) => {
    autocannon({ ...opts, connections: opts.connections, bailout: 1000 }, (err, r) => (err ? reject(err) : resolve(r)));
  });
}

/** 4 KiB multipart uploads at fixed concurrency; each answer is checked (size and, for sfs, SHA-256). */
async function smallUpload({ base, token, connections, duration, size, checkSha }) {
  const m = smallMultipart(999_999, size);
  let bad = 0;
  const r = await cannon({
    url: `${base}/api/v1/files`,
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': m.contentType },
    body: m.body,
    connections,
    duration,
    requests: [
      {
        onResponse(status, body) {
          if (status !== 201) return void bad++;
          try {
            const f = JSON.parse(body).files[0];
            if (f.size !== size || (checkSha && f.sha256 !== m.sha256)) bad++;
          } catch {
            bad++;
          }
        },
      },
    ],
  });
  const out = summarize(r, bad);
  if (out.bad || out.errors || out.non2xx) fail(`small uploads: ${out.bad} bad answers, ${out.errors} errors, ${out.non2xx} non-2xx`);
  return out;
}

/** 4 KiB downloads spread over the prepared files; every body is compared byte for byte. */
async function smallDownload({ base, token, ids, connections, duration, size }) {
  let bad = 0;
  const contents = ids.map((_, i) => smallContent(i, size));
  const requests = ids.map((id, i) => ({
    method: 'GET',
    path: `/api/v1/files/${id}/content`,
    onResponse(status, body) {
      if (status !== 200 || body !== contents[i]) bad++;
    },
  }));
  const r = await cannon({
    url: base,
    headers: { authorization: `Bearer ${token}` },
    connections,
    duration,
    requests,
  });
  const out = summarize(r, bad);
  if (out.bad || out.errors || out.non2xx) fail(`small downloads: ${out.bad} bad answers, ${out.errors} errors, ${out.non2xx} non-2xx`);
  return out;
}

async function prepare({ seed, size }) {
  const t0 = performance.now();
  expectedSha(seed, size);
  return { seconds: (performance.now() - t0) / 1000 };
}

const commands = { prepare, upload, download, remove, smallPrepare, smallUpload, smallDownload };

process.on('message', async (msg) => {
  try {
    const fn = commands[msg.cmd] ?? fail(`unknown command ${msg.cmd}`);
    process.send({ id: msg.id, ok: true, result: await fn(msg.args) });
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: err?.stack ?? String(err) });
  }
});
// Never outlive the orchestrator.
process.on('disconnect', () => process.exit(0));
