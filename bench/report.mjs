/**
 * Turns a results object (bench/results/latest.json) into the summary with ratios and
 * targets, a text table, an SVG chart, and the generated part of docs/benchmarks.md.
 *
 *   node bench/report.mjs [results.json] [--write-docs]   re-renders without re-running
 */
import fs from 'node:fs';
import path from 'node:path';
import { GiB, MiB, fmtBytes, median, mibps } from './lib.mjs';

const rate = (runs, size) => median(runs.map((r) => mibps(size, r.seconds)));
const maxOf = (xs) => Math.max(...xs.filter(Number.isFinite));
const sizeLabel = (n) => (n >= GiB ? `${n / GiB} GiB` : `${n / MiB} MiB`);
const SERVERS = ['sfs', 'baseline', 'honest'];
/** Small-file runs of one server: an array (median of several) or, in older results, one object. */
const smallRuns = (x) => (Array.isArray(x) ? x : x ? [x] : []);
const medianOf = (runs, f) => median(runs.map(f));

/**
 * CPU used by other programs while the benchmark measured, in cores: the mean weighted by
 * each operation's duration, and the worst operation of at least a second (/proc/stat
 * counts in 10 ms ticks, so shorter operations give no meaningful figure on their own).
 */
export function otherLoadSummary(r) {
  const ops = [];
  const add = (x) => x && Number.isFinite(x.otherLoad) && Number.isFinite(x.seconds) && ops.push(x);
  for (const mode of ['multipart', 'put']) for (const n of ['sfs', 'baseline']) r.upload?.[mode][n].forEach(add);
  for (const mode of ['multipart', 'put']) for (const n of SERVERS) r.curl?.upload[mode][n]?.forEach(add);
  for (const n of SERVERS) r.curl?.download[n]?.forEach(add);
  for (const n of SERVERS) {
    r.download?.[n]?.forEach(add);
    for (const k of Object.keys(r.range?.[n] ?? {})) r.range[n][k].forEach(add);
    for (const m of ['multipart', 'put', 'download']) add(r.memorySmall?.[n]?.[m]);
    smallRuns(r.small?.upload?.[n]).forEach(add);
    smallRuns(r.small?.download?.[n]).forEach(add);
  }
  if (r.format && Number.isFinite(r.format.otherLoad) && Number.isFinite(r.format.seconds)) ops.push(r.format);
  const total = ops.reduce((a, x) => a + x.seconds, 0);
  if (!total) return { mean: NaN, worst: NaN, seconds: 0 };
  const mean = ops.reduce((a, x) => a + x.otherLoad * x.seconds, 0) / total;
  const long = ops.filter((x) => x.seconds >= 1).map((x) => x.otherLoad);
  return { mean: Math.round(mean * 100) / 100, worst: long.length ? Math.max(...long) : NaN, seconds: Math.round(total) };
}

