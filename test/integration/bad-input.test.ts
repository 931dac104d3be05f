// Bad input everywhere: every row gives exactly one clear line on stderr (the error class first)
// and the documented exit code (README "Exit codes"). wal-fetch runs the same rows and must never
// answer 1 ("not in archive") for any of them: with no signal file in its working directory it
// exits 255 so that archive recovery stops instead of ending early.
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type ExpectStatic } from 'vitest';
import { FAST_TIMEOUTS } from '../support/fault-proxy.js';
import { chownToPostgres, freePort, isRoot } from '../support/pg.js';
import { createTestBucket, envFor, testStores } from '../support/stores.js';
import { fakeSegment, segName, writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

const SEG = segName(1);
const DEADLINE_MS = Number(FAST_TIMEOUTS.WALVAULT_DEADLINE) * 1000;

interface Ctx {
  /** Owned by postgres (0700 in a world-traversable root) so postgres rows can use it. */
  dir: string;
  /**
   * Owned by the user running the rows (root): their spool and config files. walvault refuses a
   * spool or config file that another user (postgres) could change.
   */
  own: string;
  good: string;
  fileRepo: string;
  env: Record<string, string>;
}

interface Row {
  name: string;
  /** walvault arguments for wal-push; wal-fetch gets fetchArgs (default: same flags, `wal-fetch SEG <dir>/OUT`). */
  push?: (c: Ctx) => string[];
  fetch?: (c: Ctx) => string[];
  env?: (c: Ctx) => Record<string, string> | Promise<Record<string, string>>;
  asPostgres?: boolean;
  code: number;
  stderr: RegExp;
  maxMs?: number;
  /** A definite answer from the store: reported at once, never retried. */
  definite?: boolean;
}

/** One clear line: exactly one line on stderr, the ERROR line naming the class. */
function expectOneLine(expect: ExpectStatic, r: WalvaultResult, cls: RegExp, context: string): void {
  const lines = r.stderr.trimEnd().split('\n');
  const errors = lines.filter((l) => / ERROR: /.test(l));
  expect(errors, context).toHaveLength(1);
  expect(errors[0], context).toMatch(cls);
  // Retried failures log their attempts as WARN lines first; nothing else may appear.
  expect(lines.filter((l) => !/ (ERROR|WARN): /.test(l)), context).toEqual([]);
}

/** Never hangs (wall time), and walvault's own retry loop stopped at the deadline. */
function expectWithinDeadline(expect: ExpectStatic, r: WalvaultResult, maxMs: number, context: string): void {
  expect(r.ms, context).toBeLessThan(maxMs);
  const gaveUp = /gave up after \d+ attempts? in ([\d.]+)s/.exec(r.stderr);
  if (gaveUp) expect(Number(gaveUp[1]) * 1000, context).toBeLessThanOrEqual(DEADLINE_MS + 500);
}

const pushArgs = (path: string, name = SEG) => ['wal-push', path, name];

const LOCAL_ROWS: Row[] = [
  { name: 'unknown flag', push: (c) => ['wal-push', c.good, SEG, '--bogus'], fetch: (c) => ['wal-fetch', SEG, join(c.dir, 'OUT'), '--bogus'], code: 2, stderr: /ERROR: UsageError: Unknown argument: bogus$/ },
  { name: 'missing arguments', push: () => ['wal-push'], fetch: () => ['wal-fetch', SEG], code: 2, stderr: /ERROR: UsageError: Not enough non-option arguments/ },
  { name: 'too many arguments', push: (c) => ['wal-push', c.good, SEG, 'extra'], fetch: (c) => ['wal-fetch', SEG, join(c.dir, 'OUT'), 'extra'], code: 2, stderr: /ERROR: UsageError: Unknown argument: extra/ },
  { name: 'bad value for a choice flag', push: (c) => ['wal-push', '--compression', 'lz4', c.good, SEG], fetch: (c) => ['wal-fetch', '--compression', 'lz4', SEG, join(c.dir, 'OUT')], code: 4, stderr: /ERROR: ConfigError: compression \(from --compression\): expected one of zstd, gzip, none, got "lz4"$/ },
  { name: 'not a WAL file name', push: (c) => pushArgs(c.good, '../../etc/passwd'), fetch: (c) => ['wal-fetch', '../../etc/passwd', join(c.dir, 'OUT')], code: 3, stderr: /ERROR: BadWalName: / },
  { name: 'unreadable %p (mode 000, as postgres)', push: (c) => pushArgs(join(c.dir, 'unreadable', SEG)), env: (c) => ({ ...c.env, WALVAULT_SPOOL: join(c.dir, 'spool') }), asPostgres: true, code: 5, stderr: /ERROR: LocalFileError: cannot read .*EACCES/ },
  { name: '%p missing', push: (c) => pushArgs(join(c.dir, 'nowhere', SEG)), code: 5, stderr: /ERROR: LocalFileError: .* does not exist$/ },
  { name: '%p a directory', push: (c) => pushArgs(join(c.dir, 'adir', SEG)), code: 5, stderr: /ERROR: LocalFileError: .* is a directory/ },
  { name: 'non-WAL content under a WAL name', push: (c) => pushArgs(join(c.dir, 'junk', SEG)), code: 5, stderr: /ERROR: LocalFileError: .* is not a WAL segment: no long page header/ },
  { name: 'truncated segment', push: (c) => pushArgs(join(c.dir, 'short', SEG)), code: 5, stderr: /ERROR: LocalFileError: .* is truncated or padded: 262144 bytes, but its header says segments are 1048576 bytes/ },
  { name: 'empty file', push: (c) => pushArgs(join(c.dir, 'empty', SEG)), code: 5, stderr: /ERROR: LocalFileError: .* is not a WAL segment: 0 bytes/ },
  { name: 'segment under another segment\'s name', push: (c) => pushArgs(c.good, segName(2)), code: 5, stderr: /ERROR: LocalFileError: .* does not hold segment 000000010000000000000002/ },
  { name: 'empty .history file', push: (c) => pushArgs(join(c.dir, 'empty', SEG), '00000002.history'), code: 5, stderr: /ERROR: LocalFileError: .* is empty$/ },
  { name: 'no repository configured', env: (c) => ({ ...c.env, WALVAULT_REPO: '' }), code: 4, stderr: /ERROR: ConfigError: no repository configured/ },
  { name: 'unknown repository scheme', env: (c) => ({ ...c.env, WALVAULT_REPO: 'ftp://host/wal' }), code: 4, stderr: /ERROR: ConfigError: repository "ftp:\/\/host\/wal": unknown scheme "ftp"/ },
  { name: 'invalid bucket name', env: (c) => ({ ...c.env, WALVAULT_REPO: 's3://Bad_Bucket/x' }), code: 4, stderr: /ERROR: ConfigError: repository s3:\/\/Bad_Bucket\/x: "Bad_Bucket" is not a valid bucket name/ },
  { name: 'relative file:// path', env: (c) => ({ ...c.env, WALVAULT_REPO: 'file://relative/dir' }), code: 4, stderr: /ERROR: ConfigError: repository file:\/\/relative\/dir/ },
  { name: 'malformed config file', env: (c) => ({ ...c.env, WALVAULT_CONFIG: join(c.own, 'bad.json') }), code: 4, stderr: /ERROR: ConfigError: config file .*bad\.json is not valid JSON/ },
  { name: 'config file that is not an object', env: (c) => ({ ...c.env, WALVAULT_CONFIG: join(c.own, 'array.json') }), code: 4, stderr: /ERROR: ConfigError: config file .*array\.json must hold one JSON object/ },
  { name: 'config file with an unknown key', env: (c) => ({ ...c.env, WALVAULT_CONFIG: join(c.own, 'typo.json') }), code: 4, stderr: /ERROR: ConfigError: config file .*typo\.json: unknown setting "reop"/ },
  { name: 'missing config file', env: (c) => ({ ...c.env, WALVAULT_CONFIG: join(c.own, 'absent.json') }), code: 4, stderr: /ERROR: ConfigError: cannot read config file .*absent\.json: ENOENT/ },
  { name: 'bad setting value', env: (c) => ({ ...c.env, WALVAULT_DEADLINE: 'soon' }), code: 4, stderr: /ERROR: ConfigError: deadline \(from WALVAULT_DEADLINE\): expected a positive number of seconds, got "soon"/ },
  {
    name: 'trust: a deadline beyond timer range is refused (--deadline 3000000)',
    push: (c) => ['wal-push', '--deadline', '3000000', c.good, SEG],
    fetch: (c) => ['wal-fetch', '--deadline', '3000000', SEG, join(c.dir, 'OUT')],
    code: 4,
    stderr: /ERROR: ConfigError: deadline \(from --deadline\): 3000000 seconds is longer than a timer can wait \(at most 2147483 s, about 24\.8 days\)$/,
  },
  { name: 'trust: a config file others can write is refused', env: (c) => ({ ...c.env, WALVAULT_CONFIG: join(c.own, 'open.json') }), code: 4, stderr: /ERROR: ConfigError: config file .*\/open\.json is writable by other users \(mode 0666\), who could change what walvault does: chmod go-w .*\/open\.json$/ },
  { name: 'trust: a spool others can write is refused', env: (c) => ({ ...c.env, WALVAULT_SPOOL: join(c.own, 'open-spool') }), code: 4, stderr: /ERROR: ConfigError: spool directory .*\/open-spool is writable by other users \(mode 0777\), who could change what walvault does: chmod go-w .*\/open-spool$/ },
  // Root running with postgres's config file: postgres could make root run its programs (pgBinDir).
  ...(isRoot
    ? [{ name: "trust: a config file another user owns is refused (root, postgres's file)", env: (c: Ctx) => ({ ...c.env, WALVAULT_CONFIG: join(c.dir, 'theirs.json') }), code: 4, stderr: /ERROR: ConfigError: config file .*\/theirs\.json is owned by uid \d+, who could make walvault \(uid 0\) act for them; it must belong to uid 0 or root: chown 0 .*\/theirs\.json$/ }]
    : []),
  { name: 'missing file:// repository directory', env: (c) => ({ ...c.env, WALVAULT_REPO: `file://${c.dir}/no-such-repo` }), code: 13, stderr: /ERROR: MissingBucket: repository directory .*no-such-repo does not exist/ },
];

describe('bad input (no store involved)', () => {
  let ctx: Ctx;

  beforeAll(async () => {
    const dir = await tempDir('wv-badinput', { forPostgres: true });
    const own = await tempDir('wv-badinput-own');
    for (const d of ['unreadable', 'adir', 'junk', 'short', 'empty', 'repo', 'spool']) await mkdir(join(dir, d));
    await mkdir(join(own, 'spool'));
    await mkdir(join(own, 'open-spool'));
    await chmod(join(own, 'open-spool'), 0o777);
    await mkdir(join(dir, 'adir', SEG));
    const good = (await writeFakeSegment(dir, 1)).path;
    await writeFile(join(dir, 'unreadable', SEG), fakeSegment({ segno: 1n }));
    await writeFile(join(dir, 'junk', SEG), Buffer.alloc(1024 * 1024, 0x41));
    await writeFile(join(dir, 'short', SEG), fakeSegment({ segno: 1n }).subarray(0, 256 * 1024));
    await writeFile(join(dir, 'empty', SEG), '');
    await writeFile(join(own, 'bad.json'), '{ "repo": "file:///tmp", }');
    await writeFile(join(own, 'array.json'), '["repo"]');
    await writeFile(join(own, 'typo.json'), JSON.stringify({ reop: 'file:///tmp' }));
    await writeFile(join(own, 'open.json'), '{}');
    await chmod(join(own, 'open.json'), 0o666);
    await writeFile(join(dir, 'theirs.json'), '{}');
    await chownToPostgres(dir);
    await chmod(join(dir, 'unreadable', SEG), 0o000);
    // Build the postgres wrapper (a copy of node) before the concurrent rows fork children: a child
    // forked while the copy is open for writing makes exec of it fail with ETXTBSY.
    await walvaultBin();
    const fileRepo = `file://${join(dir, 'repo')}`;
    ctx = { dir, own, good, fileRepo, env: { WALVAULT_REPO: fileRepo, WALVAULT_SPOOL: join(own, 'spool'), ...FAST_TIMEOUTS } };
  });
  afterAll(cleanupAll);

  it.concurrent.for(LOCAL_ROWS)('wal-push: $name → $code', async (row, { expect }) => {
    const env = row.env ? await row.env(ctx) : ctx.env;
    const r = await runWalvault(row.push ? row.push(ctx) : pushArgs(ctx.good), { env, asPostgres: row.asPostgres ?? false, cwd: ctx.dir });
    const context = `exit ${r.code}\n${r.stderr}`;
    expect(r.code, context).toBe(row.code);
    expectOneLine(expect, r, row.stderr, context);
  });

  it.concurrent.for(LOCAL_ROWS.filter((r) => !r.push || r.fetch))('wal-fetch: $name → 255, never 1', async (row, { expect }) => {
    const env = row.env ? await row.env(ctx) : ctx.env;
    const args = row.fetch ? row.fetch(ctx) : ['wal-fetch', SEG, join(ctx.dir, 'OUT')];
    // No signal file in the working directory: treated as archive recovery.
    const r = await runWalvault(args, { env, cwd: ctx.dir });
    const context = `exit ${r.code}\n${r.stderr}`;
    expect(r.code, context).toBe(255);
    expectOneLine(expect, r, new RegExp(`${row.stderr.source.replace(/\$$/, '')}.*; exiting 255 to stop recovery`), context);
  });

  it('trust: a spool walvault creates is private to its user (mode 0700)', async () => {
    const spool = join(ctx.own, 'new', 'spool');
    const r = await runWalvault(['config'], { env: { ...ctx.env, WALVAULT_SPOOL: spool }, cwd: ctx.dir });
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(spool)).mode & 0o777).toBe(0o700);
  });

  it('wal-fetch answers 1 only for a file that is really not archived', async () => {
    // In a repository (walvault.json present): one without it is missing, never "not found".
    const pushed = await runWalvault(pushArgs(ctx.good), { env: ctx.env, cwd: ctx.dir });
    expect(pushed.code, pushed.stderr).toBe(0);
    const r = await runWalvault(['wal-fetch', segName(2), join(ctx.dir, 'OUT')], { env: ctx.env, cwd: ctx.dir });
    expect(r.code, r.stderr).toBe(1);
    // (asked by the prefetch worker the call starts: the repository's answer to this very request)
    expect(r.stderr).toMatch(/not in .* \(not found, asked by the prefetch worker, \d+ ms\); exiting 1/);
  });
});

