import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ownerEnv } from '../../src/backup/restore-worker.js';
import { fsyncDir } from '../../src/common/fs-atomic.js';

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
});