/** Figures, ratios and targets. Every row: { group, label, unit, sfs, base, ratio, target, met }. */
export function evaluate(r) {
  const rows = [];
  const row = (o) => rows.push({ ratio: o.base ? o.sfs / o.base : undefined, ...o });

  if (r.curl) {
    // The headline: curl as the client, no hashing while timing; targets are issue 13's goals.
    const size = r.curl.size;
    const g = 'Large files, curl client (no hashing while timing)';
    for (const mode of ['multipart', 'put']) {
      const sfs = rate(r.curl.upload[mode].sfs, size);
      const base = rate(r.curl.upload[mode].baseline, size);
      row({ group: g, key: `curl.upload.${mode}`, label: `Upload ${sizeLabel(size)}, ${mode === 'put' ? 'PUT (curl -T)' : 'multipart (curl -F)'}`, unit: 'MiB/s', sfs, base, targetText: '≥ 0.85 × baseline', met: sfs / base >= 0.85 });
    }
    const sfs = rate(r.curl.download.sfs, size);
    const base = rate(r.curl.download.baseline, size);
    row({ group: g, key: 'curl.download', label: `Download ${sizeLabel(size)} (curl -o /dev/null)`, unit: 'MiB/s', sfs, base, targetText: '≥ 0.75 × sendFile', met: sfs / base >= 0.75 });
  }
  if (r.upload) {
    const size = r.upload.size;
    for (const mode of ['multipart', 'put']) {
      const sfs = rate(r.upload[mode].sfs, size);
      const base = rate(r.upload[mode].baseline, size);
      row({ group: 'Large files, hashing client', key: `upload.${mode}`, label: `Upload ${sizeLabel(size)}, ${mode === 'put' ? 'PUT' : 'multipart'}`, unit: 'MiB/s', sfs, base, targetText: '≥ 0.8 × baseline', met: sfs / base >= 0.8 });
    }
  }
  if (r.download) {
    const sfs = rate(r.download.sfs, r.download.size);
    const base = rate(r.download.baseline, r.download.size);
    row({ group: 'Large files, hashing client', key: 'download', label: `Download ${sizeLabel(r.download.size)}`, unit: 'MiB/s', sfs, base, targetText: '≥ 0.7 × sendFile', met: sfs / base >= 0.7 });
  }
  const peaks = (name) => {
    const out = {};
    if (r.memorySmall?.[name]) {
      const m = r.memorySmall[name];
      out.small = { size: m.size, multipart: m.multipart.serverPeak, put: m.put.serverPeak, download: m.download.serverPeak };
    }
    if (r.upload && r.download) {
      out.big = {
        size: r.upload.size,
        multipart: maxOf(r.upload.multipart[name].map((x) => x.serverPeak)),
        put: maxOf(r.upload.put[name].map((x) => x.serverPeak)),
        download: maxOf(r.download[name].map((x) => x.serverPeak)),
      };
    }
    for (const v of Object.values(out)) v.max = Math.max(v.multipart, v.put, v.download);
    return out;
  };
  const memory = { sfs: peaks('sfs'), baseline: peaks('baseline') };
  if (memory.sfs.small) {
    const s = memory.sfs.small;
    row({ group: 'Memory', key: 'memory.small', label: `Server peak RSS, ${sizeLabel(s.size)} file`, unit: 'MiB', sfs: s.max / MiB, base: memory.baseline.small?.max / MiB, noRatio: true });
  }
  if (memory.sfs.big) {
    const b = memory.sfs.big;
    row({ group: 'Memory', key: 'memory.big', label: `Server peak RSS, ${sizeLabel(b.size)} file`, unit: 'MiB', sfs: b.max / MiB, base: memory.baseline.big?.max / MiB, noRatio: true, targetText: '< 150 MiB', met: b.max < 150 * MiB });
  }
  if (memory.sfs.small && memory.sfs.big) {
    const g = memory.sfs.big.max / memory.sfs.small.max;
    rows.push({ group: 'Memory', key: 'memory.growth', label: `Peak RSS ${sizeLabel(memory.sfs.big.size)} ÷ ${sizeLabel(memory.sfs.small.size)}`, unit: '×', sfs: g, targetText: '1 ± 0.2', met: Math.abs(g - 1) <= 0.2 });
  }
  let range;
  if (r.range) {
    range = { sfs: {}, baseline: {} };
    for (const name of ['sfs', 'baseline'])
      for (const [k, runs] of Object.entries(r.range[name])) {
        range[name][k] = { ttfbMs: median(runs.map((x) => x.ttfbMs)), totalMs: median(runs.map((x) => x.totalMs)) };
      }
    for (const k of Object.keys(r.range.offsets)) {
      row({ group: 'Range reads', key: `range.${k}.ttfb`, label: `${fmtBytes(r.range.length)} range at ${k}: first byte`, unit: 'ms', sfs: range.sfs[k].ttfbMs, base: range.baseline[k].ttfbMs, lowerIsBetter: true });
      row({ group: 'Range reads', key: `range.${k}.total`, label: `${fmtBytes(r.range.length)} range at ${k}: total`, unit: 'ms', sfs: range.sfs[k].totalMs, base: range.baseline[k].totalMs, lowerIsBetter: true });
    }
    const f = range.sfs.end.ttfbMs / range.sfs.start.ttfbMs;
    rows.push({ group: 'Range reads', key: 'range.endVsStart', label: 'First byte at end ÷ at start', unit: '×', sfs: f, targetText: '≤ 2', met: f <= 2 });
  }
  if (r.small) {
    for (const dir of ['upload', 'download']) {
      const runs = (n) => smallRuns(r.small[dir][n]);
      if (!runs('sfs').length || !runs('baseline').length) continue;
      const rps = (n) => medianOf(runs(n), (x) => x.rps);
      const what = `${r.small.size / 1024} KiB ${dir}s, ${r.small.connections} conns`;
      row({ group: 'Small files', key: `small.${dir}.rps`, label: `${what}, vs bare baseline`, unit: 'req/s', sfs: rps('sfs'), base: rps('baseline'), targetText: 'report only' });
      if (runs('honest').length) {
        row({ group: 'Small files', key: `small.${dir}.honest`, label: `${what}, vs honest baseline`, unit: 'req/s', sfs: rps('sfs'), base: rps('honest'), targetText: '≥ 0.8 × honest', met: rps('sfs') / rps('honest') >= 0.8 });
      }
      row({ group: 'Small files', key: `small.${dir}.p50`, label: `  latency p50 (vs bare)`, unit: 'ms', sfs: medianOf(runs('sfs'), (x) => x.p50), base: medianOf(runs('baseline'), (x) => x.p50), lowerIsBetter: true });
      row({ group: 'Small files', key: `small.${dir}.p99`, label: `  latency p99 (vs bare)`, unit: 'ms', sfs: medianOf(runs('sfs'), (x) => x.p99), base: medianOf(runs('baseline'), (x) => x.p99), lowerIsBetter: true });
    }
  }
  if (r.format) {
    const f = r.format.results;
    const fr = (key, label, sfs, base, target) =>
      row({ group: 'Format alone', key, label, unit: 'MiB/s', sfs, base, baseLabel: 'raw', targetText: target ? '≥ 0.6 × raw' : undefined, met: target ? sfs / base >= 0.6 : undefined });
    fr('format.encrypt', 'Encrypt (ChunkSealer) vs AES-256-GCM', f.formatEncrypt, f.rawAesGcmEncrypt, true);
    fr('format.decrypt', 'Decrypt (decryptRange) vs AES-256-GCM', f.formatDecrypt, f.rawAesGcmDecrypt, true);
    fr('format.encryptSha', 'Encrypt + SHA-256 (upload path)', f.formatEncryptSha256, f.rawAesGcmEncryptSha256);
    fr('format.decryptSha', 'Decrypt + SHA-256 check (download path)', f.formatDecryptSha256, f.rawAesGcmDecryptSha256);
    rows.push({ group: 'Format alone', key: 'format.rawSha', label: 'Raw SHA-256 (one core)', unit: 'MiB/s', sfs: undefined, base: f.rawSha256, baseLabel: 'raw' });
    rows.push({ group: 'Format alone', key: 'format.perChunk', label: 'Raw AES-GCM, new cipher per chunk', unit: 'MiB/s', sfs: undefined, base: f.rawAesGcmPerChunk, baseLabel: 'raw' });
  }
  const misses = rows.filter((x) => x.met === false).map((x) => x.label.trim());
  return { rows, memory, range, misses };
}

