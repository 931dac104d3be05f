import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTempRelationFileName, parseRelationFileName, unloggedForkExcluded, walkDataDirectory, type WalkedEntry } from '../../src/backup/data-dir-walk.js';

const TS_DIR = 'PG_15_202209061';

function tree(root: string, files: Record<string, string | { link: string } | 'dir'>): void {
  for (const [rel, what] of Object.entries(files)) {
    const p = join(root, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    if (what === 'dir') mkdirSync(p, { recursive: true });
    else if (typeof what === 'string') writeFileSync(p, what);
    else symlinkSync(what.link, p);
  }
}

describe('relation file names (PostgreSQL reinit.c / fd.c rules)', () => {
  it('parses relfilenode, fork and segment', () => {
    expect(parseRelationFileName('16384')).toEqual({ relNumber: '16384', fork: 'main' });
    expect(parseRelationFileName('16384.2')).toEqual({ relNumber: '16384', fork: 'main' });
    expect(parseRelationFileName('16384_fsm')).toEqual({ relNumber: '16384', fork: 'fsm' });
    expect(parseRelationFileName('16384_vm.1')).toEqual({ relNumber: '16384', fork: 'vm' });
    expect(parseRelationFileName('16384_init')).toEqual({ relNumber: '16384', fork: 'init' });
    for (const bad of ['16384_main', '16384_x', '16384.', '16384.a', '12345678901', 'pg_filenode.map', 'PG_VERSION', '_init']) {
      expect(parseRelationFileName(bad), bad).toBeUndefined();
    }
  });
  it('an unlogged relation loses every fork but init, only when its init fork exists', () => {
    const names = new Set(['16384', '16384_init', '16384_fsm', '16384_vm', '16384.1', '16390', '16390_fsm']);
    expect(['16384', '16384_fsm', '16384_vm', '16384.1'].every((n) => unloggedForkExcluded(n, names))).toBe(true);
    expect(unloggedForkExcluded('16384_init', names)).toBe(false);
    expect(unloggedForkExcluded('16390', names)).toBe(false);
    expect(unloggedForkExcluded('16390_fsm', names)).toBe(false);
  });
  it('temporary relations are t<backend>_<relfilenode>[_fork][.seg]', () => {
    expect(['t3_16500', 't3_16500_fsm', 't12_1.3'].every(isTempRelationFileName)).toBe(true);
    expect(['t_16500', 't3_', 't3_16500_main', 'x3_16500', '16500'].some(isTempRelationFileName)).toBe(false);
  });
});

describe('walkDataDirectory on a mimicked data directory', () => {
  let base: string;
  let root: string;
  let outside: string;
  let entries: WalkedEntry[];
  const byPath = (p: string) => entries.find((e) => e.path === p);

  beforeAll(async () => {
    base = mkdtempSync(join(tmpdir(), 'wv-walk-'));
    root = join(base, 'data');
    outside = join(base, 'tblspc1');
    mkdirSync(outside);
    mkdirSync(join(base, 'waldisk', 'archive_status'), { recursive: true });
    mkdirSync(join(base, 'notifydisk'), { recursive: true });
    writeFileSync(join(base, 'notifydisk', '0000'), 'n');
    mkdirSync(root, { mode: 0o700 });
    chmodSync(root, 0o700);
    tree(root, {
      PG_VERSION: '15\n',
      'postgresql.conf': '',
      'postgresql.auto.conf': '',
      'postgresql.auto.conf.tmp': 'x',
      current_logfiles: 'stderr log/x',
      'current_logfiles.tmp': 'x',
      backup_label: 'x',
      tablespace_map: 'x',
      backup_manifest: 'x',
      'postmaster.pid': '1',
      'postmaster.opts': 'x',
      'global/pg_control': 'c'.repeat(8192),
      'global/1262': 'g',
      'global/pg_internal.init': 'x',
      'global/pg_internal.init.4321': 'x',
      // Not a database directory: an _init file there excludes nothing.
      'global/16384': 'kept',
      'global/16384_init': 'kept',
      'base/1/1259': 'r',
      'base/1/16384': 'unlogged main',
      'base/1/16384.1': 'unlogged segment',
      'base/1/16384_fsm': 'unlogged fsm',
      'base/1/16384_vm': 'unlogged vm',
      'base/1/16384_init': 'init fork',
      'base/1/16400': 'logged',
      'base/1/16400_fsm': 'logged fsm',
      'base/1/t3_16500': 'temp',
      'base/1/t3_16500_fsm': 'temp fsm',
      'base/1/pg_internal.init': 'x',
      'base/1/pg_filenode.map': 'm',
      'base/pgsql_tmp/pgsql_tmp123.0': 'tmp',
      'base/1/pgsql_tmp_other': 'tmp',
      'pg_wal': { link: join(base, 'waldisk') },
      'pg_stat_tmp/global.stat': 'x',
      'pg_replslot/slot1/state': 'x',
      'pg_dynshmem/mmap.1': 'x',
      'pg_notify': { link: join(base, 'notifydisk') },
      'pg_serial/0000': 'x',
      'pg_snapshots/0000-1': 'x',
      'pg_subtrans/0000': 'x',
      'pg_xact/0000': 'x',
      'pg_tblspc/16401': { link: outside },
      'pg_tblspc/16402': { link: '../../tblspc1' },
      [`pg_tblspc/16403/${TS_DIR}/5/700`]: 'inplace unlogged main',
      [`pg_tblspc/16403/${TS_DIR}/5/700_init`]: 'inplace init',
      [`pg_tblspc/16403/${TS_DIR}/5/701`]: 'inplace logged',
      'pg_tblspc/16404': { link: join(root, 'aaa_inside_ts') },
      [`aaa_inside_ts/${TS_DIR}/1/123`]: 'must not be copied twice',
      'log/postgresql.log': 'l',
      'log/elsewhere': { link: '/etc' },
      'stray-link': { link: '/etc/hostname' },
    });
    chmodSync(join(root, 'pg_xact'), 0o750);
    entries = await walkDataDirectory(root, { serverVersion: 15 });
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('leaves out the excluded files, anywhere, and pgsql_tmp*', () => {
    for (const p of ['postgresql.auto.conf.tmp', 'current_logfiles.tmp', 'backup_label', 'tablespace_map', 'backup_manifest', 'postmaster.pid', 'postmaster.opts', 'global/pg_internal.init', 'global/pg_internal.init.4321', 'base/1/pg_internal.init', 'base/pgsql_tmp', 'base/pgsql_tmp/pgsql_tmp123.0', 'base/1/pgsql_tmp_other']) {
      expect(byPath(p), p).toBeUndefined();
    }
    for (const p of ['PG_VERSION', 'postgresql.conf', 'postgresql.auto.conf', 'current_logfiles', 'global/1262', 'base/1/1259', 'base/1/pg_filenode.map', 'pg_xact/0000', 'log/postgresql.log']) {
      expect(byPath(p)?.type, p).toBe('file');
    }
  });

  it('keeps the excluded-content directories, empty (a linked one as a directory)', () => {
    for (const d of ['pg_stat_tmp', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans']) {
      expect(byPath(d)?.type, d).toBe('dir');
      expect(entries.some((e) => e.path.startsWith(`${d}/`)), d).toBe(false);
    }
    expect(byPath('pg_notify')!.mode).toBe(0o700);
  });

  it('pg_wal (here a link to another disk) is an empty directory plus archive_status', () => {
    expect(byPath('pg_wal')).toEqual({ type: 'dir', path: 'pg_wal', mode: 0o700 });
    expect(byPath('pg_wal/archive_status')).toEqual({ type: 'dir', path: 'pg_wal/archive_status', mode: 0o700 });
    expect(entries.filter((e) => e.path.startsWith('pg_wal/')).map((e) => e.path)).toEqual(['pg_wal/archive_status']);
  });

  it('drops unlogged relations except the init fork, and temporary relations, in database directories only', () => {
    for (const p of ['base/1/16384', 'base/1/16384.1', 'base/1/16384_fsm', 'base/1/16384_vm', 'base/1/t3_16500', 'base/1/t3_16500_fsm', `pg_tblspc/16403/${TS_DIR}/5/700`]) {
      expect(byPath(p), p).toBeUndefined();
    }
    for (const p of ['base/1/16384_init', 'base/1/16400', 'base/1/16400_fsm', 'global/16384', 'global/16384_init', `pg_tblspc/16403/${TS_DIR}/5/700_init`, `pg_tblspc/16403/${TS_DIR}/5/701`]) {
      expect(byPath(p)?.type, p).toBe('file');
    }
  });

  it('records pg_tblspc links with absolute targets; other links are skipped', () => {
    expect(byPath('pg_tblspc/16401')).toMatchObject({ type: 'link', target: outside });
    expect(byPath('pg_tblspc/16402')).toMatchObject({ type: 'link', target: outside });
    expect(byPath('pg_tblspc/16404')).toMatchObject({ type: 'link', target: join(root, 'aaa_inside_ts') });
    expect(byPath('stray-link')).toBeUndefined();
    expect(byPath('log/elsewhere')).toBeUndefined();
  });

  it('a tablespace inside the data directory is not copied a second time', () => {
    expect(byPath('aaa_inside_ts')?.type).toBe('dir');
    expect(entries.some((e) => e.path.startsWith('aaa_inside_ts/'))).toBe(false);
  });

  it('reports sizes, mtimes and permission bits', () => {
    const c = byPath('global/pg_control')!;
    expect(c.size).toBe(8192);
    expect(c.mtimeMs).toBeGreaterThan(Date.now() - 600_000);
    expect(byPath('pg_xact')!.mode).toBe(0o750);
  });

  it('lists parents before children, sorted, with global/pg_control last', () => {
    const seen = new Set<string>();
    for (const e of entries) {
      const parent = e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : '';
      if (parent) expect(seen.has(parent), e.path).toBe(true);
      seen.add(e.path);
    }
    expect(entries.at(-1)!.path).toBe('global/pg_control');
    const top = entries.filter((e) => !e.path.includes('/')).map((e) => e.path);
    expect(top).toEqual([...top].sort());
  });
});

describe('walkDataDirectory refuses names a restore could not recreate', () => {
  it('names the path for a control character and for a name that is not UTF-8', async () => {
    const root = mkdtempSync(join(tmpdir(), 'wv-walkbad-'));
    try {
      writeFileSync(join(root, 'bad\nname'), 'x');
      await expect(walkDataDirectory(root, { serverVersion: 15 })).rejects.toThrow(/cannot back up .*bad\\nname.*control characters/);
      rmSync(join(root, 'bad\nname'));
      writeFileSync(Buffer.concat([Buffer.from(`${root}/x`), Buffer.from([0xff, 0xfe])]), 'x');
      await expect(walkDataDirectory(root, { serverVersion: 15 })).rejects.toMatchObject({ name: 'BackupError', message: expect.stringMatching(/not valid UTF-8/) });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
  it('a data directory that is not a directory is a BackupError', async () => {
    await expect(walkDataDirectory('/nonexistent/walvault', { serverVersion: 15 })).rejects.toMatchObject({ name: 'BackupError' });
  });
});
