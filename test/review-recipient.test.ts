/**
 * Issue 11, recipient side: the shell-quoted verify hint (item 2), slow readers giving way on a
 * one-download link (item 10), password links showing the details page with a reusable ticket
 * (item 15), and new links/tokens shown once through POST-redirect-GET (item 18).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { posixQuote, powershellQuote, verifyCommands } from '../src/http/shell-quote.js';
import { binaryParser, downloadsSettled, makeHarness, pattern, serve, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
const temps: string[] = [];
afterEach(() => {
  h?.cleanup();
  for (const d of temps.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const auth = () => ({ Authorization: `Bearer ${token}` });

async function init(env: Record<string, string> = {}) {
  h = await makeHarness(env);
  token = await setupAdmin(h);
}

async function upload(content: Buffer, name = 'report.pdf') {
  const r = await h.request.put(`/api/v1/uploads/${encodeURIComponent(name)}`).set(auth()).send(content);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.file as { id: string; name: string; size: number; sha256: string };
}

async function share(fileId: string, body: Record<string, unknown> = {}) {
  const r = await h.request.post(`/api/v1/files/${fileId}/shares`).set(auth()).send(body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as { id: string; token: string; downloads: number };
}

const get = (p: string, headers: Record<string, string> = {}) => h.request.get(p).set(headers).buffer(true).parse(binaryParser);

/** What EJS's <%= %> escapes, undone. */
function htmlUnescape(s: string): string {
  return s.replace(/&(#\d+|amp|lt|gt|quot|#x[0-9a-f]+);/gi, (_m, e: string) => {
    if (e === 'amp') return '&';
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'quot') return '"';
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
  });
}

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sfs-verify-'));
  temps.push(d);
  return d;
}

