// verify and info on PostgreSQL 15 and radosgw: one archiving cluster, a full and an incremental
// backup (--method files). verify passes on the good repository, --deep reads everything once and
// then only what is new (--full all again), a byte changed inside a stored object (same metadata) is
// found by --deep and named, a deleted segment is found by name, so are a lost tail (the high-water
// mark beyond the newest segment) and a damaged mark; info reports the recovery window,
// backups and gaps (the window moves past a gap to the backup after it), the archiver state, and
// writes the Prometheus textfile whole.
import { copyFile, mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Storage } from '../../src/storage/types.js';
import { PgCluster } from '../support/pg.js';
import { deleteRaw, getRaw, listKeys, putRaw, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';
import { segName, writeFakeSegment } from '../support/wal-fixtures.js';

const rgw = testStores().filter((s) => s.name === 'rgw');

interface VerifyJson {
  ok: boolean;
  problems: string[];
  notes: string[];
  timelines: Array<{ timeline: number; expected: { first: string; last: string; count: number } | null; gaps: unknown[] }>;
  backups: Array<{ id: string; type: string; objects: number; walSegments: number }>;
  read?: { read: number; remembered: number; bytes: number };
}

interface InfoJson {
  timelines: Array<{
    timeline: number;
    segments: number;
    newest?: { segment: string; time: string };
    window: { start: { backup: string; time: string; lsn: string }; end: { segment: string; time: string } } | null;
    gaps: Array<{ first: string; last: string; count: number }>;
    backups: string[];
  }>;
  backups: Array<{ id: string; type: string; sizeBytes: number; storedBytes: number; stopTime: string; stopLsn: string; ageSeconds: number }>;
  archiver?: { lastArchivedWal: string | null; failedCount: number; currentWal: string; lagSegments: number | null };
  verify: { ok: boolean; problems: number; deep: boolean } | null;
}

describe.each(rgw)('verify and info on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  let storage: Storage;
  const ids: string[] = [];

  const wv = (args: string[], asPostgres = false): Promise<WalvaultResult> => {
    const { WALVAULT_SPOOL: _rootSpool, ...common } = env;
    return runWalvault(args, { env: asPostgres ? { ...common, ...pg.connectionEnv() } : env, asPostgres, timeoutMs: 120_000 });
  };
  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;
  const verifyJson = async (...args: string[]): Promise<{ r: WalvaultResult; j: VerifyJson }> => {
    const r = await wv(['verify', '--json', ...args]);
    return { r, j: JSON.parse(r.stdout) as VerifyJson };
  };

  beforeAll(async () => {
    ({ pg, bucket, env, storage } = await startArchivingCluster(store, 'verify', { settings: { highWaterInterval: 5 } })); // the mark as fresh as the lost-tail test needs
    await pg.pgbench(['-i', '-s', '1', '-q']);
    await switchAndWaitArchived(pg);
    for (const extra of [[], ['--incremental']]) {
      const r = await wv(['backup-push', '--method', 'files', '--jobs', '2', ...extra], true);
      expect(r.code, show(r)).toBe(0);
      await pg.pgbench(['-t', '200', '-n']);
      await switchAndWaitArchived(pg);
    }
    const listed = await wv(['backup-list', '--json']);
    ids.push(...(JSON.parse(listed.stdout) as Array<{ id: string }>).map((b) => b.id));
    expect(ids).toHaveLength(2);
  }, 240_000);

  afterAll(async () => {
    storage?.close();
    await pg?.destroy();
    await cleanupAll();
  });

  it('verify: a good repository passes', async () => {
    const text = await wv(['verify']);
    expect(text.code, show(text)).toBe(0);
    console.log(`[sample] walvault verify\n${text.stdout}${text.stderr}`);
    expect(text.stdout).toMatch(/ok: no problems found/);
    const { r, j } = await verifyJson();
    expect(r.code, show(r)).toBe(0);
    expect(j.ok).toBe(true);
    expect(j.problems).toEqual([]);
    expect(j.timelines.map((t) => [t.timeline, t.gaps.length])).toEqual([[1, 0]]);
    expect(j.timelines[0]!.expected!.count).toBeGreaterThan(3);
    expect(j.backups.map((b) => b.type)).toEqual(['full', 'incremental']);
    // The incremental names objects of the full one: it counts more objects than its own directory holds.
    expect(j.backups.every((b) => b.objects >= 3 && b.walSegments >= 1)).toBe(true);
  });

  it('verify: a backup without backup.json and a foreign object are notes, not problems', async () => {
    const stale = 'pg/backups/base_0000000100000000000000FF_20261130T000000Z/data/000000';
    await putRaw(store, bucket, stale, Buffer.from('partial upload'));
    await putRaw(store, bucket, 'pg/notes.txt', Buffer.from('left by someone'));
    try {
      const { r, j } = await verifyJson();
      expect(r.code, show(r)).toBe(0);
      expect(j.notes.join('\n')).toMatch(/backups\/base_0000000100000000000000FF_20261130T000000Z\/ has no backup\.json \(1 object\(s\)/);
      expect(j.notes.join('\n')).toMatch(/1 object\(s\) walvault does not know \(left alone\): notes\.txt/);
    } finally {
      await deleteRaw(store, bucket, stale);
      await deleteRaw(store, bucket, 'pg/notes.txt');
    }
  });

  it('verify --deep: reads every object, then only new ones; --full all again', async () => {
    const first = await verifyJson('--deep');
    expect(first.r.code, show(first.r)).toBe(0);
    expect(first.j.read!.remembered).toBe(0);
    const total = first.j.read!.read;
    expect(total).toBeGreaterThan(10);
    await pg.pgbench(['-t', '100', '-n']);
    await switchAndWaitArchived(pg);
    const second = await wv(['verify', '--deep']);
    expect(second.code, show(second)).toBe(0);
    console.log(`[sample] walvault verify --deep (second run)\n${second.stdout}${second.stderr}`);
    const third = await verifyJson('--deep');
    expect(third.r.code, show(third.r)).toBe(0);
    // Nothing new since the second run: everything is remembered, nothing read.
    expect(third.j.read).toMatchObject({ read: 0 });
    expect(third.j.read!.remembered).toBeGreaterThan(total);
    const m = /deep: (\d+) object\(s\) read .*, (\d+) verified by an earlier run/.exec(second.stdout);
    expect(m, second.stdout).not.toBeNull();
    // The second run read only what the pgbench run archived (a few segments), the rest remembered.
    expect(Number(m![2])).toBe(total);
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    expect(Number(m![1]) + Number(m![2])).toBe(third.j.read!.remembered);
    const full = await verifyJson('--deep', '--full', '--jobs', '2');
    expect(full.r.code, show(full.r)).toBe(0);
    expect(full.j.read).toMatchObject({ read: third.j.read!.remembered, remembered: 0 });
  });

  it('info: the recovery window, backups and the Prometheus file', async () => {
    const dir = await tempDir('wv-prom');
    const prom = join(dir, 'walvault.prom');
    const r = await runWalvault(['info', '--json', '--prometheus', prom], { env: { ...env, ...pg.connectionEnv() }, timeoutMs: 60_000 });
    expect(r.code, show(r)).toBe(0);
    const j = JSON.parse(r.stdout) as InfoJson;
    expect(j.timelines).toHaveLength(1);
    const t = j.timelines[0]!;
    expect(t.gaps).toEqual([]);
    expect(t.window!.start.backup).toBe(ids[0]);
    expect(t.window!.start.time).toBe(j.backups[0]!.stopTime);
    expect(t.window!.start.lsn).toBe(j.backups[0]!.stopLsn);
    expect(t.window!.end.segment).toBe(t.newest!.segment);
    expect(j.backups.map((b) => [b.id, b.type])).toEqual([
      [ids[0], 'full'],
      [ids[1], 'incremental'],
    ]);
    expect(j.backups[1]!.storedBytes).toBeLessThan(j.backups[0]!.storedBytes);
    expect(j.archiver!.failedCount).toBe(0);
    expect(j.archiver!.lastArchivedWal).toBe(t.newest!.segment);
    expect(j.archiver!.lagSegments).toBe(0);
    expect(j.verify).toMatchObject({ ok: true, deep: true, problems: 0 });
    const metrics = await readFile(prom, 'utf8');
    expect(metrics).toMatch(new RegExp(`^walvault_last_archived_segment_timestamp_seconds\\{repository="[^"]*${bucket}[^"]*"\\} \\d+$`, 'm'));
    expect(metrics).toMatch(/^walvault_backups\{repository="[^"]+",type="incremental"\} 1$/m);
    expect(metrics).toMatch(/^walvault_wal_gaps\{repository="[^"]+"\} 0$/m);
    expect(metrics).toMatch(/^walvault_verify_ok\{repository="[^"]+"\} 1$/m);
    expect(metrics).toMatch(/^walvault_archiver_failed_count\{repository="[^"]+"\} 0$/m);
    expect(metrics.endsWith('\n')).toBe(true);
    console.log(`[sample] walvault info --prometheus walvault.prom\n${metrics}`);
    expect(await readdir(dir)).toEqual(['walvault.prom']); // no temp file left beside it
    const textRun = await runWalvault(['info', '--picture'], { env: { ...env, ...pg.connectionEnv() }, timeoutMs: 60_000 });
    expect(textRun.code, show(textRun)).toBe(0);
    console.log(`[sample] walvault info --picture\n${textRun.stdout}`);
    expect(textRun.stdout).toMatch(/recovery window: /);
    expect(textRun.stdout).toMatch(/^backups  \|.*F.*i.*\|$/m);
  });

  it('verify: a byte changed inside a stored object is found by --deep, named', async () => {
    const key = `pg/backups/${ids[0]}/data/000000`;
    const orig = (await getRaw(store, bucket, key))!;
    expect(orig).not.toBeNull();
    const bad = Buffer.from(orig.body);
    const at = Math.floor(bad.length / 2);
    bad[at] = bad[at]! ^ 0x01;
    await putRaw(store, bucket, key, bad, orig.metadata);
    try {
      const shallow = await wv(['verify']);
      expect(shallow.code, show(shallow)).toBe(0); // same size: only reading finds it
      const deep = await wv(['verify', '--deep']);
      expect(deep.code, show(deep)).toBe(15);
      expect(deep.stderr).toContain(`problem: backups/${ids[0]}/data/000000`);
      expect(deep.stderr).toMatch(/CheckFailed: verify found 1 problem/);
      console.log(`[sample] walvault verify --deep (a changed byte)\n${deep.stdout}${deep.stderr}`);
    } finally {
      await putRaw(store, bucket, key, orig.body, orig.metadata);
    }
  });

  it('verify: a lost tail (segments up to the high-water mark deleted) and a damaged mark are problems', async () => {
    // The newest write-once mark: listed first.
    const markKey = (await listKeys(store, bucket, 'pg/state/timeline-00000001/'))[0]!;
    expect(markKey).toMatch(/^pg\/state\/timeline-00000001\/[0-9A-F]{16}-[0-9A-F]{24}\.json$/);
    const mark = (await getRaw(store, bucket, markKey))!;
    expect(mark).not.toBeNull();
    const last = (JSON.parse(mark.body.toString('utf8')) as { last: string }).last;
    const segs: string[] = [];
    for await (const o of storage.list('wal/')) if (/\/[0-9A-F]{24}$/.test(o.key)) segs.push(o.key.slice(-24));
    // The mark's segment and every later one: the newest listed segment then lies before the mark.
    const tail = segs.filter((n) => n >= last);
    expect(tail[0]).toBe(last);
    const saved = await Promise.all(
      tail.map(async (n) => {
        const key = `pg/wal/${n.slice(0, 16)}/${n}`;
        return { key, obj: (await getRaw(store, bucket, key))! };
      }),
    );
    try {
      for (const t of saved) await deleteRaw(store, bucket, t.key);
      const { r, j } = await verifyJson();
      expect(r.code, show(r)).toBe(15);
      expect(j.problems).toContain(`timeline 1: WAL ${last} missing`);
      expect(j.timelines[0]!.expected!.last).toBe(last);
    } finally {
      for (const t of saved) await putRaw(store, bucket, t.key, t.obj.body, t.obj.metadata);
    }
    const bad = Buffer.from(mark.body);
    bad[bad.length - 4] = bad[bad.length - 4]! ^ 0x01;
    await putRaw(store, bucket, markKey, bad, mark.metadata);
    try {
      const { r, j } = await verifyJson();
      expect(r.code, show(r)).toBe(15);
      // The only mark, or one an older mark stands in for: a problem either way.
      expect(j.problems).toEqual([expect.stringMatching(/^high-water mark (state\/timeline-00000001\/|of timeline 1) is damaged/)]);
    } finally {
      await putRaw(store, bucket, markKey, mark.body, mark.metadata);
    }
    expect((await wv(['verify'])).code).toBe(0);
  });

  it('verify: a deleted segment is named', async () => {
    const before = JSON.parse((await wv(['info', '--json'])).stdout) as InfoJson;
    // A segment between the two backups: the full backup's window is cut, the incremental's remains.
    const inc = before.backups[1]!;
    const segs: string[] = [];
    for await (const o of storage.list('wal/')) if (/\/[0-9A-F]{24}$/.test(o.key)) segs.push(o.key.slice(-24));
    const incStart = ids[1]!.slice(5, 29);
    const victim = segs.filter((n) => n < incStart).at(-1)!;
    expect(victim).toBeDefined();
    await deleteRaw(store, bucket, `pg/wal/${victim.slice(0, 16)}/${victim}`);
    // What wal-push leaves when maxReadyBytes drops a segment: verify must call it a problem too.
    await putRaw(store, bucket, `pg/state/gaps/${victim}.json`, Buffer.from('{}'));
    const r = await wv(['verify']);
    expect(r.code, show(r)).toBe(15);
    console.log(`[sample] walvault verify (a deleted segment)\n${r.stdout}${r.stderr}`);
    expect(r.stderr).toContain(`problem: timeline 1: WAL ${victim} missing`);
    expect(r.stderr).toContain(`problem: WAL from ${victim} on was dropped by maxReadyBytes`);
    expect(r.stderr).toMatch(/CheckFailed: verify found 2 problem/);
    const { j } = await verifyJson();
    expect(j.problems).toContain(`timeline 1: WAL ${victim} missing`);
    expect(j.timelines[0]!.gaps).toEqual([{ first: victim, last: victim, count: 1 }]);
    const after = await wv(['info', '--json', '--picture']);
    const t = (JSON.parse(after.stdout) as InfoJson).timelines[0]!;
    expect(t.gaps).toMatchObject([{ first: victim, last: victim, count: 1 }]);
    expect((JSON.parse(after.stdout) as { gapMarkers: Array<{ segment: string }> }).gapMarkers).toMatchObject([{ segment: victim }]);
    expect(t.window!.start.backup).toBe(inc.id);
    const picture = await wv(['info', '--picture']);
    console.log(`[sample] walvault info --picture (with a gap)\n${picture.stdout}`);
    expect(picture.stdout).toMatch(/^WAL      \|.*!.*\|$/m);
  });
});

describe('verify on a file:// repository', () => {
  afterAll(cleanupAll);

  it('verify: file:// --deep remembers by inode, mtime and size; a changed byte, a misplaced segment and a gap are named', async () => {
    const work = await tempDir('wv-verify-file');
    const repo = join(work, 'repo');
    await mkdir(repo);
    const env = {
      WALVAULT_REPO: `file://${repo}`,
      WALVAULT_SPOOL: join(work, 'spool'),
      WALVAULT_LOOKAHEAD: '0',
      WALVAULT_PREFETCH: '0',
      WALVAULT_COMPRESSION: 'none',
      WALVAULT_DEADLINE: '20',
    };
    for (let n = 1; n <= 4; n++) {
      const s = await writeFakeSegment(work, n, { seed: n });
      const r = await runWalvault(['wal-push', s.path, s.name], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const verify = async (...args: string[]) => {
      const r = await runWalvault(['verify', '--json', ...args], { env, timeoutMs: 60_000 });
      return { r, j: JSON.parse(r.stdout) as VerifyJson };
    };
    const key = (n: number) => join(repo, 'wal', segName(n).slice(0, 16), segName(n));
    const first = await verify('--deep');
    expect(first.r.code, first.r.stderr).toBe(0);
    expect(first.j.read).toMatchObject({ read: 4, remembered: 0 });
    expect((await verify('--deep')).j.read).toMatchObject({ read: 0, remembered: 4 });

    // One byte near the end of segment 2 (stored uncompressed), rewritten in place: same size and inode.
    const before = await stat(key(2));
    const fh = await open(key(2), 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, before.size - 100);
    b[0] = b[0]! ^ 0x01;
    await fh.write(b, 0, 1, before.size - 100);
    await fh.close();
    expect((await verify()).r.code).toBe(0); // the listing cannot see it
    const damaged = await verify('--deep');
    expect(damaged.r.code, damaged.r.stderr).toBe(15);
    expect(damaged.j.read).toMatchObject({ read: 1, remembered: 3 });
    expect(damaged.j.problems).toEqual([expect.stringMatching(new RegExp(`^wal/${segName(2).slice(0, 16)}/${segName(2)} is damaged: `))]);
    expect(damaged.r.stderr).toContain(`problem: wal/${segName(2).slice(0, 16)}/${segName(2)} is damaged`);

    // Segment 4's file under segment 6's name: sound metadata, wrong page address; 5 is a gap.
    await copyFile(key(4), key(6));
    const gap = await verify();
    expect(gap.r.code).toBe(15);
    expect(gap.j.problems).toEqual([`timeline 1: WAL ${segName(5)} missing`]);
    const full = await verify('--deep', '--full');
    expect(full.r.code).toBe(15);
    expect(full.j.read).toMatchObject({ read: 5, remembered: 0 });
    expect(full.j.problems).toHaveLength(3);
    expect(full.j.problems).toContain(`timeline 1: WAL ${segName(5)} missing`);
    expect(full.j.problems.join('\n')).toMatch(new RegExp(`${segName(6)} does not hold segment ${segName(6)}: its first page is at 0x400000, expected 0x600000`));
    expect(full.j.problems.join('\n')).toMatch(new RegExp(`${segName(2)} is damaged`));
  });
});