describe.each(testStores())('bad input against S3 on $name', (store) => {
  let ctx: Ctx;
  let bucket: string;
  const rows: Row[] = [
    { name: 'missing bucket', env: (c) => ({ ...c.env, WALVAULT_REPO: 's3://wv-no-such-bucket-for-walvault/x' }), code: 13, stderr: /ERROR: MissingBucket: S3 GetObject s3:\/\/wv-no-such-bucket-for-walvault\/.* \(the bucket does not exist\)/, definite: true },
    { name: 'invalid secret key', env: (c) => ({ ...c.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' }), code: 8, stderr: /ERROR: AccessDenied: S3 GetObject .*HTTP 403/, definite: true },
    { name: 'unknown access key id', env: (c) => ({ ...c.env, AWS_ACCESS_KEY_ID: 'AKIANOSUCHKEY0000000' }), code: 8, stderr: /ERROR: AccessDenied: S3 GetObject .*HTTP 403/, definite: true },
    {
      name: 'endpoint refusing connections',
      env: async (c) => ({ ...c.env, AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${await freePort()}` }),
      code: 9,
      stderr: /ERROR: StorageUnavailable: .*gave up after .*ECONNREFUSED/,
      maxMs: DEADLINE_MS + 8000,
    },
    {
      name: 'DNS failure',
      env: (c) => ({ ...c.env, AWS_ENDPOINT_URL_S3: 'http://no-such-host.invalid:9000' }),
      code: 9,
      stderr: /ERROR: StorageUnavailable: .*gave up after .*(ENOTFOUND|EAI_AGAIN)/,
      maxMs: DEADLINE_MS + 8000,
    },
    {
      name: 'global flags before the command (--config FILE wal-push), store down',
      push: (c) => ['--config', join(c.dir, 'down.json'), 'wal-push', c.good, SEG],
      fetch: (c) => ['--config', join(c.dir, 'down.json'), 'wal-fetch', SEG, join(c.dir, 'OUT')],
      env: (c) => ({ PATH: process.env.PATH ?? '', WALVAULT_SPOOL: c.env.WALVAULT_SPOOL!, AWS_EC2_METADATA_DISABLED: 'true' }),
      code: 9,
      stderr: /^walvault wal-(push|fetch)\[\d+\] ERROR: StorageUnavailable: .*gave up after/m,
      maxMs: DEADLINE_MS + 8000,
    },
  ];

  beforeAll(async () => {
    const dir = await tempDir(`wv-badinput-${store.name}`);
    await mkdir(join(dir, 'spool'));
    const good = (await writeFakeSegment(dir, 1)).path;
    bucket = await createTestBucket(store, 'badinput');
    const env = { ...envFor(store, bucket, 'b'), WALVAULT_SPOOL: join(dir, 'spool'), ...FAST_TIMEOUTS };
    await writeFile(
      join(dir, 'down.json'),
      JSON.stringify({
        repo: `s3://${bucket}/b`,
        s3Endpoint: `http://127.0.0.1:${await freePort()}`,
        s3ForcePathStyle: true,
        s3AccessKeyId: store.accessKeyId,
        s3SecretAccessKey: store.secretAccessKey,
        deadline: 4,
        attemptTimeout: 1,
        retryMinDelay: 0.05,
        retryMaxDelay: 0.3,
      }),
    );
    ctx = { dir, own: dir, good, fileRepo: '', env };
  });
  afterAll(cleanupAll);

  it.concurrent.for(rows)('wal-push: $name → $code', async (row, { expect }) => {
    const env = row.env ? await row.env(ctx) : ctx.env;
    const r = await runWalvault(row.push ? row.push(ctx) : pushArgs(ctx.good), { env, cwd: ctx.dir });
    const context = `exit ${r.code} in ${Math.round(r.ms)} ms\n${r.stderr}`;
    expect(r.code, context).toBe(row.code);
    expect(r.stderr, context).toMatch(row.stderr);
    expect(r.stderr.trimEnd().split('\n').filter((l) => / ERROR: /.test(l)), context).toHaveLength(1);
    expect(r.stderr, 'secrets never printed').not.toContain(store.secretAccessKey);
    expect(r.stderr).not.toContain('not-the-secret');
    if (row.maxMs) expectWithinDeadline(expect, r, row.maxMs, context);
    if (row.definite) expect(r.stderr, context).not.toMatch(/WARN: .*attempt \d+ failed/);
  });

  it.concurrent.for(rows)('wal-fetch: $name → 255, never 1', async (row, { expect }) => {
    const env = row.env ? await row.env(ctx) : ctx.env;
    const r = await runWalvault(row.fetch ? row.fetch(ctx) : ['wal-fetch', SEG, join(ctx.dir, 'OUT')], { env, cwd: ctx.dir });
    const context = `exit ${r.code} in ${Math.round(r.ms)} ms\n${r.stderr}`;
    expect(r.code, context).toBe(255);
    expect(r.stderr, context).toMatch(new RegExp(`${row.stderr.source.replace(/\$$/, '')}[^\\n]*; exiting 255 to stop recovery`, 'm'));
    expect(r.stderr.trimEnd().split('\n').filter((l) => / ERROR: /.test(l)), context).toHaveLength(1);
    if (row.maxMs) expectWithinDeadline(expect, r, row.maxMs, context);
    if (row.definite) expect(r.stderr, context).not.toMatch(/WARN: .*attempt \d+ failed/);
  });
});
