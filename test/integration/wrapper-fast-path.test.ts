// The shell fast path (scripts/wrapper/*.bash, README "The shell fast path"): the installed walvault
// answers PostgreSQL's wal-push for a file the look-ahead stored without starting Node, and only then.
// Each case runs the command twice: once through a wrapper whose Node does not exist (exit 0 can only
// come from the shell; 127 means it fell through to Node) and once through the real one (what
// PostgreSQL then gets).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand, isRoot } from '../support/pg.js';
import { createTestBucket, envFor, listKeys, testStores } from '../support/stores.js';
import { fakeSegment, writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, FELL_THROUGH_TO_NODE as FELL_THROUGH, tempDir, walvaultBin, walvaultWithoutNode } from '../support/walvault.js';

afterAll(cleanupAll);

/** A data directory with `count` ready segments, a private spool, a file:// repository and its config file. */
async function setup(label: string, count = 12) {
  const work = await tempDir(`wv-wrapper-${label}`);
  const pgdata = join(work, 'pgdata');
  const walDir = join(pgdata, 'pg_wal');
  await mkdir(join(walDir, 'archive_status'), { recursive: true });
  const spool = join(work, 'spool');
  const repo = join(work, 'repo');
  const config = join(work, 'walvault.json');
  await mkdir(repo);
  await writeFile(config, JSON.stringify({ repo: `file://${repo}`, lookahead: 8 }));
  const segs = [];
  for (let i = 1; i <= count; i++) {
    const s = await writeFakeSegment(walDir, i);
    await writeFile(join(walDir, 'archive_status', `${s.name}.ready`), '');
    segs.push(s);
  }
  // Files changed within the racy margin get no acknowledgement (src/fs/file-identity.ts).
  await new Promise((r) => setTimeout(r, 100));
  const w = { real: await walvaultBin(), noNode: await walvaultWithoutNode(work) };
  const awsConfig = join(work, 'aws-config'); // absent until a test writes it
  const baseEnv: Record<string, string> = { WALVAULT_SPOOL: spool, AWS_CONFIG_FILE: awsConfig };
  const push = (bin: string, name: string, opts: { env?: Record<string, string>; args?: string[]; cwd?: string; path?: string } = {}) =>
    runCommand(bin, [...(opts.args ?? ['--config', config]), 'wal-push', opts.path ?? `pg_wal/${name}`, name], {
      cwd: opts.cwd ?? pgdata,
      env: { ...baseEnv, ...opts.env },
    });
  const ackDir = () => join(spool, 'fast', pgdata.replaceAll('%', '%25').replaceAll('/', '%'), 'push');
  const objectOf = (name: string, root = repo) => join(root, 'wal', name.slice(0, 16), name);
  return { work, pgdata, walDir, spool, repo, config, awsConfig, segs, ...w, push, ackDir, objectOf };
}

