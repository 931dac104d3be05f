import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS, ExitCode, WalvaultError, isErrorName, type ErrorName } from '../../src/common/errors.js';

// README "Exit codes" is what operators script against: it and ERRORS must say the same thing.
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.split('\n## Exit codes\n')[1]?.split('\n## ')[0] ?? '';
const rows = section
  .split('\n')
  .map((l) => /^\| (\d+) \|([^|]*)\|/.exec(l))
  .filter((m): m is RegExpExecArray => m !== null)
  .map((m) => ({ code: Number(m[1]), names: m[2]!.split('/').map((n) => n.trim()).filter(Boolean) }));
const table = Object.entries(ERRORS) as [ErrorName, (typeof ERRORS)[ErrorName]][];

describe('closed error table', () => {
  it('README has an exit-code table', () => {
    expect(rows.length).toBeGreaterThan(5);
  });

  it.each(table)('README documents %s on the row of its exit code', (name, spec) => {
    const row = rows.find((r) => r.names.includes(name));
    expect(row, `README "Exit codes" has no row naming ${name}`).toBeDefined();
    expect(row!.code, `${name} is documented as ${row!.code}, the table says ${spec.exit}`).toBe(spec.exit);
  });

  it('every name in the README table is an error in ERRORS with that exit code', () => {
    const wrong = rows.flatMap((r) => r.names.filter((n) => !isErrorName(n) || ERRORS[n].exit !== r.code).map((n) => `${r.code} ${n}`));
    expect(wrong).toEqual([]);
  });

  it('every error exits 1..125, so archive_command failures stay "retry later"', () => {
    expect(table.filter(([, s]) => !(s.exit >= 1 && s.exit <= 125)).map(([n]) => n)).toEqual([]);
  });

  it('the only documented codes outside 1..125 are success and the recovery stop, which no error carries', () => {
    const outside = rows.filter((r) => r.code < 1 || r.code > 125);
    expect(outside.map((r) => r.code)).toEqual([0, 255]);
    expect(outside.flatMap((r) => r.names)).toEqual([]);
  });

  it('every ExitCode is documented', () => {
    const documented = new Set(rows.map((r) => r.code));
    expect(Object.entries(ExitCode).filter(([, c]) => !documented.has(c))).toEqual([]);
  });

  it('an error takes its exit code and default retryability from the table, and a name outside it does not exist', () => {
    for (const [name, spec] of table) {
      const e = new WalvaultError(name, 'x');
      expect([e.code, e.name, e.exitCode, e.retryable]).toEqual([name, name, spec.exit, spec.retryable]);
    }
    expect(new WalvaultError('IntegrityError', 'x', { retryable: false }).retryable).toBe(false);
    expect(isErrorName('Typo')).toBe(false);
    expect(isErrorName('toString')).toBe(false);
    // @ts-expect-error a name outside ERRORS must not compile
    expect(() => new WalvaultError('Typo', 'x')).toThrow();
  });
});
