// Faults that the fault table cannot express as one run: walvault killed with SIGKILL in the middle
// of a push or a fetch (then run again), and a full filesystem under %p or under the spool.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAST_TIMEOUTS, fault, FaultProxy } from '../support/fault-proxy.js';
import { isRoot } from '../support/pg.js';
import { createTestBucket, envFor, getRaw, listMultipartUploads, testStores, type TestStore } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, REPO_ROOT, registerCleanup, runWalvault, tempDir } from '../support/walvault.js';
import { until } from '../support/until.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const DIST = join(REPO_ROOT, 'dist', 'walvault.mjs');
const tempsIn = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.walvault-tmp.'));

/** Starts walvault without waiting for it, so the test can kill it. */
function startWalvault(args: string[], env: Record<string, string>, cwd: string) {
  const child = spawn(process.execPath, [DIST, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, exited, stderr: () => stderr };
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe.each(testStores())('walvault killed with SIGKILL on $name', (store: TestStore) => {
  let bucket: string;
  let work: string;
  const proxies: FaultProxy[] = [];
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'crash');
    work = await tempDir('wv-crash');
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await cleanupAll();
  });

  async function setup(label: string, segno: number) {
    const dir = join(work, label);
    const pgdata = join(dir, 'pgdata');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxies.push(proxy);
    // Swift has no If-None-Match (501): HEAD then PUT, so that the stalled PUT is the one with the data.
    const conditional: Record<string, string> = store.conditionalWrites ? {} : { WALVAULT_S3_CONDITIONAL_WRITES: 'off' };
    const direct = { ...envFor(store, bucket, label), WALVAULT_SPOOL: join(dir, 'spool'), ...conditional };
    const viaProxy = { ...direct, AWS_ENDPOINT_URL_S3: proxy.url, ...FAST_TIMEOUTS, WALVAULT_DEADLINE: '60', WALVAULT_ATTEMPT_TIMEOUT: '30', WALVAULT_IDLE_TIMEOUT: '30' };
    const seg = await writeFakeSegment(dir, segno, { seed: segno });
    const key = `${label}/wal/${seg.name.slice(0, 16)}/${seg.name}`;
    const keyRe = new RegExp(`/${escape(key)}(\\?|$)`);
    return { dir, pgdata, proxy, direct, viaProxy, seg, key, keyRe };
  }

  it.concurrent.for([
    { label: 'push-stall-before', at: 'before' as const, again: /pushed / },
    { label: 'push-stall-after', at: 'after' as const, again: /already archived .* identical content|pushed / },
  ])('mid-push (PUT stalled $at the store got it), then pushed again: 0, object intact', async ({ label, at, again }, { expect }) => {
    const t = await setup(label, at === 'before' ? 0x21 : 0x22);
    t.proxy.addRule({ method: 'PUT', path: t.keyRe, action: fault.stall(at) });
    const run = startWalvault(['wal-push', t.seg.path, t.seg.name], t.viaProxy, t.pgdata);
    // Killed while the PUT hangs: after the store answered (at 'after') or before it saw anything.
    await until('the stalled PUT', () => t.proxy.seen('PUT', t.keyRe).some((r) => at === 'before' || r.status !== undefined));
    run.child.kill('SIGKILL');
    expect(await run.exited).toEqual({ code: null, signal: 'SIGKILL' });
    if (at === 'before') expect(await getRaw(store, bucket, t.key)).toBeNull();

    t.proxy.clearRules();
    const r = await runWalvault(['wal-push', t.seg.path, t.seg.name], { env: t.viaProxy, cwd: t.pgdata });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(again);
    const stored = await getRaw(store, bucket, t.key);
    expect(stored!.metadata['walvault-sha256']).toBe(sha(t.seg.data));
    // The object really holds those bytes: fetch it (verified) and compare.
    const f = await runWalvault(['wal-fetch', t.seg.name, 'pg_wal/RECOVERYXLOG'], { env: t.direct, cwd: t.pgdata });
    expect(f.code, f.stderr).toBe(0);
    expect((await readFile(join(t.pgdata, 'pg_wal/RECOVERYXLOG'))).equals(t.seg.data)).toBe(true);
    expect((await listMultipartUploads(store, bucket)).filter((u) => u.key.startsWith(`${label}/`))).toEqual([]);
  });

  it.concurrent('mid-fetch (body stalled): no file at %p; the next run removes the temp file', async ({ expect }) => {
    const t = await setup('fetch-kill', 0x23);
    expect((await runWalvault(['wal-push', t.seg.path, t.seg.name], { env: t.direct })).code).toBe(0);
    const walDir = join(t.pgdata, 'pg_wal');
    t.proxy.addRule({ method: 'GET', path: t.keyRe, action: fault.stall('response-body', 16 * 1024) });
    const run = startWalvault(['wal-fetch', t.seg.name, 'pg_wal/RECOVERYXLOG'], t.viaProxy, t.pgdata);
    await until('the temp file beside %p', () => tempsIn(walDir).length > 0 && t.proxy.seen('GET', t.keyRe).length > 0);
    await new Promise((r) => setTimeout(r, 200)); // let the first 16 KiB arrive and be written
    run.child.kill('SIGKILL');
    expect(await run.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(existsSync(join(walDir, 'RECOVERYXLOG'))).toBe(false);
    const leftover = tempsIn(walDir);
    expect(leftover).toHaveLength(1);

    // Next run while the fault persists: it fails (stop recovery), yet it has removed the stale temp.
    const failing = await runWalvault(['wal-fetch', t.seg.name, 'pg_wal/RECOVERYXLOG'], {
      env: { ...t.viaProxy, ...FAST_TIMEOUTS },
      cwd: t.pgdata,
    });
    expect(failing.code, failing.stderr).toBe(255);
    expect(existsSync(join(walDir, 'RECOVERYXLOG'))).toBe(false);
    expect(tempsIn(walDir)).toEqual([]);

    // And once the store behaves: the complete file, nothing else.
    t.proxy.clearRules();
    await writeFile(join(walDir, leftover[0]!), 'stale'); // a temp of a dead walvault again
    const r = await runWalvault(['wal-fetch', t.seg.name, 'pg_wal/RECOVERYXLOG'], { env: t.viaProxy, cwd: t.pgdata });
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(join(walDir, 'RECOVERYXLOG'))).equals(t.seg.data)).toBe(true);
    expect(tempsIn(walDir)).toEqual([]);
  });
});

const firstStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0];
describe.skipIf(!firstStore)('full filesystem', () => {
  if (!firstStore) return;
  const store = firstStore;
  let bucket: string;
  let work: string;
  let mnt: string;
  let cannotMount: string | undefined;

  async function sh(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve) => {
      const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      c.on('error', (e) => (out += e.message));
      c.on('close', (code) => resolve({ code, out }));
    });
  }

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'diskfull');
    work = await tempDir('wv-full');
    mnt = join(work, 'small');
    await mkdir(mnt);
    if (!isRoot) {
      cannotMount = 'not running as root: cannot mount a small tmpfs';
      return;
    }
    const m = await sh('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0755', 'tmpfs', mnt]);
    if (m.code !== 0) {
      cannotMount = `mount -t tmpfs failed: ${m.out.trim()}`;
      return;
    }
    registerCleanup(async () => {
      const u = await sh('umount', [mnt]);
      if (u.code !== 0) await sh('umount', ['-l', mnt]);
    });
  });
  afterAll(cleanupAll);

  it('fetch of a 1 MiB segment into a 512 KiB filesystem: LocalWriteError, no partial file', async (ctx) => {
    if (cannotMount) {
      console.warn(`SKIPPED full-filesystem test: ${cannotMount}`);
      ctx.skip(cannotMount);
    }
    const env = { ...envFor(store, bucket, 'full'), WALVAULT_SPOOL: join(work, 'spool'), ...FAST_TIMEOUTS };
    const seg = await writeFakeSegment(work, 0x31, { seed: 0x31 });
    expect((await runWalvault(['wal-push', seg.path, seg.name], { env })).code).toBe(0);

    const pgdata = join(work, 'pgdata');
    await mkdir(pgdata);
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const dest = join(mnt, 'RECOVERYXLOG');
    const r = await runWalvault(['wal-fetch', seg.name, dest], { env, cwd: pgdata });
    expect(r.code, r.stderr).toBe(255);
    expect(r.stderr).toMatch(/ERROR: LocalWriteError: cannot write .*ENOSPC.*exiting 255 to stop recovery/);
    expect(r.stderr.split('\n').filter((l) => / ERROR: /.test(l))).toHaveLength(1);
    expect(r.ms).toBeLessThan(3000); // a full disk is not retried until the deadline
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(mnt)).toEqual([]);

    // On a standby the same failure exits 1 (PostgreSQL retries later, perhaps after space is freed).
    await writeFile(join(pgdata, 'standby.signal'), '');
    const s = await runWalvault(['wal-fetch', seg.name, dest], { env, cwd: pgdata });
    expect(s.code, s.stderr).toBe(1);
    expect(s.stderr).toMatch(/LocalWriteError: .*ENOSPC.*exiting 1/);
    expect(readdirSync(mnt)).toEqual([]);
  });

  it('a full spool (only a cache) does not stop wal-push or wal-fetch', async (ctx) => {
    if (cannotMount) {
      console.warn(`SKIPPED full-spool test: ${cannotMount}`);
      ctx.skip(cannotMount);
    }
    const filler = join(mnt, 'filler');
    await writeFile(filler, Buffer.alloc(512 * 1024)).catch(() => undefined); // fills it (ENOSPC at the end)
    const env = { ...envFor(store, bucket, 'fullspool'), WALVAULT_SPOOL: join(mnt, 'spool'), ...FAST_TIMEOUTS };
    const seg = await writeFakeSegment(work, 0x32, { seed: 0x32 });
    const p = await runWalvault(['wal-push', seg.path, seg.name], { env });
    expect(p.code, p.stderr).toBe(0);
    expect((await getRaw(store, bucket, `fullspool/wal/${seg.name.slice(0, 16)}/${seg.name}`))!.metadata['walvault-sha256']).toBe(sha(seg.data));
    const dest = join(work, 'FETCHED');
    const f = await runWalvault(['wal-fetch', seg.name, dest], { env, cwd: work });
    expect(f.code, f.stderr).toBe(0);
    expect((await readFile(dest)).equals(seg.data)).toBe(true);
  });
});