describe('the shell fast path of wal-push', () => {
  it('answers a file the look-ahead stored without starting Node, and refuses every changed file, context, owner or missing acknowledgement', async () => {
    const t = await setup('refusals');
    const [s1, s2, s3, s4, s5, s6, s7, s8, s9] = t.segs;
    const first = await t.push(t.real, s1!.name);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/look-ahead uploaded 8 more/);
    // (the look-ahead worker started on the rest may be acknowledging 10..12 meanwhile)
    expect(await readdir(t.ackDir())).toEqual(expect.arrayContaining(t.segs.slice(1, 9).map((s) => s.name)));

    // Answered by the shell: Node does not even exist for this wrapper.
    const hit = await t.push(t.noNode, s2!.name);
    expect(hit.code, hit.stderr).toBe(0);
    expect(hit.stderr).toMatch(new RegExp(`^walvault wal-push\\[\\d+\\] INFO: ${s2!.name} was uploaded ahead to file://${t.repo} and is unchanged \\(SHA-256 [0-9a-f]{16}\\.\\.\\. verified: identity as when it was hashed, checked by the wrapper\\); nothing to do \\(\\d+ ms\\)\\n$`));

    // Missing acknowledgement: Node's fast path (the spool record) answers instead.
    await rm(join(t.ackDir(), s3!.name));
    expect((await t.push(t.noNode, s3!.name)).code).toBe(FELL_THROUGH);
    const viaNode = await t.push(t.real, s3!.name);
    expect(viaNode.code, viaNode.stderr).toBe(0);
    expect(viaNode.stderr).not.toMatch(/checked by the wrapper/);

    // Changed file: other bytes of the same size (never answered 0: the archive holds the old ones),
    // and the same bytes touched (a new ctime: checked again by Node, which re-hashes).
    await writeFile(s4!.path, fakeSegment({ segno: 4n, seed: 7 }));
    expect((await t.push(t.noNode, s4!.name)).code).toBe(FELL_THROUGH);
    const conflict = await t.push(t.real, s4!.name);
    expect(conflict.code, conflict.stderr).toBe(7);
    const st5 = statSync(s5!.path);
    await chmod(s5!.path, st5.mode & 0o7777); // only the ctime moves: same bytes, same mtime
    expect(statSync(s5!.path).mtimeMs).toBe(st5.mtimeMs);
    expect((await t.push(t.noNode, s5!.name)).code).toBe(FELL_THROUGH);
    expect((await t.push(t.real, s5!.name)).code).toBe(0);

    // Changed context: an environment variable, an option, another working directory.
    expect((await t.push(t.noNode, s6!.name, { env: { WALVAULT_LOG_LEVEL: 'info' } })).code).toBe(FELL_THROUGH);
    expect((await t.push(t.noNode, s6!.name, { args: ['--config', t.config, '--log-level=info'] })).code).toBe(FELL_THROUGH);
    expect((await t.push(t.noNode, s6!.name, { cwd: t.walDir, path: s6!.path })).code).toBe(FELL_THROUGH);
    // An option given twice (Node and the shell could read different config files), and the AWS SDK's
    // config file (a profile there can name another endpoint) appearing.
    expect((await t.push(t.noNode, s6!.name, { args: ['--config', t.config, '--config', t.config] })).code).toBe(FELL_THROUGH);
    await writeFile(t.awsConfig, '[default]\nendpoint_url = http://127.0.0.1:9\n');
    expect((await t.push(t.noNode, s6!.name)).code).toBe(FELL_THROUGH);
    await rm(t.awsConfig);
    expect((await t.push(t.noNode, s6!.name)).code).toBe(0); // unchanged: answered again

    // A spool that is not this user's alone.
    if (isRoot) {
      await chown(t.ackDir(), 70_000, 70_000);
      expect((await t.push(t.noNode, s7!.name)).code).toBe(FELL_THROUGH);
      await chown(t.ackDir(), 0, 0);
    }
    await chmod(t.ackDir(), 0o770);
    expect((await t.push(t.noNode, s7!.name)).code).toBe(FELL_THROUGH);
    await chmod(dirname(t.ackDir()), 0o750);
    await chmod(t.ackDir(), 0o700);
    expect((await t.push(t.noNode, s7!.name)).code).toBe(FELL_THROUGH);
    await chmod(dirname(t.ackDir()), 0o700);
    expect((await t.push(t.noNode, s7!.name)).code).toBe(0);

    // The object left the file:// repository: pushed again.
    await rm(t.objectOf(s8!.name));
    expect((await t.push(t.noNode, s8!.name)).code).toBe(FELL_THROUGH);
    const again = await t.push(t.real, s8!.name);
    expect(again.code, again.stderr).toBe(0);
    expect(existsSync(t.objectOf(s8!.name))).toBe(true);

    // Another repository in the same config file: never answered from the old one's acknowledgements.
    const repo2 = join(t.work, 'repo2');
    await mkdir(repo2);
    await writeFile(t.config, JSON.stringify({ repo: `file://${repo2}`, lookahead: 8 }));
    expect((await t.push(t.noNode, s9!.name)).code).toBe(FELL_THROUGH);
    const moved = await t.push(t.real, s9!.name);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stderr).toMatch(new RegExp(`pushed ${s9!.name} to file://${repo2}`));
    expect(existsSync(t.objectOf(s9!.name, repo2))).toBe(true);
  });

  it('writes no acknowledgement for a call whose context it cannot tell (a secret on the command line)', async () => {
    const t = await setup('secret', 4);
    const r = await t.push(t.real, t.segs[0]!.name, { args: ['--config', t.config, '--s3-secret-access-key=not-a-file-secret'] });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/look-ahead uploaded 3 more/);
    expect(existsSync(t.ackDir())).toBe(false);
  });

  it('never takes a context from the environment: the wrapper computes its own', async () => {
    const t = await setup('forged', 4);
    const forged = { WALVAULT_WRAPPER_CONTEXT: 'walvault-context 1\nforged', WALVAULT_WRAPPER_DIR: join(t.work, 'elsewhere') };
    const r = await t.push(t.real, t.segs[0]!.name, { env: forged });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(forged.WALVAULT_WRAPPER_DIR)).toBe(false);
    expect(readFileSync(join(t.ackDir(), t.segs[1]!.name), 'utf8')).not.toContain('\nforged');
    expect((await t.push(t.noNode, t.segs[1]!.name, { env: forged })).code).toBe(0);
  });
});

describe.each(testStores().map((s) => [s.name, s] as const))('the shell fast path on S3 (%s)', (_name, store) => {
  it('answers from an S3 look-ahead upload, and never once the repository changed', async () => {
    const t = await setup(`s3-${store.name}`, 4);
    const bucket = await createTestBucket(store, 'wrapper');
    const env = { ...envFor(store, bucket, 'one'), WALVAULT_SPOOL: t.spool };
    const args: string[] = [];
    const first = await t.push(t.real, t.segs[0]!.name, { env, args });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/look-ahead uploaded 3 more/);
    const hit = await t.push(t.noNode, t.segs[1]!.name, { env, args });
    expect(hit.code, hit.stderr).toBe(0);
    expect(hit.stderr).toMatch(new RegExp(`uploaded ahead to s3://${bucket}/one and is unchanged .*checked by the wrapper`));
    // The same bucket under another prefix is another repository.
    const other = { ...env, WALVAULT_REPO: `s3://${bucket}/two` };
    expect((await t.push(t.noNode, t.segs[2]!.name, { env: other, args })).code).toBe(FELL_THROUGH);
    const moved = await t.push(t.real, t.segs[2]!.name, { env: other, args });
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stderr).toMatch(new RegExp(`pushed ${t.segs[2]!.name} to s3://${bucket}/two`));
    expect(await listKeys(store, bucket, `two/wal/`)).toContain(`two/wal/${t.segs[2]!.name.slice(0, 16)}/${t.segs[2]!.name}`);
  });
});
