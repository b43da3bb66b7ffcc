/**
 * A production install (`npm ci --omit=dev` on a built tree) must run the server and the CLI:
 * every package the built code imports, statically or dynamically, is a runtime dependency.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

/** The package a bare specifier names (`@scope/name/sub` → `@scope/name`), or null for relative and node: ones. */
function packageOf(spec: string): string | null {
  if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) return null;
  const parts = spec.split('/');
  return spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
}

function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  // Linear patterns: a quoted specifier after `from`, `import(` or a bare `import`.
  for (const m of text.matchAll(/(?:\bfrom|\bimport\s*\(|^import)\s*['"]([^'"\n]+)['"]/gm)) out.push(m[1]!);
  return out;
}

describe('runtime dependencies', () => {
  it('every package imported by dist/ is in "dependencies", none only in "devDependencies"', () => {
    const dist = path.join(ROOT, 'dist');
    expect(fs.existsSync(path.join(dist, 'main.js'))).toBe(true);
    const files = fs.readdirSync(dist, { recursive: true }).map(String).filter((f) => f.endsWith('.js'));
    const used = new Map<string, string>();
    for (const f of files) for (const spec of importsOf(path.join(dist, f))) {
      const p = packageOf(spec);
      if (p) used.set(p, f);
    }
    expect(used.size).toBeGreaterThan(5);
    const missing = [...used].filter(([p]) => !(p in pkg.dependencies)).map(([p, f]) => `${p} (imported by dist/${f})`);
    expect(missing).toEqual([]);
  });
});
