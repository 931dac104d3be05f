import { describe, expect, it } from 'vitest';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { dataObjectName, parseFileList, safeRelativePath, serializeFileList, type FileList } from '../../src/backup/file-list.js';

const ID = 'base_000000010000000000000002_20261130T060000Z';
const SHA = 'a'.repeat(64);

function sample(): FileList {
  return {
    format: 2,
    backup: ID,
    type: 'full',
    objects: [{ name: dataObjectName(0), backup: ID, size: 30, sha256: SHA, storedBytes: 20, codec: 'zstd' }],
    entries: [
      { type: 'dir', path: 'base', mode: 0o700 },
      { type: 'dir', path: 'base/1', mode: 0o700 },
      { type: 'file', path: 'base/1/1259', mode: 0o600, size: 10, mtimeMs: 1, sha256: SHA, extents: [{ object: 0, offset: 0, size: 10 }] },
      { type: 'file', path: 'PG_VERSION', mode: 0o600, size: 20, mtimeMs: 1, sha256: SHA, extents: [{ object: 0, offset: 10, size: 20 }] },
      { type: 'file', path: 'postmaster.opts', mode: 0o600, size: 0, mtimeMs: 1, sha256: SHA, extents: [] },
      { type: 'link', path: 'base/1/ts', mode: 0o777, target: '/srv/ts' },
    ],
  };
}

const parse = (l: unknown) => parseFileList(JSON.stringify(l), ID, 'files.json', BACKUP_ID_GRAMMAR);

describe('backup file list (format 2)', () => {
  it('round-trips what backup-push writes', () => {
    const l = sample();
    expect(parseFileList(serializeFileList(l).toString('utf8'), ID, 'files.json', BACKUP_ID_GRAMMAR)).toEqual(l);
    expect(dataObjectName(12)).toBe('data/000012');
  });

  it('refuses a path that could leave the data directory, and entries before their directory', () => {
    for (const path of ['../etc/passwd', '/etc/passwd', 'base/../../x', 'base//x', 'a\nb', '', '.']) {
      const l = sample();
      l.entries[2] = { ...(l.entries[2] as object), path } as FileList['entries'][number];
      expect(() => parse(l), path).toThrow(/not a safe relative path|before \(or without\)/);
    }
    const orphan = sample();
    orphan.entries.splice(1, 1);
    expect(() => parse(orphan)).toThrow(/base\/1\/1259 comes before \(or without\) its directory/);
    const twice = sample();
    twice.entries.push(twice.entries[3]!);
    expect(() => parse(twice)).toThrow(/appears twice/);
  });

  it('refuses a file that reaches past its object, a bad object reference or key, and another backup', () => {
    const past = sample();
    (past.entries[3] as { extents: Array<{ offset: number }> }).extents[0]!.offset = 11;
    expect(() => parse(past)).toThrow(/reaches past the end of data\/000000/);
    const ref = sample();
    (ref.entries[2] as { extents: Array<{ object: number }> }).extents[0]!.object = 1;
    expect(() => parse(ref)).toThrow(/must index objects/);
    const key = sample();
    key.objects[0]!.name = '../../wal/x';
    expect(() => parse(key)).toThrow(/name must be data\/<digits>/);
    expect(() => parseFileList(JSON.stringify(sample()), `${ID}_2`, 'files.json', BACKUP_ID_GRAMMAR)).toThrow(/"backup" must be/);
    expect(() => parseFileList('{', ID, 'files.json', BACKUP_ID_GRAMMAR)).toThrow(/not JSON/);
  });

  it('checks extents and the kind of backup', () => {
    const short = sample();
    (short.entries[3] as { size: number }).size = 21;
    expect(() => parse(short)).toThrow(/its extents hold 20 bytes, not its size 21/);
    const zero = sample();
    (zero.entries[2] as { extents: Array<{ size: number }> }).extents[0]!.size = 0;
    expect(() => parse(zero)).toThrow(/size above 0/);
    const pieced = sample();
    (pieced.entries[3] as { extents: unknown[] }).extents = [{ object: 0, offset: 10, size: 5 }, { object: 0, offset: 0, size: 15 }];
    expect(parse(pieced).entries[3]).toMatchObject({ extents: [{ offset: 10 }, { offset: 0 }] });
    const incr = { ...sample(), type: 'incremental', reference: `${ID}_2` };
    expect(parse(incr).reference).toBe(`${ID}_2`);
    expect(() => parse({ ...sample(), type: 'incremental' })).toThrow(/"reference" must name another backup/);
    expect(() => parse({ ...sample(), reference: `${ID}_2` })).toThrow(/"reference" must name another backup/);
    expect(() => parse({ ...sample(), type: 'delta' })).toThrow(/"type" must be full or incremental/);
  });

  it('knows a safe relative path', () => {
    expect(safeRelativePath('global/pg_control')).toBe(true);
    expect(safeRelativePath('pg_tblspc/16385')).toBe(true);
    expect(safeRelativePath('a/./b')).toBe(false);
  });
});
