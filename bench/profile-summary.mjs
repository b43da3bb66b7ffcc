/**
 * Summarises a V8 .cpuprofile (from `npm run bench -- --profile`): self time per function
 * and per package, so the hot spots of a scenario can be read without a GUI.
 *
 *   node bench/profile-summary.mjs <file.cpuprofile> [top=25]
 */
import fs from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-summary.mjs <file.cpuprofile> [top]');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function where(cf) {
  const url = cf.url || '';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return 'node core';
  if (/\/dist\//.test(url)) return 'sfs (dist)';
  if (/\/bench\//.test(url)) return 'bench';
  if (!url) return cf.functionName.startsWith('(') ? cf.functionName : 'native';
  return url;
}

const perFn = new Map();
const perPkg = new Map();
for (const [id, us] of self) {
  const cf = byId.get(id).callFrame;
  const key = `${cf.functionName || '(anonymous)'}  ${cf.url ? `${cf.url.replace(/^file:\/\/.*?\/(node_modules|dist|bench)\//, '$1/')}:${cf.lineNumber + 1}` : ''}`;
  perFn.set(key, (perFn.get(key) ?? 0) + us);
  const pkg = where(cf);
  perPkg.set(pkg, (perPkg.get(pkg) ?? 0) + us);
}
const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled\n\nSelf time by package:`);
for (const [k, us] of [...perPkg].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`${pct(us)}  ${k}`);
console.log('\nSelf time by function:');
for (const [k, us] of [...perFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