/**
 * Server CPU seconds (utime + stime of the server process from /proc, all threads) per GiB
 * moved, median over the runs, per scenario and server: stable when wall-clock figures are
 * not. Small files also get server CPU milliseconds per request.
 */
export function cpuTable(r) {
  const perGiB = (runs, size) => median(runs.map((x) => x.serverCpu / ((x.bytes ?? size) / GiB)));
  const rows = [];
  const add = (label, get) => rows.push([label, ...SERVERS.map((n) => get(n))]);
  if (r.curl) {
    const size = r.curl.size;
    for (const mode of ['multipart', 'put']) add(`curl upload ${sizeLabel(size)}, ${mode}`, (n) => (r.curl.upload[mode][n] ? perGiB(r.curl.upload[mode][n], size) : NaN));
    add(`curl download ${sizeLabel(size)}`, (n) => (r.curl.download[n] ? perGiB(r.curl.download[n], size) : NaN));
  }
  if (r.upload) {
    for (const mode of ['multipart', 'put']) add(`hashing client upload ${sizeLabel(r.upload.size)}, ${mode}`, (n) => (r.upload[mode][n] ? perGiB(r.upload[mode][n], r.upload.size) : NaN));
  }
  if (r.download) add(`hashing client download ${sizeLabel(r.download.size)}`, (n) => (r.download[n] ? perGiB(r.download[n], r.download.size) : NaN));
  const small = [];
  if (r.small) {
    for (const dir of ['upload', 'download']) {
      const payload = (n) => medianOf(smallRuns(r.small[dir][n]), (x) => x.serverCpu / ((x.requests * r.small.size) / GiB));
      const perReq = (n) => medianOf(smallRuns(r.small[dir][n]), (x) => (x.serverCpu / x.requests) * 1000);
      add(`${r.small.size / 1024} KiB ${dir}s (per GiB of payload)`, payload);
      small.push([`${r.small.size / 1024} KiB ${dir}s, ms per request`, ...SERVERS.map(perReq)]);
    }
  }
  return { perGiB: rows, perRequest: small };
}

