// The shell fast path of wal-fetch (scripts/wrapper/fetch.bash): a segment the prefetch worker
// downloaded and verified is handed to PostgreSQL without starting Node, and only then. Each refusal
// is checked twice: through a wrapper whose Node does not exist (127 means it fell through to Node;
// exit 0 can only come from the shell) and through the real one, which must still restore the right
// bytes. Then a PostgreSQL 15 archive recovery through the wrapper against radosgw.
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, chmodSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';
import { isRoot, PgCluster, runCommand, startRestoredCluster } from '../support/pg.js';
import { createTestBucket, envFor, testStores } from '../support/stores.js';
import { fakeSegment, segName } from '../support/wal-fixtures.js';
import { until } from '../support/until.js';
import { cleanupAll, FELL_THROUGH_TO_NODE as FELL_THROUGH, findFiles, runWalvault, tempDir, walvaultBin, walvaultWithoutNode } from '../support/walvault.js';

const store = testStores().find((s) => s.name === 'rgw') ?? testStores()[0]!;
const restored: PgCluster[] = [];

afterAll(async () => {
  for (const c of restored) await c.destroy();
  await cleanupAll();
});


describe(`the shell fast path of wal-fetch on ${store.name}`, () => {
  it('hands over a prefetched segment without Node, and falls back to Node for a changed file, a missing ack, another context or owner, and every miss', async () => {
    const work = await tempDir('wv-wrapper-fetch');
    const bucket = await createTestBucket(store, 'wrapfetch');
    const spool = join(work, 'spool');
    const env = { ...envFor(store, bucket, 'r'), WALVAULT_SPOOL: spool, WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '20', WALVAULT_HIGH_WATER_INTERVAL: '0.001' };
    const segs = Array.from({ length: 10 }, (_, i) => [segName(i + 1), fakeSegment({ segno: BigInt(i + 1), seed: i + 1 })] as const);
    for (const [name, data] of segs) {
      await writeFile(join(work, name), data);
      const r = await runWalvault(['wal-push', join(work, name), name], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const pgdata = join(work, 'pgdata');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const real = await walvaultBin();
    const noNode = await walvaultWithoutNode(work);
    const target = join(pgdata, 'pg_wal', 'RECOVERYXLOG');
    const fetch = async (bin: string, i: number | string, over: Record<string, string> = {}) => {
      rmSync(target, { force: true }); // PostgreSQL removes %p before it asks
      const name = typeof i === 'number' ? segs[i]![0] : i;
      const r = await runCommand(bin, ['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { cwd: pgdata, env: { ...env, ...over } });
      return { ...r, bytes: r.code === 0 ? readFileSync(target) : undefined };
    };
    const ackDir = join(spool, 'fast', pgdata.replaceAll('%', '%25').replaceAll('/', '%'), 'fetch');
    const ackOf = (i: number) => join(ackDir, segs[i]![0]);
    const spooled = (i: number) => findFiles(join(spool, 'repos'), (n) => n === segs[i]![0])[0]!;

    const first = await fetch(real, 0);
    expect(first.code, first.stderr).toBe(0);
    await until('acks for segments 2-9', () => [1, 2, 3, 4, 5, 6, 7, 8].every((i) => existsSync(ackOf(i))));

    // Answered by the shell: Node does not even exist for this wrapper. %p is the spool's inode.
    const hit = await fetch(noNode, 1);
    expect(hit.code, hit.stderr).toBe(0);
    expect(hit.stderr).toMatch(new RegExp(`^walvault wal-fetch\\[\\d+\\] INFO: fetched ${segs[1]![0]} from the prefetch spool \\(1\\.0 MiB, verified SHA-256 [0-9a-f]{16}\\.\\.\\. by the prefetch worker, unchanged since: identity checked by the wrapper, \\d+ ms\\)\\n$`));
    expect(hit.bytes!.equals(segs[1]![1])).toBe(true);
    expect(statSync(target).ino).toBe(statSync(spooled(1)).ino);
    // The worker saw it handed over (its ctime moved): the ack goes, prefetching moves on.
    await until('the ack of segment 2 removed', () => !existsSync(ackOf(1)));
    // Asked again (end of recovery): not the shell's any more, Node re-hashes the spool's copy.
    expect((await fetch(noNode, 1)).code).toBe(FELL_THROUGH);
    const again = await fetch(real, 1);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/from the prefetch spool \(1\.00 MiB, verified SHA-256, /);
    expect(again.bytes!.equals(segs[1]![1])).toBe(true);

    // Missing acknowledgement.
    rmSync(ackOf(2));
    expect((await fetch(noNode, 2)).code).toBe(FELL_THROUGH);
    const noAck = await fetch(real, 2);
    expect(noAck.code, noAck.stderr).toBe(0);
    expect(noAck.bytes!.equals(segs[2]![1])).toBe(true);

    // Changed file: only its ctime moved (chmod to the mode it has: same bytes, same mtime), and
    // other bytes of the same size.
    const st = statSync(spooled(3));
    chmodSync(spooled(3), st.mode & 0o7777);
    expect(statSync(spooled(3)).mtimeMs).toBe(st.mtimeMs);
    expect((await fetch(noNode, 3)).code).toBe(FELL_THROUGH);
    const touched = await fetch(real, 3);
    expect(touched.code, touched.stderr).toBe(0);
    expect(touched.bytes!.equals(segs[3]![1])).toBe(true);
    await writeFile(spooled(4), fakeSegment({ segno: 5n, seed: 99 }));
    expect((await fetch(noNode, 4)).code).toBe(FELL_THROUGH);
    const changed = await fetch(real, 4);
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.stderr).toMatch(/prefetched 000000010000000000000005 not used \(SHA-256 [0-9a-f]{64} differs/);
    expect(changed.bytes!.equals(segs[4]![1])).toBe(true);

    // Changed context: an environment variable, an option, another configuration.
    expect((await fetch(noNode, 5, { WALVAULT_LOG_LEVEL: 'info' })).code).toBe(FELL_THROUGH);
    expect((await fetch(noNode, 5, { WALVAULT_REPO: `s3://${bucket}/other` })).code).toBe(FELL_THROUGH);
    const other = await fetch(real, 5, { WALVAULT_REPO: `s3://${bucket}/other` });
    expect(other.code, other.stderr).not.toBe(0); // that repository has no segment 6: never the old one's
    expect(existsSync(target)).toBe(false);
    const opt = await runCommand(noNode, ['--log-level=info', 'wal-fetch', segs[5]![0], 'pg_wal/RECOVERYXLOG'], { cwd: pgdata, env });
    expect(opt.code).toBe(FELL_THROUGH);

    // An acknowledgement directory that is not this user's alone.
    if (isRoot) {
      await chown(ackDir, 70_000, 70_000);
      expect((await fetch(noNode, 5)).code).toBe(FELL_THROUGH);
      await chown(ackDir, 0, 0);
    }
    await chmod(ackDir, 0o770);
    expect((await fetch(noNode, 5)).code).toBe(FELL_THROUGH);
    await chmod(ackDir, 0o700);
    const six = await fetch(noNode, 5); // unchanged: answered
    expect(six.code, six.stderr).toBe(0);
    expect(six.bytes!.equals(segs[5]![1])).toBe(true);

    // A worker that is gone (killed: it could not remove its acks) is not vouched for any more.
    const lock = findFiles(join(spool, 'repos'), (n) => n === 'worker.lock')[0]!;
    const pid = Number(readFileSync(lock, 'utf8'));
    expect(existsSync(ackOf(6))).toBe(true);
    process.kill(pid, 'SIGKILL');
    await until('the worker gone', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    expect((await fetch(noNode, 6)).code).toBe(FELL_THROUGH);
    const afterKill = await fetch(real, 6);
    expect(afterKill.code, afterKill.stderr).toBe(0);
    expect(afterKill.bytes!.equals(segs[6]![1])).toBe(true);

    // The new worker vouches for what the killed one verified (unchanged since): the last segment,
    // handed over by the shell.
    const ackPid = (i: number) => (existsSync(ackOf(i)) ? readFileSync(ackOf(i), 'utf8').split('\n')[6] : undefined);
    await until("the new worker's ack of segment 10", () => ackPid(9) !== undefined && ackPid(9) !== String(pid));
    const last = await fetch(noNode, 9);
    expect(last.code, last.stderr).toBe(0);
    expect(last.bytes!.equals(segs[9]![1])).toBe(true);
    await until('the ack of segment 10 removed (handed over)', () => !existsSync(ackOf(9)));
    // The segment after the last one: never answered by the shell, 1 from Node after asking.
    expect((await fetch(noNode, segName(11))).code).toBe(FELL_THROUGH);
    const end = await fetch(real, segName(11));
    expect(end.code, end.stderr).toBe(1);
    expect(end.stderr).toMatch(new RegExp(`${segName(11)} is not in s3://.* \\(not found, asked by the prefetch worker`));
    // PostgreSQL then asks for the last segment again: the right bytes, from the shell (a copy the
    // worker staged anew) or from Node (prefetch.test.ts checks the staging itself).
    const again10 = await fetch(real, 9);
    expect(again10.code, again10.stderr).toBe(0);
    expect(again10.bytes!.equals(segs[9]![1])).toBe(true);
  });

  it('a PostgreSQL archive recovery through the wrapper gets its segments from the shell and ends where the archive does', async () => {
    const a = await startArchivingCluster(store, 'wrapfetch-pg');
    await a.pg.stop();
    const base = join(await tempDir('wv-wrapper-fetch-base', { forPostgres: true }), 'base');
    cpSync(a.pg.dataDir, base, { recursive: true, preserveTimestamps: true });
    await a.pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await a.pg.query('CREATE TABLE t (id int, pad text); INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g');
    await switchAndWaitArchived(a.pg);
    const rows = await a.pg.query('SELECT count(*), sum(id) FROM t');
    await a.pg.stop('immediate');

    for (const f of readdirSync(join(base, 'pg_wal'))) if (/^[0-9A-F]{24}$/.test(f)) rmSync(join(base, 'pg_wal', f));
    await writeFile(join(base, 'recovery.signal'), '');
    const bin = await walvaultBin();
    await writeFile(join(base, 'postgresql.auto.conf'), `restore_command = '${bin} --config ${a.configFile} wal-fetch %f %p'\n`);
    const pg = await startRestoredCluster(base, restored);
    expect(await pg.query('SELECT count(*), sum(id) FROM t')).toBe(rows);
    const log = await pg.readLog();
    const shell = log.match(/fetched [0-9A-F]{24} from the prefetch spool .*identity checked by the wrapper/g) ?? [];
    expect(shell.length, log).toBeGreaterThan(3);
    // Exit 1 only where the archive ends: history files and the segment after the last restored one.
    const restoredNames = [...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]!);
    const last = restoredNames.sort().at(-1)!;
    const misses = [...log.matchAll(/wal-fetch\[\d+\] INFO: ([0-9A-F.a-z]+) is not in /g)].map((m) => m[1]!);
    expect(misses.length).toBeGreaterThan(0);
    for (const m of misses) expect(m.endsWith('.history') || m > last, `${m} answered not found`).toBe(true);
    expect(log).not.toMatch(/WalGap|FATAL|PANIC/);
    expect(await readFile(join(base, 'postgresql.auto.conf'), 'utf8')).toContain('wal-fetch');
  });
});
