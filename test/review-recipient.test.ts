/**
 * Issue 11, recipient side: the shell-quoted verify hint (item 2), slow readers giving way on a
 * one-download link (item 10), password links showing the details page with a reusable ticket
 * (item 15), and new links/tokens shown once through POST-redirect-GET (item 18).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { posixQuote, powershellQuote, verifyCommands } from '../src/http/shell-quote.js';
import { binaryParser, makeHarness, pattern, setupAdmin, type Harness } from './helpers.js';

let h: Harness;
let token: string;
const temps: string[] = [];
afterEach(() => {
  h?.cleanup();
  for (const d of temps.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const auth = () => ({ Authorization: `Bearer ${token}` });

async function init(env: Record<string, string> = {}) {
  h = makeHarness(env);
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