const cpuNum = (v) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(2)) : '—');

function cpuText(results) {
  const t = cpuTable(results);
  if (!t.perGiB.length) return '';
  const head = ['Server CPU seconds per GiB', 'sfs', 'baseline', 'honest'];
  const all = [head, ...t.perGiB, ...t.perRequest].map((r, i) => (i === 0 ? r : [r[0], ...r.slice(1).map(cpuNum)]));
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return `\n${all.map((r) => r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ')).join('\n')}\n`;
}

function num(v, unit) {
  if (v === undefined || v === null || !Number.isFinite(v)) return '—';
  if (unit === '×') return v.toFixed(2);
  if (unit === 'ms') return v < 10 ? v.toFixed(2) : v.toFixed(1);
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function cells(x) {
  const ratio = x.noRatio || x.ratio === undefined || !Number.isFinite(x.ratio) ? '' : `${x.ratio.toFixed(2)}`;
  const met = x.met === undefined ? '' : x.met ? 'yes' : 'MISSED';
  return [x.label, x.unit, num(x.sfs, x.unit), num(x.base, x.unit), ratio, x.targetText ?? '', met];
}

const HEAD = ['Scenario', 'Unit', 'sfs', 'Baseline / raw', 'Ratio', 'Target', 'Met'];

/** Plain-text table for the terminal. */
export function printTable(results) {
  const rows = results.summary.rows;
  const all = [HEAD, ...rows.map(cells)];
  const w = HEAD.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ');
  let out = `\n${line(HEAD)}\n${w.map((n) => '-'.repeat(n)).join('  ')}\n`;
  let group;
  for (const x of rows) {
    if (x.group !== group) {
      group = x.group;
      out += `${group}\n`;
    }
    out += `${line(cells(x))}\n`;
  }
  const m = results.summary.misses;
  out += cpuText(results);
  out += `\nTargets missed: ${m.length ? m.join('; ') : 'none'}\n`;
  return out;
}

function markdownTable(results) {
  const rows = results.summary.rows;
  let out = `| ${HEAD.join(' | ')} |\n|${HEAD.map((_, i) => (i >= 2 && i <= 4 ? '---:' : '---')).join('|')}|\n`;
  let group;
  for (const x of rows) {
    if (x.group !== group) {
      group = x.group;
      out += `| **${group}** | | | | | | |\n`;
    }
    const c = cells(x);
    c[0] = c[0].replace(/^ +/, '&nbsp;&nbsp;');
    if (c[6] === 'MISSED') c[6] = '**missed**';
    out += `| ${c.join(' | ')} |\n`;
  }
  return out;
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A self-contained SVG: one panel per unit, sfs against its baseline (or the raw ceiling). */
export function renderSvg(results) {
  const rows = results.summary.rows;
  const pick = (keys) => keys.map((k) => rows.find((x) => x.key === k)).filter((x) => x && Number.isFinite(x.sfs) && Number.isFinite(x.base));
  const panels = [
    { title: 'Large files, curl as the client (MiB/s, higher is better)', rows: pick(['curl.upload.multipart', 'curl.upload.put', 'curl.download']), base: 'plain Express + multer / sendFile' },
    { title: 'Large files, hashing client (MiB/s, higher is better)', rows: pick(['upload.multipart', 'upload.put', 'download']), base: 'plain Express + multer / sendFile' },
    { title: 'Small files, 4 KiB at 32 connections (req/s, higher is better)', rows: pick(['small.upload.rps', 'small.upload.honest', 'small.download.rps', 'small.download.honest']), base: 'bare / honest plaintext baseline' },
    { title: 'The format alone, one core (MiB/s, higher is better)', rows: pick(['format.encrypt', 'format.decrypt', 'format.encryptSha', 'format.decryptSha']), base: 'raw node:crypto ceiling' },
  ].filter((p) => p.rows.length);
  const W = 820;
  const labelW = 300;
  const barW = 380;
  const barH = 14;
  const rowH = 2 * barH + 14;
  let y = 40;
  let body = '';
  for (const p of panels) {
    body += `<text x="16" y="${y}" class="t">${esc(p.title)}</text>\n`;
    y += 12;
    const max = Math.max(...p.rows.flatMap((x) => [x.sfs, x.base])) * 1.05;
    for (const x of p.rows) {
      const bw = (v) => Math.max(1, (v / max) * barW);
      body += `<text x="${labelW - 8}" y="${y + barH + 5}" class="l" text-anchor="end">${esc(x.label.replace(/ vs AES-256-GCM/, ''))}</text>\n`;
      body += `<rect x="${labelW}" y="${y}" width="${bw(x.base).toFixed(1)}" height="${barH}" class="b"/>`;
      body += `<text x="${labelW + bw(x.base) + 4}" y="${y + barH - 3}" class="v">${num(x.base, x.unit)}</text>\n`;
      body += `<rect x="${labelW}" y="${y + barH + 2}" width="${bw(x.sfs).toFixed(1)}" height="${barH}" class="s"/>`;
      body += `<text x="${labelW + bw(x.sfs) + 4}" y="${y + 2 * barH - 1}" class="v">${num(x.sfs, x.unit)}</text>\n`;
      const ok = x.met === undefined ? '' : x.met ? ' ok' : ' miss';
      body += `<text x="${W - 16}" y="${y + barH + 5}" class="r${ok}" text-anchor="end">${x.ratio.toFixed(2)}×</text>\n`;
      y += rowH;
    }
    body += `<text x="${labelW}" y="${y}" class="n">grey: ${esc(p.base)}; blue: sfs; right: ratio sfs ÷ grey</text>\n`;
    y += 30;
  }
  const m = results.meta.machine;
  const sub = `${m.cpu}, ${m.cores} cores, Node ${m.node}, ${results.meta.quick ? 'QUICK run, ' : ''}${results.meta.date.slice(0, 10)}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="system-ui, -apple-system, Segoe UI, sans-serif">
<style>
.t{font-size:14px;font-weight:600;fill:#222}.l{font-size:12px;fill:#333}.v{font-size:11px;fill:#444}.n{font-size:11px;fill:#777}
.r{font-size:13px;font-weight:600;fill:#333}.ok{fill:#1a7f37}.miss{fill:#c62828}.b{fill:#b0b7c3}.s{fill:#2f6fde}
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="16" y="20" class="t">sfs vs plaintext baselines — ${esc(sub)}</text>
${body}</svg>
`;
}

const START = '<!-- bench:generated:start -->';
const END = '<!-- bench:generated:end -->';

/** The generated part of docs/benchmarks.md: machine, command, tables, chart. */
export function generatedMarkdown(results, svgRelPath) {
  const m = results.meta.machine;
  const s = results.summary;
  let md = `${START}\n<!-- Generated by \`npm run bench -- --write-docs\`; edit outside these markers only. -->\n\n`;
  md += `**Machine:** ${m.cpu} (${m.kind}), ${m.cores} cores (CPU flags: ${m.cryptoFlags.join(', ')}), ${fmtBytes(m.memory)} RAM, Linux ${m.kernel}, Node ${m.node}, OpenSSL ${m.openssl}.  \n`;
  md += `**Run:** ${results.meta.date} at commit \`${m.commit}\`${m.srcDirty ? ' (with uncommitted changes in src/)' : ''}, ${results.meta.quick ? '**quick mode**, ' : ''}${results.meta.seconds.toFixed(0)} s in all.  \n`;
  const ol = otherLoadSummary(results);
  if (Number.isFinite(ol.mean)) {
    md += `**Other load on the machine** while measuring (CPU used by programs outside the benchmark, over ${ol.seconds} s of measurements): ${ol.mean.toFixed(2)} cores on average, ${Number.isFinite(ol.worst) ? ol.worst.toFixed(2) : 'n/a'} in the worst operation${ol.mean > 0.25 ? ' — **a disturbed run**: compare ratios, not absolute figures' : ''}.  \n`;
  }
  md += `**Command:** \`npm run bench\` (this page: \`npm run bench -- --write-docs\`; CI smoke check: \`npm run bench -- --quick\`).\n\n`;
  md += markdownTable(results);
  md += `\nTargets missed in this run: ${s.misses.length ? s.misses.join('; ') : 'none'}.\n\n`;
  md += `![sfs against the plaintext baselines](${svgRelPath})\n\n`;
  const mem = s.memory;
  if (mem.sfs.big || mem.sfs.small) {
    md += `Server peak RSS (VmHWM, reset before each operation) per operation, MiB:\n\n| File | Server | multipart upload | PUT upload | download |\n|---|---|---:|---:|---:|\n`;
    for (const k of ['small', 'big'])
      for (const name of ['sfs', 'baseline']) {
        const v = mem[name][k];
        if (v) md += `| ${sizeLabel(v.size)} | ${name} | ${(v.multipart / MiB).toFixed(0)} | ${(v.put / MiB).toFixed(0)} | ${(v.download / MiB).toFixed(0)} |\n`;
      }
    md += `\nIdle RSS after start: sfs ${(results.meta.idleRss.sfs / MiB).toFixed(0)} MiB, baseline ${(results.meta.idleRss.baseline / MiB).toFixed(0)} MiB${results.meta.idleRss.honest ? `, honest baseline ${(results.meta.idleRss.honest / MiB).toFixed(0)} MiB` : ''}.\n\n`;
  }
  const cpu = cpuTable(results);
  if (cpu.perGiB.length) {
    md += `Server CPU seconds per GiB moved (utime + stime of the server process from \`/proc/PID/stat\`, read before and after each operation; median of the runs):\n\n| Scenario | sfs | baseline | honest baseline |\n|---|---:|---:|---:|\n`;
    for (const [l, ...v] of [...cpu.perGiB, ...cpu.perRequest]) md += `| ${l} | ${v.map(cpuNum).join(' | ')} |\n`;
    md += '\n';
  }
  md += `${END}\n`;
  return md;
}

/** Writes the SVG and replaces the generated block of the docs page (creating the page if needed). */
export function writeDocs(results, svg, paths) {
  fs.writeFileSync(paths.svg, svg);
  const rel = path.relative(path.dirname(paths.docs), paths.svg).split(path.sep).join('/');
  const block = generatedMarkdown(results, rel);
  let doc = fs.existsSync(paths.docs) ? fs.readFileSync(paths.docs, 'utf8') : `# Benchmarks\n\n${START}\n${END}\n`;
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  doc = a >= 0 && b > a ? doc.slice(0, a) + block + doc.slice(b + END.length + 1) : `${doc.trimEnd()}\n\n${block}`;
  fs.writeFileSync(paths.docs, doc);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv.slice(2).find((a) => !a.startsWith('--')) ?? path.join(import.meta.dirname, 'results', 'latest.json');
  const results = JSON.parse(fs.readFileSync(file, 'utf8'));
  results.summary = evaluate(results);
  const svg = renderSvg(results);
  process.stdout.write(printTable(results));
  if (process.argv.includes('--write-docs')) {
    const root = path.resolve(import.meta.dirname, '..');
    writeDocs(results, svg, { docs: path.join(root, 'docs', 'benchmarks.md'), svg: path.join(import.meta.dirname, 'benchmarks.svg') });
  }
}
