// The house rule of src/ (README "Source layout"): imports only run downward, and the lowest rooms stay
// what they are for. Every import (static, dynamic, type-only, re-export) of every src file is read
// with TypeScript's parser; an upward or sideways import between folders, a file-level import cycle,
// a computed import, I/O in wal/, a storage/ import beyond common/, fs/ and crypto/, or a re-export fails with
// the file and the import named.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../../src');

/** Lower number = lower layer. A folder may import only folders with a lower number (and itself). */
export const LAYERS: Record<string, number> = {
  'bin.ts': 10,
  cli: 9,
  commands: 8,
  operate: 7,
  backup: 6,
  'push-ahead': 6,
  prefetch: 6,
  archive: 5,
  worker: 4,
  wal: 3,
  storage: 3,
  codec: 3,
  fs: 2,
  crypto: 2,
  common: 1,
};

interface Import {
  spec: string;
  /** Only types cross (erased at build): `import type`, or every named import marked `type`. */
  typeOnly: boolean;
  /** `export ... from`: a re-export. */
  reexport: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/**
 * Every module a file names, read with TypeScript's own parser: static and type imports, re-exports,
 * and dynamic import() (whose argument must be a plain string, or it is reported as `<computed>`).
 */
const parsed = new Map<string, Import[]>();

function importsOf(file: string): Import[] {
  const known = parsed.get(file);
  if (known) return known;
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);
  const out: Import[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const c = node.importClause;
      const named = c?.namedBindings && ts.isNamedImports(c.namedBindings) ? c.namedBindings.elements : undefined;
      const typeOnly = !!c && (c.isTypeOnly || (!c.name && !!named && named.length > 0 && named.every((e) => e.isTypeOnly)));
      out.push({ spec: node.moduleSpecifier.text, typeOnly, reexport: false });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push({ spec: node.moduleSpecifier.text, typeOnly: node.isTypeOnly, reexport: true });
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const e = node.moduleReference.expression;
      out.push({ spec: ts.isStringLiteral(e) ? e.text : '<computed>', typeOnly: false, reexport: false });
    } else if (ts.isCallExpression(node) && (node.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(node.expression) && node.expression.text === 'require'))) {
      const a = node.arguments[0];
      out.push({ spec: a && ts.isStringLiteralLike(a) ? a.text : '<computed>', typeOnly: false, reexport: false });
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push({ spec: node.argument.literal.text, typeOnly: true, reexport: false });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  parsed.set(file, out);
  return out;
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

  it('reads every import: none is computed at run time', () => {
    const computed = files.flatMap((f) => importsOf(f).filter((i) => i.spec === '<computed>').map(() => relative(SRC, f)));
    expect(computed).toEqual([]);
  });

  it('imports only run downward between folders', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = roomOf(file);
      for (const { spec } of importsOf(file)) {
        if (!spec.startsWith('.') || spec.endsWith('.json')) continue;
        const to = roomOf(resolveImport(file, spec));
        if (to !== from && !(LAYERS[to]! < LAYERS[from]!)) upward.push(`${relative(SRC, file)} imports ${spec} (${from} -> ${to})`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('has no import cycle between files', () => {
    const graph = new Map(
      files.map((f) => [f, importsOf(f).filter(({ spec }) => spec.startsWith('.') && !spec.endsWith('.json')).map(({ spec }) => resolveImport(f, spec))]),
    );
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

  it('keeps wal/ pure PostgreSQL knowledge: no I/O, only the error table (and types) from common/', () => {
    const impure: string[] = [];
    for (const file of files.filter((f) => roomOf(f) === 'wal')) {
      for (const { spec, typeOnly } of importsOf(file)) {
        const target = spec.startsWith('.') ? relative(SRC, resolveImport(file, spec)) : '';
        const ok = spec.startsWith('.')
          ? target.startsWith('wal/') || target === 'common/errors.ts' || (typeOnly && target.startsWith('common/'))
          : spec === 'node:path';
        if (!ok) impure.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(impure).toEqual([]);
  });

  it('never re-exports: each name is imported from the file that defines it', () => {
    const reexports = files.flatMap((f) => importsOf(f).filter((i) => i.reexport).map((i) => `${relative(SRC, f)} re-exports ${i.spec}`));
    expect(reexports).toEqual([]);
  });

  it('lets storage/ import only common/, fs/ and crypto/ (the bottom layer, split in three)', () => {
    const wrong: string[] = [];
    for (const file of files.filter((f) => roomOf(f) === 'storage')) {
      for (const { spec } of importsOf(file)) {
        if (!spec.startsWith('.')) continue;
        const to = roomOf(resolveImport(file, spec));
        if (!['storage', 'common', 'fs', 'crypto'].includes(to)) wrong.push(`${relative(SRC, file)} imports ${spec}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
