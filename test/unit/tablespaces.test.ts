import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BACKUP_ID_GRAMMAR, type BackupInfo } from '../../src/backup/backup-info.js';
import { planObjects } from '../../src/backup/bundle-plan.js';
import { tablespaceVersionDir, walkDataDirectory } from '../../src/backup/data-dir-walk.js';
import { parseFileList, serializeFileList, type Entry, type FileList } from '../../src/backup/file-list.js';
import { planRestore } from '../../src/backup/file-plan.js';
import { applyWrites } from '../../src/backup/pgdata-files.js';
import { chooseLocations, parseTablespaceMapFlags, splitTablespacePath, tablespaceMapText, type TablespacePlan } from '../../src/backup/tablespaces.js';

// Tablespaces in format 2, the pure parts: what the walk lists, what a file list may hold, how the
// restore plan sorts entries into roots, and how --tablespace-map is checked.

const ID = 'base_000000010000000000000002_20261130T060000Z';
const TS_DIR = 'PG_15_202209061';
const SHA = 'a'.repeat(64);
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const temp = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};

describe('walkDataDirectory with tablespaces', () => {
  it("lists each link, then only this server's PG_<major>_<catversion> directory of its location, with the same exclusions", async () => {
    const base = temp('wv-tswalk-');
    const root = join(base, 'data');
    const loc = join(base, 'ts');
    for (const d of [join(root, 'global'), join(root, 'pg_tblspc'), join(loc, TS_DIR, '5', 'pgsql_tmp'), join(loc, 'PG_14_202107181', '5'), join(root, 'inside', TS_DIR, '1')]) {
      mkdirSync(d, { recursive: true });
    }
    writeFileSync(join(root, 'global', 'pg_control'), 'c');
    writeFileSync(join(loc, TS_DIR, '5', '800'), 'logged');
    writeFileSync(join(loc, TS_DIR, '5', '801'), 'unlogged main');
    writeFileSync(join(loc, TS_DIR, '5', '801_init'), 'init');
    writeFileSync(join(loc, TS_DIR, '5', 'pgsql_tmp', 'pgsql_tmp1.0'), 'tmp');
    writeFileSync(join(loc, 'PG_14_202107181', '5', '900'), 'an older version');
    writeFileSync(join(loc, 'stray'), 'not a cluster file');
    writeFileSync(join(root, 'inside', TS_DIR, '1', '123'), 'inside');
    symlinkSync(loc, join(root, 'pg_tblspc', '16401'));
    symlinkSync(join(root, 'inside'), join(root, 'pg_tblspc', '16402'));
    symlinkSync(join(base, 'gone'), join(root, 'pg_tblspc', '16403'));
    expect(tablespaceVersionDir(15, 202209061)).toBe(TS_DIR);
    const entries = await walkDataDirectory(root, { serverVersion: 15, tablespaceVersionDir: TS_DIR });
    const paths = entries.map((e) => `${e.type} ${e.path}`);
    expect(paths).toEqual([
      'dir global',
      'dir inside',
      'dir pg_tblspc',
      'link pg_tblspc/16401',
      `dir pg_tblspc/16401/${TS_DIR}`,
      `dir pg_tblspc/16401/${TS_DIR}/5`,
      `file pg_tblspc/16401/${TS_DIR}/5/800`,
      `file pg_tblspc/16401/${TS_DIR}/5/801_init`,
      'link pg_tblspc/16402',
      `dir pg_tblspc/16402/${TS_DIR}`,
      `dir pg_tblspc/16402/${TS_DIR}/1`,
      `file pg_tblspc/16402/${TS_DIR}/1/123`,
      // A dangling link (the location is gone): the link alone.
      'link pg_tblspc/16403',
      'file global/pg_control',
    ]);
    expect(entries.find((e) => e.path === 'pg_tblspc/16401')).toMatchObject({ target: loc });
    // Without the version directory (an older caller) a tablespace is its link only.
    const bare = await walkDataDirectory(root, { serverVersion: 15 });
    expect(bare.filter((e) => e.path.startsWith('pg_tblspc/16401'))).toHaveLength(1);
  });
});

const file = (path: string, object: number, offset: number, size: number): Entry => ({ type: 'file', path, mode: 0o600, size, mtimeMs: 1, sha256: SHA, extents: [{ object, offset, size }] });
function fileList(entries: Entry[], objects: number[]): FileList {
  return { format: 2, backup: ID, type: 'full', objects: objects.map((size, i) => ({ name: `data/${String(i).padStart(6, '0')}`, backup: ID, size, sha256: SHA, storedBytes: size, codec: 'zstd' })), entries };
}
const parse = (l: FileList) => parseFileList(serializeFileList(l).toString(), ID, 'files.json', BACKUP_ID_GRAMMAR);