describe('item 2: the verify hint is quoted for each shell', () => {
  // Each payload tries to run `touch` in the working directory; the marker must never appear.
  const NAMES: [string, string][] = [
    ['command substitution', 'Q3 $(touch pwned-subst).pdf'],
    ['backticks', 'report `touch pwned-tick`.pdf'],
    ['single quote breakout', "it's '$(touch pwned-sq)' done.txt"],
    ['double quotes', 'say "$(touch pwned-dq)" and "x".txt'],
    ['semicolon', 'a; touch pwned-semi; b.txt'],
    ['pipe', 'a | touch pwned-pipe.txt'],
    ['ampersand', 'a & touch pwned-amp && b.txt'],
    ['newline (cleaned away)', 'line one\ntouch pwned-nl\n.txt'],
    ['variables and globs', '$HOME ${PATH} * ? [a].txt'],
    ['leading dash', '-rf --version.txt'],
    ['non-ASCII', 'Résumé ‘draft’ 日本語 – “final” ü.pdf'],
    ['backslash-free escapes', "$'\\x41' %s !! #comment.txt"],
  ];

  it.each(NAMES)('%s: the POSIX line hashes exactly that file and runs nothing else', async (_label, raw) => {
    await init();
    const content = Buffer.from(`contents of ${raw}`);
    const f = await upload(content, raw);
    const s = await share(f.id);
    const page = await h.request.get(`/s/${s.token}`);
    expect(page.status).toBe(200);
    const m = /<pre class="code"[^>]*>([^<]*sha256sum[^<]*)<\/pre>/.exec(page.text);
    expect(m, 'the page shows a sha256sum line').not.toBeNull();
    const command = htmlUnescape(m![1]!);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, f.name), content);
    let out = '';
    try {
      out = execFileSync('sh', ['-c', command], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      out = `failed: ${String((err as { stderr?: string }).stderr ?? err)}`;
    }
    // Nothing but the file itself exists afterwards: no marker from any payload.
    expect(fs.readdirSync(dir)).toEqual([f.name]);
    const sha = createHash('sha256').update(content).digest('hex');
    expect(f.sha256).toBe(sha);
    expect(out).toBe(`${sha}  ${f.name}\n`);
  });

  /** PowerShell's single-quoted string literal, as its tokenizer reads one; returns the value and the rest. */
  function parsePowerShellSingleQuoted(text: string): { value: string; rest: string } {
    const isQuote = (c: string | undefined) => c !== undefined && "'\u2018\u2019\u201a\u201b".includes(c);
    if (!isQuote(text[0])) throw new Error('not a single-quoted string');
    let value = '';
    for (let i = 1; i < text.length; i++) {
      const c = text[i]!;
      if (isQuote(c)) {
        // Two quote characters in a row stand for the second; one alone ends the string.
        if (!isQuote(text[i + 1])) return { value, rest: text.slice(i + 1) };
        value += text[i + 1];
        i++;
        continue;
      }
      value += c;
    }
    throw new Error('unterminated string');
  }

  /** POSIX sh single quotes and \' outside them (all that posixQuote produces); returns the word and the rest. */
  function parsePosixWord(text: string): { value: string; rest: string } {
    let value = '';
    let i = 0;
    while (i < text.length && text[i] !== ' ') {
      if (text[i] === "'") {
        const end = text.indexOf("'", i + 1);
        if (end === -1) throw new Error('unterminated');
        value += text.slice(i + 1, end);
        i = end + 1;
      } else if (text[i] === '\\') {
        value += text[i + 1];
        i += 2;
      } else {
        if (/[$`"|&;<>()*?[\]#~!{}\n]/.test(text[i]!)) throw new Error(`unquoted special ${text[i]}`);
        value += text[i];
        i++;
      }
    }
    return { value, rest: text.slice(i) };
  }

  const QUOTE_CASES = [
    ...NAMES.map(([, n]) => n),
    "'",
    "''",
    '‘',
    '’’',
    '‚x‛',
    "a'‘’‚‛b",
    '$(Remove-Item -Recurse C:\\); $env:PATH `whoami` @(1) ${x}',
    "'; Invoke-Expression 'calc' #",
    '’; calc; ‘',
  ];

  it.each(QUOTE_CASES)('PowerShell and POSIX quoting round-trip %j', (name) => {
    const ps = parsePowerShellSingleQuoted(powershellQuote(name));
    expect(ps).toEqual({ value: name, rest: '' });
    const sh = parsePosixWord(posixQuote(name));
    expect(sh).toEqual({ value: name, rest: '' });
    const cmds = verifyCommands(name);
    if (!cmds.placeholder) {
      expect(cmds.powershell).toBe(`Get-FileHash -Algorithm SHA256 -LiteralPath ${powershellQuote(name)}`);
      expect(cmds.posix).toBe(`sha256sum -- ${posixQuote(name)}`);
    }
  });

  it('a name with a line break or control character (not possible after cleaning) is replaced by a placeholder', () => {
    for (const name of ['a\nb.txt', 'a\rb', 'x\u2028y', 'bell\u0007']) {
      const c = verifyCommands(name);
      expect(c.placeholder).toBe(true);
      expect(c.posix).toBe("sha256sum -- 'downloaded-file'");
      expect(c.powershell).toBe("Get-FileHash -Algorithm SHA256 -LiteralPath 'downloaded-file'");
    }
    expect(verifyCommands('plain.txt').placeholder).toBe(false);
  });

  it('the page shows the PowerShell line quoted, HTML-escaped', async () => {
    await init();
    const f = await upload(Buffer.from('x'), "it's ‘q’ $(calc).txt");
    const s = await share(f.id);
    const page = await h.request.get(`/s/${s.token}`);
    const m = /<pre class="code"[^>]*>([^<]*Get-FileHash[^<]*)<\/pre>/.exec(page.text)!;
    expect(htmlUnescape(m[1]!)).toBe(`Get-FileHash -Algorithm SHA256 -LiteralPath 'it''s ‘‘q’’ $(calc).txt'`);
  });
});

/** The href of the recipient page's Download button. */
function downloadHref(html: string): string {
  const m = /<a class="button[^"]*" href="(\/s\/[^"]+\/content\?ticket=[^"]+)"/.exec(html);
  if (!m) throw new Error('no Download link with a ticket on the page');
  return htmlUnescape(m[1]!);
}

/** A fresh recipient (own cookies) with the CSRF token of the link's password form. */
async function recipient(linkToken: string) {
  const agent = (await import('supertest')).default.agent(h.app);
  const page = await agent.get(`/s/${linkToken}`);
  expect(page.status).toBe(200);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
  return { agent, unlock: (password: string) => agent.post(`/s/${linkToken}`).type('form').send({ _csrf: csrf, password }) };
}

async function downloadsOf(fileId: string, shareId: string): Promise<number> {
  await downloadsSettled(h);
  const r = await h.request.get(`/api/v1/files/${fileId}/shares`).set(auth());
  expect(r.status).toBe(200);
  return (r.body.shares as { id: string; downloads: number }[]).find((s) => s.id === shareId)!.downloads;
}

/** The answer every unavailable link gives, from a link that never existed. */
async function goneAnswer() {
  const r = await h.request.get(`/s/${'A'.repeat(43)}/content`);
  expect(r.status).toBe(404);
  return { status: r.status, body: { ...r.body, requestId: '' } };
}

describe('item 15: password links show the details page, and a ticket is one download', () => {
  const PASSWORD = 'open sesame 42';
  const MARKER = 'FILE-BYTES-MARKER-5b0e';

  it('wrong password shows the error; the right one shows name, size, SHA-256, expiry and a ticket Download link, no bytes', async () => {
    await init();
    const content = Buffer.from(`${MARKER}\n`.repeat(5000));
    const f = await upload(content, 'board minutes.txt');
    const s = await share(f.id, { password: PASSWORD, maxDownloads: 3 });
    const expiresAt = (await h.request.get(`/api/v1/files/${f.id}/shares`).set(auth())).body.shares[0].expiresAt as string;
    const r = await recipient(s.token);
    const wrong = await r.unlock('not the password');
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('That password is not right');
    expect(wrong.text).not.toContain(f.sha256);

    const right = await r.unlock(PASSWORD);
    expect(right.status).toBe(200);
    expect(right.headers['content-type']).toMatch(/^text\/html/);
    expect(right.headers['content-disposition']).toBeUndefined();
    expect(right.text).not.toContain(MARKER);
    // The error from the first try is gone.
    expect(right.text).not.toContain('not right');
    expect(right.text).toContain('board minutes.txt');
    expect(right.text).toContain(f.sha256);
    expect(right.text).toContain(`${content.length.toLocaleString('en')} bytes`);
    expect(right.text).toContain(`datetime="${new Date(expiresAt).toISOString()}"`);
    const href = downloadHref(right.text);
    expect(href.startsWith(`/s/${s.token}/content?ticket=`)).toBe(true);
    // Nothing was downloaded by entering the password.
    expect(await downloadsOf(f.id, s.id)).toBe(0);
    const got = await get(href);
    expect(got.status).toBe(200);
    expect((got.body as Buffer).equals(content)).toBe(true);
  });

  it('the same ticket downloaded twice, completely, counts one download; both byte-exact', async () => {
    await init();
    const content = pattern(300_000, 9);
    const f = await upload(content, 'data.bin');
    const s = await share(f.id, { password: PASSWORD, maxDownloads: 3 });
    const href = downloadHref((await (await recipient(s.token)).unlock(PASSWORD)).text);
    for (let i = 0; i < 2; i++) {
      const r = await get(href);
      expect(r.status).toBe(200);
      expect((r.body as Buffer).equals(content)).toBe(true);
    }
    expect(await downloadsOf(f.id, s.id)).toBe(1);
    // A second recipient (a new password entry) is a second download.
    const other = downloadHref((await (await recipient(s.token)).unlock(PASSWORD)).text);
    expect(other).not.toBe(href);
    expect((await get(other)).status).toBe(200);
    expect(await downloadsOf(f.id, s.id)).toBe(2);
  });

  it('a one-download link: its ticket can fetch again (also by Range); anyone else gets the gone answer', async () => {
    await init();
    const content = pattern(200_000, 3);
    const f = await upload(content, 'once.bin');
    const s = await share(f.id, { password: PASSWORD, maxDownloads: 1 });
    const first = await recipient(s.token);
    const latecomer = await recipient(s.token); // opened the page before the link was used up
    const href = downloadHref((await first.unlock(PASSWORD)).text);
    const a = await get(href);
    expect((a.body as Buffer).equals(content)).toBe(true);
    expect(await downloadsOf(f.id, s.id)).toBe(1);

    const again = await get(href);
    expect(again.status).toBe(200);
    expect((again.body as Buffer).equals(content)).toBe(true);
    const part = await get(href, { Range: 'bytes=100-199' });
    expect(part.status).toBe(206);
    expect((part.body as Buffer).equals(content.subarray(100, 200))).toBe(true);
    // Its details page still opens for the ticket.
    const details = await h.request.get(`/s/${s.token}?${href.split('?')[1]}`);
    expect(details.status).toBe(200);
    expect(details.text).toContain(f.sha256);
    expect(await downloadsOf(f.id, s.id)).toBe(1);

    const gone = await goneAnswer();
    const missingPage = await h.request.get(`/s/${'A'.repeat(43)}`);
    // A new password entry: no new ticket, the same page as for a link that never existed.
    const late = await latecomer.unlock(PASSWORD);
    expect(late.status).toBe(404);
    expect(late.text).toBe(missingPage.text);
    expect(late.text).not.toContain('ticket=');
    // No ticket at all (Basic auth, or nothing).
    for (const headers of [{ Authorization: `Basic ${Buffer.from(`:${PASSWORD}`).toString('base64')}` }, {}]) {
      const r = await h.request.get(`/s/${s.token}/content`).set(headers);
      expect({ status: r.status, body: { ...r.body, requestId: '' } }).toEqual(gone);
    }
    // A ticket forged with another id does not ride on the recorded one.
    const [exp, , mac] = decodeURIComponent(href.split('ticket=')[1]!).split('.');
    const forged = await h.request.get(`/s/${s.token}/content?ticket=${exp}.${'B'.repeat(22)}.${mac}`);
    expect({ status: forged.status, body: { ...forged.body, requestId: '' } }).toEqual(gone);
    expect(await downloadsOf(f.id, s.id)).toBe(1);
  });

  it('a link without a password: a second click on the same page does not spend another download', async () => {
    await init();
    const content = pattern(100_000, 4);
    const f = await upload(content, 'open.bin');
    const s = await share(f.id, { maxDownloads: 2 });
    const page = await h.request.get(`/s/${s.token}`);
    const href = downloadHref(page.text);
    for (let i = 0; i < 3; i++) expect(((await get(href)).body as Buffer).equals(content)).toBe(true);
    expect(await downloadsOf(f.id, s.id)).toBe(1);
  });
});

describe('item 10: a stalled reader gives way on a one-download link', () => {
  it('recipient A stalls; recipient B then gets the file byte-exact, A is cut, and the link is used up', async () => {
    // A one-second grace at a 1 MiB/s floor, heartbeats every half second; the stall
    // watchdog (idle period 5 s) alone would not cut A before B asks.
    await init({ SOCKET_IDLE_TIMEOUT_SECONDS: '5', SHARE_SLOW_GRACE_SECONDS: '1', SHARE_MIN_RATE: '1MiB' });
    const content = pattern(24 * 1024 * 1024, 11);
    const f = await upload(content, 'big.bin');
    const s = await share(f.id, { maxDownloads: 1 });
    const server = await serve(h.app);
    try {
      // A: a raw socket that reads the first bytes and then stops reading.
      const a = net.connect(server.port, '127.0.0.1');
      const chunks: Buffer[] = [];
      const firstData = new Promise<void>((resolve) => a.once('data', () => resolve()));
      const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
      a.on('error', () => {});
      let reading = false;
      a.on('data', (c: Buffer) => {
        chunks.push(c);
        if (!reading) a.pause();
      });
      a.write(`GET /s/${s.token}/content HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      await firstData;
      expect(Buffer.concat(chunks).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
      // Long enough for A to be slow for the grace period, well before the watchdog's second look.
      await new Promise((r) => setTimeout(r, 3000));

      // B asks and gets the whole file.
      const b = await get(`/s/${s.token}/content`);
      expect(b.status).toBe(200);
      expect((b.body as Buffer).length).toBe(content.length);
      expect((b.body as Buffer).equals(content)).toBe(true);

      // A's connection is ended at its next heartbeat (half a second here; the decision may
      // come from another instance, so it is not pushed): give that heartbeat time to come,
      // then read on. A never gets the whole body.
      await new Promise((r) => setTimeout(r, 1500));
      reading = true;
      a.resume();
      await closed;
      const raw = Buffer.concat(chunks);
      const headerEnd = raw.indexOf('\r\n\r\n') + 4;
      expect(raw.length - headerEnd).toBeLessThan(content.length);

      expect(await downloadsOf(f.id, s.id)).toBe(1);
      const gone = await goneAnswer();
      const third = await h.request.get(`/s/${s.token}/content`);
      expect({ status: third.status, body: { ...third.body, requestId: '' } }).toEqual(gone);
    } finally {
      await server.close();
    }
  }, 30_000);
});

describe('item 18: a new link or token is shown on one GET after a 303, and a reload creates nothing', () => {
  type Agent = ReturnType<typeof import('supertest').agent>;
  const HTML = { Accept: 'text/html' };

  async function csrfFrom(agent: Agent, p: string): Promise<string> {
    const r = await agent.get(p).set(HTML);
    const m = /name="_csrf" value="([^"]+)"/.exec(r.text);
    if (!m) throw new Error(`no CSRF token on ${p} (${r.status})`);
    return m[1]!;
  }

  async function signIn(): Promise<Agent> {
    const agent = (await import('supertest')).default.agent(h.app);
    const _csrf = await csrfFrom(agent, '/login');
    const r = await agent.post('/login').type('form').set(HTML).send({ _csrf, username: 'admin', password: 'admin password 123' });
    expect(r.status).toBe(303);
    return agent;
  }

  const sessionsDump = async () => JSON.stringify(await h.sql('SELECT * FROM sessions'));

  it('share links: POST answers 303, the GET shows the link once, a second GET shows "shown once" and no new link', async () => {
    await init();
    const f = await upload(Buffer.from('prg contents'), 'prg.txt');
    const agent = await signIn();
    const _csrf = await csrfFrom(agent, `/files/${f.id}`);
    const created = await agent.post(`/files/${f.id}/shares`).type('form').set(HTML).send({ _csrf, expires: '3600', maxDownloads: '', note: '', password: '' });
    expect(created.status).toBe(303);
    const location = created.headers.location as string;
    expect(location).toBe(`/files/${f.id}/new-link`);
    expect(created.text).not.toMatch(/\/s\/[A-Za-z0-9_-]{43}/);
    // The waiting link is sealed in the session row, not stored in the clear.
    const listed = async () => (await h.request.get(`/api/v1/files/${f.id}/shares`).set(auth())).body.shares as unknown[];
    expect(await listed()).toHaveLength(1);
    const waiting = await sessionsDump();
    expect(waiting).toContain('oneTime');
    // A HEAD (a link checker, a prefetch) shows nothing and must not use up the one view.
    expect((await agent.head(location).set(HTML)).status).toBe(200);
    expect(await sessionsDump()).toContain('oneTime');

    const first = await agent.get(location).set(HTML);
    expect(first.status).toBe(200);
    const link = /value="https?:\/\/[^"]*\/s\/([A-Za-z0-9_-]{43})"/.exec(first.text);
    expect(link, 'the new link is on the page').not.toBeNull();
    expect(first.text).toContain('QR code of the new link');
    expect((await h.request.get(`/s/${link![1]}`)).status).toBe(200);
    expect(waiting).not.toContain(link![1]!);
    expect(await sessionsDump()).not.toContain('oneTime');

    for (let i = 0; i < 2; i++) {
      const again = await agent.get(location).set(HTML);
      expect(again.status).toBe(200);
      expect(again.text).not.toContain(link![1]!);
      expect(again.text).not.toMatch(/\/s\/[A-Za-z0-9_-]{43}/);
      expect(again.text).toContain('The new link was shown once');
    }
    expect(await listed()).toHaveLength(1);
  });

  it('API tokens: POST answers 303, /tokens/new shows the token once, a reload neither shows it nor creates another', async () => {
    await init();
    const agent = await signIn();
    const count = async () => ((await h.request.get('/api/v1/auth/tokens').set(auth())).body.tokens as unknown[]).length;
    expect(await count()).toBe(1);
    const _csrf = await csrfFrom(agent, '/tokens');
    const created = await agent.post('/tokens').type('form').set(HTML).send({ _csrf, name: 'laptop', expires: '86400' });
    expect(created.status).toBe(303);
    expect(created.headers.location).toBe('/tokens/new');
    expect(created.text).not.toContain('sfs_');
    expect(await count()).toBe(2);
    const waiting = await sessionsDump();
    expect(waiting).toContain('oneTime');

    const first = await agent.get('/tokens/new').set(HTML);
    expect(first.status).toBe(200);
    const m = /id="new-token" class="secret" type="text" readonly value="(sfs_[^"]+)"/.exec(first.text);
    expect(m, 'the new token is on the page').not.toBeNull();
    const newToken = m![1]!;
    expect((await h.request.get('/api/v1/auth/tokens').set('Authorization', `Bearer ${newToken}`)).status).toBe(200);
    expect(waiting).not.toContain(newToken);
    expect(waiting).not.toContain(newToken.slice(4));

    const again = await agent.get('/tokens/new').set(HTML);
    expect(again.status).toBe(200);
    expect(again.text).not.toContain(newToken);
    expect(again.text).not.toContain('sfs_');
    expect(again.text).toContain('The new token was shown once');
    expect(await count()).toBe(2);
  });

  it('another session cannot take the waiting secret', async () => {
    await init();
    const mine = await signIn();
    const theirs = await signIn();
    const _csrf = await csrfFrom(mine, '/tokens');
    expect((await mine.post('/tokens').type('form').set(HTML).send({ _csrf, name: 'x', expires: '86400' })).status).toBe(303);
    const other = await theirs.get('/tokens/new').set(HTML);
    expect(other.text).not.toContain('sfs_');
    const own = await mine.get('/tokens/new').set(HTML);
    expect(own.text).toMatch(/value="sfs_/);
  });
});
