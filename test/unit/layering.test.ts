// The house rule of src/ (../shared/STYLE.md): imports only run downward, and the lowest rooms stay
// what they are for. Every relative import (static, dynamic and type-only) of every src file is read
// here; an upward or sideways import between folders, a file-level import cycle, I/O in wal/ or a
// storage/ import beyond common/ and fs/, or a re-export fails with the file and the import named.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../../src');

/** Lower number = lower layer. A folder may import only folders with a lower number (and itself). */
export const LAYERS: Record<string, number> = {
  'bin.ts': 9,
  cli: 8,
  commands: 7,
  backup: 6,
  'push-ahead': 6,
  prefetch: 6,
  archive: 5,
  worker: 4,
  wal: 3,
  storage: 3,
  codec: 3,
  fs: 2,
  common: 1,
};

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function importsOf(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(IMPORT)].map((m) => m[1]!);
}

/** The folder (first path part below src/) a file lives in, or the file's own name at the top. */
function roomOf(file: string): string {
  return relative(SRC, file).split('/')[0]!;
}

function resolveImport(from: string, spec: string): string {
  return resolve(dirname(from), spec).replace(/\.js$/, '.ts');
}

const files = sourceFiles(SRC);

describe('src layering', () => {
  it('knows every folder of src/', () => {
    const rooms = new Set(files.map(roomOf));
    expect([...rooms].filter((r) => LAYERS[r] === undefined)).toEqual([]);
  });

  it('is the list README "Source layout" shows, in the same order', () => {
    const readme = readFileSync(resolve(SRC, '../README.md'), 'utf8');
    const block = /### Source layout[\s\S]*?```\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const listed = [...block.matchAll(/^src\/([a-z.-]+?)\/?\s/gm)].map((m) => m[1]!);
    expect(listed).toEqual(Object.keys(LAYERS));
  });

  it('imports only run downward between folders', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = roomOf(file);
      for (const spec of importsOf(file)) {
        if (!spec.startsWith('.') || spec.endsWith('.json')) continue;
        const to = roomOf(resolveImport(file, spec));
        if (to !== from && !(LAYERS[to]! < LAYERS[from]!)) upward.push(`${relative(SRC, file)} imports ${spec} (${from} -> ${to})`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('has no import cycle between files', () => {
    const graph = new Map(files.map((f) => [f, importsOf(f).filter((s) => s.startsWith('.') && !s.endsWith('.json')).map((s) => resolveImport(f, s))]));
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(SRC, p)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const next of graph.get(f) ?? []) visit(next, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });

  it('keeps wal/ pure PostgreSQL knowledge: no I/O, nothing from a repository', () => {
    const impure: string[] = [];
    for (const file of files.filter((f) => roomOf(f) === 'wal')) {
      for (const spec of importsOf(file)) {
        const ok = spec.startsWith('.') ? roomOf(resolveImport(file, spec)) === 'wal' || roomOf(resolveImport(file, spec)) === 'common' : spec === 'node:path';
        if (!ok) impure.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(impure).toEqual([]);
  });

  it('never re-exports: each name is imported from the file that defines it', () => {
    const reexports = files.filter((f) => /^export\s+(?:\*|(?:type\s+)?\{[^}]*\})\s+from\s/m.test(readFileSync(f, 'utf8')));
    expect(reexports.map((f) => relative(SRC, f))).toEqual([]);
  });

  it('lets storage/ import only common/ and fs/', () => {
    const wrong: string[] = [];
    for (const file of files.filter((f) => roomOf(f) === 'storage')) {
      for (const spec of importsOf(file)) {
        if (!spec.startsWith('.')) continue;
        const to = roomOf(resolveImport(file, spec));
        if (!['storage', 'common', 'fs'].includes(to)) wrong.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