describe('file lists and restore plans with tablespaces', () => {
  const entries: Entry[] = [
    { type: 'dir', path: 'base', mode: 0o700 },
    file('base/1', 0, 0, 10),
    { type: 'dir', path: 'pg_tblspc', mode: 0o700 },
    { type: 'link', path: 'pg_tblspc/16401', mode: 0o777, target: '/srv/ts1' },
    { type: 'dir', path: `pg_tblspc/16401/${TS_DIR}`, mode: 0o700 },
    { type: 'dir', path: `pg_tblspc/16401/${TS_DIR}/5`, mode: 0o750 },
    file(`pg_tblspc/16401/${TS_DIR}/5/800`, 0, 10, 5),
    file(`pg_tblspc/16401/${TS_DIR}/5/801`, 1, 0, 7),
    { type: 'file', path: `pg_tblspc/16401/${TS_DIR}/5/802`, mode: 0o600, size: 0, mtimeMs: 1, sha256: SHA, extents: [] },
    file('tablespace_map', 0, 15, 12),
  ];

  it('accepts entries below a pg_tblspc/<oid> link, and no other link as a parent', () => {
    expect(parse(fileList(entries, [27, 7])).entries).toHaveLength(entries.length);
    const odd: Entry[] = [{ type: 'link', path: 'elsewhere', mode: 0o777, target: '/etc' }, file('elsewhere/passwd', 0, 0, 1)];
    expect(() => parse(fileList(odd, [1]))).toThrow(/elsewhere\/passwd comes before \(or without\) its directory/);
  });

  it('sorts entries into roots: the tablespace gets its directories, empty files and pieces relative to its location', () => {
    const plan = planRestore(parse(fileList(entries, [27, 7])), { id: ID, sizeBytes: 34 } as BackupInfo, 'files.json');
    expect(plan.dirs.map((d) => d.path)).toEqual(['base', 'pg_tblspc']);
    expect(plan.tablespaces).toHaveLength(1);
    const t = plan.tablespaces[0]!;
    expect(t).toMatchObject({ oid: '16401', original: '/srv/ts1' });
    expect(t.dirs.map((d) => [d.path, d.mode])).toEqual([[TS_DIR, 0o700], [`${TS_DIR}/5`, 0o750]]);
    expect(t.empty.map((f) => f.path)).toEqual([`${TS_DIR}/5/802`]);
    // Object 0 holds files of both roots: one plan per root, each with its own files.
    expect(plan.objects.map((o) => [o.index, o.tablespace, o.files.map((f) => f.path)])).toEqual([
      [0, undefined, ['base/1', 'tablespace_map']],
      [0, '16401', [`${TS_DIR}/5/800`]],
      [1, '16401', [`${TS_DIR}/5/801`]],
    ]);
  });

  it('refuses a link that is not pg_tblspc/<oid>', () => {
    const odd: Entry[] = [{ type: 'dir', path: 'pg_tblspc', mode: 0o700 }, { type: 'link', path: 'pg_tblspc/x', mode: 0o777, target: '/etc' }];
    expect(() => planRestore(parse(fileList(odd, [])), { id: ID, sizeBytes: 0 } as BackupInfo, 'files.json')).toThrow(/pg_tblspc\/x is a symbolic link outside pg_tblspc\/<oid>; refusing to restore/);
  });

  it('the engine never bundles files of two roots together', () => {
    const paths = ['base/1', `pg_tblspc/16401/${TS_DIR}/5/800`, `pg_tblspc/16401/${TS_DIR}/5/801`, `pg_tblspc/16402/${TS_DIR}/5/800`, 'pg_xact/0000'];
    const groups = paths.map((p) => splitTablespacePath(p)?.oid ?? '');
    expect(groups).toEqual(['', '16401', '16401', '16402', '']);
    const plan = planObjects([1, 1, 1, 1, 1], 1024, groups);
    expect(plan.map((o) => o.files.map((f) => f.index))).toEqual([[0], [1, 2], [3], [4]]);
    expect(planObjects([1, 1, 1, 1, 1], 1024).map((o) => o.files.length)).toEqual([5]);
  });
});

