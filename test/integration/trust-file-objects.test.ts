// A file:// repository is a directory anyone with access can put things in. A FIFO (or a symlink
// to one, or to a device) at an object's key must be refused by type, never opened in a way that
// waits for a writer: wal-fetch and wal-push would hang past every deadline.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { segName, writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';

afterAll(cleanupAll);

describe('objects of a file:// repository that are not regular files', () => {
  it('trust: a FIFO in a file:// repository is an error, never a hang', async () => {
    const work = await tempDir('wv-fifo-repo');
    const repo = join(work, 'repo');
    await mkdir(repo);
    const env = { WALVAULT_REPO: `file://${repo}`, WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_LOOKAHEAD: '0', WALVAULT_PREFETCH: '0', WALVAULT_DEADLINE: '20' };
    const s1 = await writeFakeSegment(work, 1);
    expect((await runWalvault(['wal-push', s1.path, s1.name], { env })).code).toBe(0);
    const dir = join(repo, 'wal', s1.name.slice(0, 16));
    execFileSync('mkfifo', [join(dir, segName(2))]);
    await symlink(join(dir, segName(2)), join(dir, segName(3)));
    await symlink('/dev/zero', join(dir, segName(4)));

    const recovery = join(work, 'recovery');
    const standby = join(work, 'standby');
    for (const d of [recovery, standby]) await mkdir(join(d, 'pg_wal'), { recursive: true });
    await writeFile(join(standby, 'standby.signal'), '');
    const opts = (cwd: string) => ({ env, cwd, timeoutMs: 15_000 });
    for (const [n, kind] of [[2, 'is a FIFO'], [3, 'is a symbolic link'], [4, 'is a symbolic link']] as const) {
      const name = segName(n);
      const r = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], opts(recovery));
      expect(r.signal, `${name} hung`).toBeNull();
      expect(r.code, `${name}: ${r.stderr}`).toBe(255);
      expect(r.ms).toBeLessThan(5000);
      expect(r.stderr).toMatch(new RegExp(`ERROR: CorruptObject: object wal/.*${name} in file://.* ${kind}.*exiting 255`));
      expect(readdirSync(join(recovery, 'pg_wal'))).toEqual([]);
      const s = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], opts(standby));
      expect(s.code, `${name}: ${s.stderr}`).toBe(1);
      expect(s.stderr).toMatch(/CorruptObject: .*exiting 1 so PostgreSQL retries/);
    }

    // wal-push of the segment whose key holds the FIFO: an error (not "already archived"), at once.
    const s2 = await writeFakeSegment(work, 2);
    const p = await runWalvault(['wal-push', s2.path, s2.name], { env, timeoutMs: 15_000 });
    expect(p.signal, 'wal-push hung').toBeNull();
    expect(p.code, p.stderr).toBe(10);
    expect(p.ms).toBeLessThan(5000);
    expect(p.stderr).toMatch(/CorruptObject: object wal\/.* is a FIFO/);
    expect(existsSync(join(dir, segName(2)))).toBe(true);
  });
});
