import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, lchown, mkdir, readdir, readFile, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownToPostgres, isRoot, PgCluster } from '../support/pg.js';
import { cleanupAll, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

// Issue 8 items 6 and 7 end to end: backup-fetch run as root with --owner postgres on a real
// backup of a small PostgreSQL 15 cluster in a file:// repository.

describe('backup-fetch as root for another user', () => {
  let pg: PgCluster;
  let repoArgs: string[];
  let spool: string;

  /** As root, through the world-readable copy of walvault (its restore worker runs it as postgres). */
  const wv = async (args: string[], env: Record<string, string> = {}): Promise<WalvaultResult> => {
    const bin = await walvaultBin();
    return new Promise((resolve) => {
      const started = performance.now();
      const child = spawn(bin, [...args, ...repoArgs], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', WALVAULT_SPOOL: spool, ...pg.connectionEnv(), ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
      });
    });
  };

  beforeAll(async () => {
    // The race below is only meaningful when root restores for a less privileged user.
    expect(isRoot, 'these tests run as root (like backup-fetch --owner)').toBe(true);
    const repo = join(await tempDir('wv-rtrust-repo', { forPostgres: true }), 'repo');
    await mkdir(repo);
    spool = await tempDir('wv-rtrust-spool');
    const bin = await walvaultBin();
    await chownToPostgres(repo);
    repoArgs = ['--repo', `file://${repo}`];
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --repo file://${repo} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start();
    await pg.query('CREATE TABLE t AS SELECT generate_series(1, 1000) AS n');
    const push = await wv(['backup-push']);
    expect(push.code, push.stderr).toBe(0);
  }, 300_000);

  afterAll(async () => {
    await pg?.destroy();
    await cleanupAll();
  });

  it('trust: a symlink race during a root restore writes nothing outside pgdata', async () => {
    // A directory only root may write, like /etc: the racer points the restore at it.
    const outside = await tempDir('wv-outside');
    await chmod(outside, 0o755);
    const before = await stat(outside);
    const pgdata = join(await tempDir('wv-race', { forPostgres: true }), 'data');
    const swaps = join(await tempDir('wv-race-log', { forPostgres: true }), 'swaps');
    // As postgres, as fast as it can: the moment base/1 is a real directory, exchange it atomically
    // (renameat2 RENAME_EXCHANGE, so the restore never sees it missing) with a symlink to `outside`.
    const script = [
      'import ctypes, os, sys',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'd, link, outside, log = sys.argv[1:5]',
      'while True:',
      '    try:',
      '        if os.path.isdir(d) and not os.path.islink(d):',
      '            if not os.path.lexists(link): os.symlink(outside, link)',
      '            if libc.renameat2(-100, link.encode(), -100, d.encode(), 2) == 0:',
      '                with open(log, "a") as f: f.write("swap\\n")',
      '    except OSError:',
      '        pass',
    ].join('\n');
    const { uid, gid } = await postgresIds();
    const racer = spawn('python3', ['-c', script, join(pgdata, 'base', '1'), join(pgdata, 'base', 'swapped'), outside, swaps], {
      uid,
      gid,
      cwd: '/',
      detached: true,
      stdio: 'ignore',
    });
    let r: WalvaultResult;
    try {
      r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres']);
    } finally {
      process.kill(-racer.pid!, 'SIGKILL');
    }
    const swapped = existsSync(swaps) ? (await readFile(swaps, 'utf8')).trim().split('\n').length : 0;
    expect(swapped, `the racer never swapped base/1 in (restore: ${r.code} ${r.stderr})`).toBeGreaterThan(0);
    expect(await readdir(outside), r.stderr).toEqual([]);
    const after = await stat(outside);
    expect({ uid: after.uid, gid: after.gid, mode: after.mode, mtime: after.mtimeMs }).toEqual({
      uid: before.uid,
      gid: before.gid,
      mode: before.mode,
      mtime: before.mtimeMs,
    });
    // Either the restore noticed the swap and failed cleanly, or it finished untouched by it.
    if (r.code !== 0) {
      expect(r.stderr, r.stderr).toMatch(/ERROR: (BackupError|LocalWriteError): .*(symbolic link|EACCES|ENOENT|ENOTDIR|ELOOP)/);
      // The racer is still at work while backup-fetch empties the directory: it may win that race
      // too (its own files), and backup-fetch must then say so.
      const left = existsSync(pgdata) ? await readdir(pgdata) : [];
      if (left.length > 0) expect(r.stderr).toMatch(/could not clean up .*; remove its contents before using it/);
    }
  }, 180_000);

  it('trust: a symlink swap of an ancestor of pgdata never makes root chown or create outside', async () => {
    // /var/lib/postgresql/16/main on Debian: postgres owns the directories above the target, so it
    // can make `16` a link to a directory of root's (the decoy) holding, or not, a `main`.
    const { uid, gid } = await postgresIds();
    const home = await tempDir('wv-anc', { forPostgres: true });
    const decoy = await tempDir('wv-decoy');
    await chmod(decoy, 0o755);
    await mkdir(join(decoy, 'main'), { mode: 0o755 });
    await symlink(decoy, join(home, '16'));
    await lchown(join(home, '16'), uid, gid);
    const snapshot = async () => {
      const out: Record<string, unknown> = {};
      for (const p of [decoy, join(decoy, 'main')]) {
        const st = await stat(p);
        out[p] = { uid: st.uid, gid: st.gid, mode: st.mode, entries: await readdir(p) };
      }
      return out;
    };
    const before = await snapshot();
    // An existing empty `main` (root would chown it to postgres) ...
    const taken = await wv(['backup-fetch', 'LATEST', join(home, '16', 'main'), '--owner', 'postgres']);
    expect(taken.code, taken.stderr).not.toBe(0);
    expect(taken.stderr).toMatch(/ERROR: BackupError: .*belongs to uid 0/);
    expect(await snapshot()).toEqual(before);
    // ... and a new one (root would create it there and hand it over).
    const created = await wv(['backup-fetch', 'LATEST', join(home, '16', 'new'), '--owner', 'postgres']);
    expect(created.code, created.stderr).not.toBe(0);
    expect(created.stderr).toMatch(/ERROR: BackupError: .*EACCES/);
    expect(existsSync(join(decoy, 'new'))).toBe(false);
    expect(await snapshot()).toEqual(before);
  }, 120_000);

  it('a target in a directory only root controls is created by root and handed to the owner', async () => {
    const parent = await tempDir('wv-rootparent');
    await chmod(parent, 0o755);
    const pgdata = join(parent, 'data');
    const r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres', '--target-immediate']);
    expect(r.code, r.stderr).toBe(0);
    const { uid, gid } = await postgresIds();
    const st = await stat(pgdata);
    expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }).toEqual({ uid, gid, mode: 0o700 });
  }, 120_000);

  it('trust: root without a non-root owner refuses a target another user can redirect', async () => {
    const home = await tempDir('wv-noowner', { forPostgres: true });
    for (const extra of [[], ['--owner', 'root']]) {
      const r = await wv(['backup-fetch', 'LATEST', join(home, 'data'), ...extra]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/UsageError: .*owned by uid \d+.*pass --owner <the data directory's owner>/);
      expect(await readdir(home)).toEqual([]);
    }
    // A tree root alone controls stays the legitimate way to restore as root (and chown later).
    const mine = await tempDir('wv-rootonly');
    await chmod(mine, 0o755);
    const ok = await wv(['backup-fetch', 'LATEST', join(mine, 'data'), '--target-immediate']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await stat(join(mine, 'data', 'PG_VERSION'))).uid).toBe(0);
  }, 120_000);

  it('trust: the restore worker never receives root\'s secrets', async () => {
    // As postgres, what the owner can see: /proc/<pid>/environ of its own processes, while the
    // restore runs (the extraction worker, pg_verifybackup, the small workers after them).
    const script = [
      'import os, sys',
      'secret, log = sys.argv[1].encode(), sys.argv[2]',
      'seen, leaks = set(), set()',
      'while True:',
      '    for pid in os.listdir("/proc"):',
      '        if not pid.isdigit() or pid in seen: continue',
      '        try:',
      '            cmd = open(f"/proc/{pid}/cmdline", "rb").read()',
      '            if b"__restore-worker" not in cmd and b"pg_verifybackup" not in cmd: continue',
      '            env = open(f"/proc/{pid}/environ", "rb").read()',
      '        except OSError:',
      '            continue',
      '        seen.add(pid)',
      '        if secret in env: leaks.add(pid)',
      '        with open(log, "w") as f: f.write(f"{len(seen)} {len(leaks)}\\n")',
    ].join('\n');
    const { uid, gid } = await postgresIds();
    const log = join(await tempDir('wv-env-log', { forPostgres: true }), 'seen');
    const secret = `wv-secret-${process.pid}-${Date.now()}`;
    const spy = spawn('python3', ['-c', script, secret, log], { uid, gid, cwd: '/', detached: true, stdio: 'ignore' });
    let r: WalvaultResult;
    try {
      await new Promise((res) => setTimeout(res, 300));
      const pgdata = join(await tempDir('wv-env', { forPostgres: true }), 'data');
      r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres', '--target-immediate'], {
        AWS_SECRET_ACCESS_KEY: secret,
        AWS_SESSION_TOKEN: secret,
      });
    } finally {
      process.kill(-spy.pid!, 'SIGKILL');
    }
    expect(r.code, r.stderr).toBe(0);
    const [seen, leaks] = (await readFile(log, 'utf8')).trim().split(' ').map(Number);
    expect(seen, 'the spy saw no process of the restore').toBeGreaterThan(0);
    expect(leaks).toBe(0);
  }, 120_000);

  it('trust: no control character reaches postgresql.auto.conf (exit codes)', async () => {
    const base = await tempDir('wv-ctl', { forPostgres: true });
    const cases: Array<[string[], number, RegExp]> = [
      [['--target-name', 'x\nrestore_command = \'id\''], 2, /UsageError: recovery_target_name \(--target-name\) contains a control character/],
      [['--restore-command', 'true\nrecovery_target = immediate'], 2, /UsageError: restore_command \(--restore-command\) contains a control character/],
      [['--s3-region', 'eu\u0007west'], 2, /UsageError: --s3-region contains a control character/],
    ];
    for (const [extra, code, message] of cases) {
      const pgdata = join(base, `d${code}${extra[0]}`);
      const r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres', ...extra]);
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr).toMatch(message);
      expect(existsSync(pgdata), `${pgdata} was created`).toBe(false);
    }
    // The same value from the environment is a configuration error.
    const pgdata = join(base, 'env');
    const r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres'], { WALVAULT_S3_REGION: 'eu\u0007west' });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/ConfigError: WALVAULT_S3_REGION contains a control character/);
    expect(existsSync(pgdata)).toBe(false);
  }, 120_000);

  it('restores as the owner: every file and directory belongs to postgres', async () => {
    const pgdata = join(await tempDir('wv-owned', { forPostgres: true }), 'data');
    const r = await wv(['backup-fetch', 'LATEST', pgdata, '--owner', 'postgres', '--target-immediate']);
    expect(r.code, r.stderr).toBe(0);
    // Format 1's and format 2's (the default backup-push method here) restore lines.
    expect(r.stderr).toMatch(/(files and \d+ directories fsynced\)|files from \d+ objects, \d+ directories\)) into .* as uid \d+/);
    const { uid, gid } = await postgresIds();
    const notOwned: string[] = [];
    const walk = async (d: string) => {
      const s = await stat(d);
      if (s.uid !== uid || s.gid !== gid) notOwned.push(d);
      if (!s.isDirectory()) return;
      for (const n of await readdir(d)) await walk(join(d, n));
    };
    await walk(pgdata);
    expect(notOwned).toEqual([]);
    expect(await readFile(join(pgdata, 'postgresql.auto.conf'), 'utf8')).toMatch(/recovery_target = 'immediate'/);
    expect(existsSync(join(pgdata, 'recovery.signal'))).toBe(true);
  }, 120_000);
});

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const { execFileSync } = await import('node:child_process');
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}
