import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, realpathSync } from 'node:fs';
import { chmod, chown, lchown, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ownerEnv } from '../../src/backup/restore-worker.js';
import { directoryControl } from '../../src/common/file-trust.js';
import { fsyncDir } from '../../src/fs/atomic.js';
import { fsyncDirSync } from '../../src/fs/sync-io.js';

// What backup-fetch, run as root, hands to the processes it starts as the data directory's owner,
// and the directory fsync it runs as root.

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('restore as the owner', () => {
  it('trust: the restore worker never receives root\'s secrets', () => {
    const env = ownerEnv({
      PATH: '/usr/local/bin:/usr/bin',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      TZ: 'UTC',
      HOME: '/root',
      AWS_ACCESS_KEY_ID: 'AKIA',
      AWS_SECRET_ACCESS_KEY: 'secret',
      AWS_SESSION_TOKEN: 'token',
      WALVAULT_S3_SECRET_ACCESS_KEY: 'secret2',
      WALVAULT_REPO: 's3://user:pw@host/bucket',
      PGPASSWORD: 'pw',
      NODE_OPTIONS: '--require /tmp/evil.js',
    });
    expect(env).toEqual({
      PATH: '/usr/local/bin:/usr/bin',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      TZ: 'UTC',
      HOME: '/',
      NODE_DISABLE_COMPILE_CACHE: '1',
    });
  });

  it('trust: fsyncDir never opens a FIFO or follows a link', async () => {
    const d = await mkdtemp(join(tmpdir(), 'wv-fsyncdir-'));
    dirs.push(d);
    execFileSync('mkfifo', [join(d, 'fifo')]);
    await symlink(d, join(d, 'link'));
    // A plain open of a FIFO blocks until a writer comes: the test would time out.
    await expect(fsyncDir(join(d, 'fifo'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(fsyncDir(join(d, 'link'))).rejects.toMatchObject({ code: expect.stringMatching(/^(ELOOP|ENOTDIR)$/) });
    await fsyncDir(d);
  }, 5_000);

  it('trust: the fast path\'s fsyncDirSync never opens a FIFO', () => {
    const d = mkdtempSync(join(tmpdir(), 'wv-fsyncdirsync-'));
    dirs.push(d);
    const fifo = join(d, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // A writer arrives after 1 s, so a blocking open would end (in EINVAL from fsync) instead of
    // hanging the test; the right open refuses the FIFO at once.
    const writer = spawn('sh', ['-c', `sleep 1; exec 3>'${fifo}'; sleep 1`], { stdio: 'ignore' });
    try {
      const t0 = Date.now();
      expect(() => fsyncDirSync(fifo)).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
      expect(Date.now() - t0).toBeLessThan(500);
      fsyncDirSync(d);
    } finally {
      writer.kill('SIGKILL');
    }
  }, 5_000);

  it.runIf(process.geteuid?.() === 0)('the way to the target is judged by every directory walked, links included', async () => {
    const top = await mkdtemp(join(tmpdir(), 'wv-way-'));
    dirs.push(top);
    await chmod(top, 0o755);
    const other = 54321;
    // root-only: top/r/a; another user's: top/u (holding a link into root's tree)
    await mkdir(join(top, 'r', 'a'), { recursive: true, mode: 0o755 });
    await mkdir(join(top, 'u'), { mode: 0o755 });
    await chown(join(top, 'u'), other, other);
    await symlink('../r/a', join(top, 'u', 'link'));
    await lchown(join(top, 'u', 'link'), other, other);
    await symlink('r/./a/../a', join(top, 'rootlink'));
    await mkdir(join(top, 'sticky'), { mode: 0o755 });
    await chmod(join(top, 'sticky'), 0o1777);

    expect(directoryControl(join(top, 'r', 'a'), 0, 'x')).toEqual({ real: join(realpathSync(top), 'r', 'a'), rootOnly: true });
    // A link in root's tree is as good as the tree.
    expect(directoryControl(join(top, 'rootlink'), 0, 'x')).toEqual({ real: join(realpathSync(top), 'r', 'a'), rootOnly: true });
    // The same place reached through another user's directory: that user chose it.
    expect(() => directoryControl(join(top, 'u', 'link'), 0, 'x')).toThrow(new RegExp(`directory ${join(top, 'u')} is owned by uid ${other}`));
    expect(directoryControl(join(top, 'u', 'link'), other, 'x')).toEqual({ real: join(realpathSync(top), 'r', 'a'), rootOnly: false });
    // A sticky world-writable parent (like /tmp) is not root's alone, but no third user can redirect in it.
    expect(directoryControl(join(top, 'sticky'), other, 'x')).toEqual({ real: join(realpathSync(top), 'sticky'), rootOnly: false });
    expect(directoryControl(join(top, 'sticky'), 0, 'x').rootOnly).toBe(false);
    await chmod(join(top, 'sticky'), 0o777);
    expect(() => directoryControl(join(top, 'sticky'), other, 'x')).toThrow(/writable by other users/);
    expect(() => directoryControl(join(top, 'missing', 'x'), 0, 'x')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
