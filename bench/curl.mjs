/**
 * The client that moves bytes as users do: the real `curl` binary. Uploads read a file that
 * was generated before timing (`curl -T` for PUT, `curl -F file=@...` for multipart);
 * downloads go to /dev/null. Nothing hashes while the clock runs; the figure is curl's own
 * `%{time_total}` (process start-up excluded). Verification is a separate, untimed pass in
 * bench/run.mjs: the server's recorded size (and sfs's SHA-256) for every upload, and a
 * download of each uploaded file through the hashing client (bench/client.mjs).
 *
 * Real curl rather than a Node client: it is what the figures of issue 13 were measured
 * with, it costs a node process nothing on the client side, and no JS-side buffering choice
 * of ours can flatter or penalise either server.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';

export const CURL = process.env.CURL ?? '/usr/bin/curl';

/** True when a curl binary is there to run. */
export function haveCurl() {
  try {
    fs.accessSync(CURL, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes a header file for curl's `-H @file`, so the bearer token never appears on a
 * command line (where `ps` on the machine would show it). Mode 0600.
 */
export function writeAuthHeader(file, token) {
  fs.writeFileSync(file, `Authorization: Bearer ${token}\n`, { mode: 0o600 });
  return file;
}

/**
 * Runs curl once with `args`, registering the process in `track` (a Set) while it runs;
 * resolves with curl's `-w` fields: status, seconds, bytes up/down.
 */
function curl(args, track) {
  return new Promise((resolve, reject) => {
    const p = spawn(CURL, ['-sS', '--no-progress-meter', ...args, '-w', '%{http_code} %{time_total} %{size_upload} %{size_download}'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track?.add(p);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('exit', (code) => {
      track?.delete(p);
      if (code !== 0) return reject(new Error(`curl exited with ${code}: ${err.trim().slice(0, 300)}`));
      const [status, seconds, up, down] = out.trim().split(' ').map(Number);
      resolve({ status, seconds, up, down });
    });
  });
}

/**
 * Uploads `file` (already on disk) by PUT or multipart; the response body goes to
 * `responseFile` (a few hundred bytes of JSON) and is returned parsed, for the check.
 */
export async function curlUpload({ base, headerFile, mode, file, name, responseFile }, track) {
  const args =
    mode === 'put'
      ? ['-T', file, '-H', 'Content-Type: application/octet-stream', `${base}/api/v1/uploads/${name}`]
      : ['-F', `file=@${file};type=application/octet-stream;filename=${name}`, `${base}/api/v1/files`];
  const r = await curl(['-H', `@${headerFile}`, '-o', responseFile, ...args], track);
  const text = fs.readFileSync(responseFile, 'utf8');
  if (r.status !== 201) throw new Error(`curl ${mode} upload answered ${r.status}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text);
  return { ...r, file: mode === 'put' ? body.file : body.files?.[0] };
}

/** Downloads a file to /dev/null; checks only the status and the byte count (no hashing). */
export async function curlDownload({ base, headerFile, id, size }, track) {
  const r = await curl(['-H', `@${headerFile}`, '-o', '/dev/null', `${base}/api/v1/files/${id}/content`], track);
  if (r.status !== 200) throw new Error(`curl download answered ${r.status}`);
  if (r.down !== size) throw new Error(`curl download gave ${r.down} bytes, expected ${size}`);
  return r;
}
