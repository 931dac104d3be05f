// runDelete end to end on a file:// repository of planted objects (no PostgreSQL needed: delete reads
// only listings and backup.json): what goes, what stays, in one confirmed run.
import { mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { smallObjectMeta } from '../../src/archive/objects.js';
import { markKey } from '../../src/archive/high-water-marks.js';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { makeBackupId, sentinelBody } from '../../src/backup/catalog.js';
import { loadConfig } from '../../src/common/config.js';
import { runDelete } from '../../src/operate/delete-run.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import type { Storage } from '../../src/storage/types.js';

const MiB = 1024 * 1024;
const seg = (n: number, tli = 1) => `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
const walKey = (name: string) => (name.endsWith('.history') || name.endsWith('.backup') ? `wal/${name}` : `wal/${name.slice(0, 16)}/${name}`);

function info(start: number, minutesAgo: number, ref?: BackupInfo): BackupInfo {
  const t = new Date(Date.now() - minutesAgo * 60_000);
  const id = makeBackupId(seg(start), t);
  const lsn = (n: number) => `0/${(n * MiB).toString(16).toUpperCase()}`;
  return {
    format: 2, method: 'files', type: ref ? 'incremental' : 'full', ...(ref ? { reference: ref.id } : {}), id, label: id,
    startTime: t.toISOString(), stopTime: new Date(t.getTime() + 1000).toISOString(), startLsn: lsn(start), stopLsn: lsn(start + 1),
    checkpointLsn: lsn(start), timeline: 1, stopTimeline: 1, startSegment: seg(start), stopSegment: seg(start + 1), walSegmentSize: MiB,
    sizeBytes: 1, sha256: '0'.repeat(64), storedBytes: 1, codec: 'none', fileCount: 1, filesBytes: 1, manifestSha256: '',
    pgVersion: 15, systemIdentifier: '1', backupFrom: 'primary', serverStartTime: 'x', walvaultVersion: 'test',
  } as BackupInfo;
}

describe('runDelete on a file:// repository', () => {
  let root = '';
  let storage: Storage | undefined;
  afterAll(async () => {
    storage?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('delete: --confirm removes the old chain, its WAL, old gap markers and a stale incomplete backup; leaves history files, damaged backups, foreign keys and a fresh upload', async () => {
    root = await mkdtemp(join(tmpdir(), 'wv-del-run-'));
    const s = (storage = createFileStorage(root));
    const put = (key: string, text = key) => s.put(key, Buffer.from(text), smallObjectMeta(Buffer.from(text)));
    const full = info(5, 50);
    const inc = info(8, 40, full);
    const newer = info(20, 10);
    for (const b of [full, inc, newer]) {
      await put(`backups/${b.id}/data.0`);
      const { body, meta } = sentinelBody(b);
      await s.put(`backups/${b.id}/backup.json`, body, meta);
    }
    for (let n = 3; n <= 25; n++) await put(walKey(seg(n)));
    await put(walKey(`${seg(7)}.partial`));
    await put(walKey(`${seg(5)}.00000028.backup`));
    // Timeline 2 branched off after `newer` ended (a PITR whose timeline has archived nothing yet).
    await put(walKey('00000002.history'), '1\t0/1900000\tno recovery target specified\n');
    await put(`state/gaps/${seg(4)}.json`);
    await put(`state/gaps/${seg(22)}.json`);
    await put('state/timeline-00000001.json');
    // Write-once high-water marks: readers read the newest 8 of each timeline, the others go.
    for (const n of [10, 18, 19, 20, 21, 22, 23, 24, 25, 26]) await put(markKey(1, seg(n)));
    await put(markKey(2, seg(3, 2)));
    await put('notes/readme.txt');
    const damaged = makeBackupId(seg(1), new Date(Date.now() - 3_600_000 * 24));
    await put(`backups/${damaged}/backup.json`, 'not json');
    const stale = makeBackupId(seg(2), new Date(Date.now() - 7_200_000));
    await put(`backups/${stale}/data.0`);
    const old = new Date(Date.now() - 7_200_000);
    await utimes(join(root, 'backups', stale, 'data.0'), old, old);
    const fresh = makeBackupId(seg(30), new Date());
    await put(`backups/${fresh}/data.0`);

    const config = loadConfig({}, { WALVAULT_REPO: `file://${root}`, WALVAULT_SPOOL: join(root, '..', 'spool-unused') }).config;
    const rules = { retainFull: 1, now: new Date(), staleUploadAge: 3600 };
    const dry = await runDelete(s, config, rules, false);
    expect(dry.deleted.objects).toBe(0);
    const out = await runDelete(s, config, rules, true);
    expect(out.failures).toEqual([]);
    expect(out.deleted.backups).toEqual([inc.id, full.id]);
    expect(out.deleted.incomplete).toEqual([stale]);
    expect(out.deleted).toMatchObject({ walFiles: 17 + 2, gapMarkers: 1, marks: 2 });
    expect(out.plan.rejected.map((r) => r.id)).toEqual([damaged]);

    const left: string[] = [];
    for await (const o of s.list('')) left.push(o.key);
    expect(left.filter((k) => k.startsWith('backups/')).sort()).toEqual(
      [`backups/${damaged}/backup.json`, `backups/${fresh}/data.0`, `backups/${newer.id}/backup.json`, `backups/${newer.id}/data.0`].sort(),
    );
    expect(left.filter((k) => k.startsWith('wal/')).sort()).toEqual(
      ['wal/00000002.history', ...Array.from({ length: 6 }, (_, i) => walKey(seg(20 + i)))].sort(),
    );
    expect(left.filter((k) => !k.startsWith('wal/') && !k.startsWith('backups/')).sort()).toEqual(
      ['notes/readme.txt', `state/gaps/${seg(22)}.json`, 'state/timeline-00000001.json', ...[19, 20, 21, 22, 23, 24, 25, 26].map((n) => markKey(1, seg(n))), markKey(2, seg(3, 2))].sort(),
    );
  });

  it('delete: a repository that only ever held timeline 2 needs no 00000002.history (set up after a failover)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wv-del-tli2-'));
    const s = createFileStorage(dir);
    try {
      const put = (key: string, text = key) => s.put(key, Buffer.from(text), smallObjectMeta(Buffer.from(text)));
      const onTli2 = (b: BackupInfo): BackupInfo => ({ ...b, timeline: 2, stopTimeline: 2, startSegment: seg(Number.parseInt(b.startSegment.slice(16), 16), 2), stopSegment: seg(Number.parseInt(b.stopSegment.slice(16), 16), 2) });
      const [old, newer] = [onTli2(info(5, 50)), onTli2(info(20, 10))];
      for (const b of [old, newer]) {
        await put(`backups/${b.id}/data.0`);
        const { body, meta } = sentinelBody(b);
        await s.put(`backups/${b.id}/backup.json`, body, meta);
      }
      for (let n = 3; n <= 25; n++) await put(walKey(seg(n, 2)));
      const config = loadConfig({}, { WALVAULT_REPO: `file://${dir}`, WALVAULT_SPOOL: join(dir, '..', 'spool-unused') }).config;
      const outcome = await runDelete(s, config, { retainFull: 1, now: new Date(), staleUploadAge: 3600 }, true);
      expect(outcome.deleted.backups).toEqual([old.id]);
      const left: string[] = [];
      for await (const o of s.list('wal/')) left.push(o.key);
      expect(left.sort()).toEqual(Array.from({ length: 6 }, (_, i) => walKey(seg(20 + i, 2))));
    } finally {
      s.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('delete: refuses, deleting nothing, when a timeline with WAL has no history file or a damaged one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wv-del-hist-'));
    const s = createFileStorage(dir);
    try {
      const put = (key: string, text = key) => s.put(key, Buffer.from(text), smallObjectMeta(Buffer.from(text)));
      for (const b of [info(5, 50), info(20, 10)]) {
        await put(`backups/${b.id}/data.0`);
        const { body, meta } = sentinelBody(b);
        await s.put(`backups/${b.id}/backup.json`, body, meta);
      }
      for (let n = 3; n <= 25; n++) await put(walKey(seg(n)));
      for (let n = 12; n <= 30; n++) await put(walKey(seg(n, 2)));
      const config = loadConfig({}, { WALVAULT_REPO: `file://${dir}`, WALVAULT_SPOOL: join(dir, '..', 'spool-unused') }).config;
      const listAll = async () => {
        const keys: string[] = [];
        for await (const o of s.list('')) keys.push(o.key);
        return keys.sort();
      };
      const before = await listAll();
      const rules = { retainFull: 1, now: new Date(), staleUploadAge: 3600 };
      await expect(runDelete(s, config, rules, true)).rejects.toThrow(/timeline 2 has archived WAL but no history file wal\/00000002\.history: delete cannot tell which backups/);
      await put(walKey('00000002.history'), 'garbage\n');
      await expect(runDelete(s, config, rules, true)).rejects.toMatchObject({ code: 'CorruptObject', message: expect.stringMatching(/history file wal\/00000002\.history is damaged/) });
      expect(await listAll()).toEqual([...before, 'wal/00000002.history'].sort());
    } finally {
      s.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