describe('--tablespace-map', () => {
  const ts = (oid: string, original: string): TablespacePlan => ({ oid, original, dirs: [], empty: [], pieced: [] });

  it('parses OID=DIR, absolute directories only, each OID once', () => {
    expect([...parseTablespaceMapFlags(['16401=/srv/new/ts1', '16402=/srv/x/../ts2/'])]).toEqual([['16401', '/srv/new/ts1'], ['16402', '/srv/ts2']]);
    expect(() => parseTablespaceMapFlags(['ts1=/srv'])).toThrow(/expected OID=DIR/);
    expect(() => parseTablespaceMapFlags(['16401=srv/ts1'])).toThrow(/must be an absolute path/);
    expect(() => parseTablespaceMapFlags(['16401=/a', '16401=/b'])).toThrow(/names tablespace 16401 twice/);
    expect(() => parseTablespaceMapFlags(['16401=/a\nb'])).toThrow(/control character/);
    expect(parseTablespaceMapFlags(['16401=/a'])).toBeInstanceOf(Map);
  });

  it('chooses the mapped location, else the original; refuses unknown OIDs, locations in the data directory and overlaps', () => {
    const got = chooseLocations([ts('16401', '/srv/ts1'), ts('16402', '/srv/ts2')], new Map([['16402', '/mnt/ts2']]), '/srv/data', ID);
    expect(got.map((t) => t.location)).toEqual(['/srv/ts1', '/mnt/ts2']);
    const err = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as Error;
      }
      return undefined;
    };
    const unknown = err(() => chooseLocations([ts('16401', '/srv/ts1')], new Map([['9', '/x']]), '/srv/data', ID));
    expect(unknown).toMatchObject({ name: 'UsageError', message: expect.stringMatching(/has no tablespace 9 \(its tablespaces: 16401\)/) });
    expect(err(() => chooseLocations([], new Map([['9', '/x']]), '/srv/data', ID))?.message).toMatch(/\(it has no tablespaces\)/);
    const inside = err(() => chooseLocations([ts('16401', '/srv/data/ts1')], new Map(), '/srv/data', ID));
    expect(inside).toMatchObject({ name: 'BackupError', message: expect.stringMatching(/original location \/srv\/data\/ts1 is inside the data directory \/srv\/data .*--tablespace-map 16401=<dir>/) });
    expect(err(() => chooseLocations([ts('16401', '/srv')], new Map(), '/srv/data', ID))?.message).toMatch(/inside the data directory \/srv\/data \(or holds it\)/);
    const overlap = err(() => chooseLocations([ts('16401', '/srv/ts1'), ts('16402', '/srv/ts2')], new Map([['16402', '/srv/ts1/sub']]), '/srv/data', ID));
    expect(overlap?.message).toMatch(/--tablespace-map 16402=\/srv\/ts1\/sub overlaps tablespace 16401's location \/srv\/ts1/);
  });

  it("writes tablespace_map as PostgreSQL does: '<oid> <path>' lines, newline, carriage return and backslash escaped", () => {
    const list = [{ ...ts('16401', '/a'), location: '/srv/ts1' }, { ...ts('16402', '/b'), location: '/srv/we\\ird\nname' }];
    expect(tablespaceMapText(list)).toBe('16401 /srv/ts1\n16402 /srv/we\\\\ird\\\nname\n');
  });
});

describe('applyWrites: tablespace links and a replaced tablespace_map', () => {
  it('creates pg_tblspc/<oid> as a link (never over an existing name) and replaces a plain file in place', async () => {
    const root = temp('wv-tswrite-');
    mkdirSync(join(root, 'pg_tblspc'));
    await applyWrites(join(root, 'pg_tblspc'), [{ name: '16401', data: '', link: '/srv/ts1' }]);
    expect(lstatSync(join(root, 'pg_tblspc', '16401')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(root, 'pg_tblspc', '16401'))).toBe('/srv/ts1');
    await expect(applyWrites(join(root, 'pg_tblspc'), [{ name: '16401', data: '', link: '/srv/other' }])).rejects.toThrow(/EEXIST|exists/);
    // The same link again (a resumed restore that had made it): fine.
    await applyWrites(join(root, 'pg_tblspc'), [{ name: '16401', data: '', link: '/srv/ts1' }]);
    writeFileSync(join(root, 'tablespace_map'), '16401 /old/location/that/is/long\n');
    await applyWrites(root, [{ name: 'tablespace_map', data: Buffer.from('16401 /srv/ts1\n').toString('base64'), replace: true }]);
    expect(readFileSync(join(root, 'tablespace_map'), 'utf8')).toBe('16401 /srv/ts1\n');
    await expect(applyWrites(root, [{ name: 'absent', data: '', replace: true }])).rejects.toThrow(/ENOENT|no such/i);
  });
});

describe('standby backups: the connection to the primary', () => {
  it("keeps from primary_conninfo only what walvault's connection honours, quoted", async () => {
    const { primaryConnString } = await import('../../src/backup/standby.js');
    const pc = "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer host=127.0.0.1 port=5433 sslmode=prefer sslcompression=0 sslsni=1 gssencmode=prefer krbsrvname=postgres target_session_attrs=any password='it\\'s'";
    expect(primaryConnString(pc)).toBe("host='127.0.0.1' port='5433' user='postgres' password='it\\'s' passfile='/var/lib/postgresql/.pgpass' sslmode='prefer'");
  });
});
