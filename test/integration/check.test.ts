// walvault check: every probe against real stores (radosgw, Swift), the failures a user or a store
// causes each failing its own line (a wrong secret, a missing bucket, a store that ignores
// If-None-Match), and --pg against a real archiving PostgreSQL 15: the switched segment arrives,
// a broken archive_command times out naming pg_stat_archiver, archive_mode off fails.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchivingCluster, type ArchivingCluster } from '../support/archiving-cluster.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, envFor, listKeys, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

afterAll(cleanupAll);

const show = (r: WalvaultResult) => `exit ${r.code} in ${Math.round(r.ms)} ms\n${r.stdout}${r.stderr}`;
const line = (r: WalvaultResult, probe: string) => r.stdout.split('\n').find((l) => l.slice(5).startsWith(`${probe}:`)) ?? `(no ${probe} line)`;
const FAST = { WALVAULT_RETRIES: '1', WALVAULT_DEADLINE: '20', WALVAULT_ATTEMPT_TIMEOUT: '10' };
const S3_PROBES = ['configuration', 'spool', 'endpoint', 'clock', 'credentials', 'bucket', 'write-read-delete', 'missing-key', 'conditional-writes', 'object-lock', 'walvault.json', 'encryption'];

async function s3Env(store: TestStore, bucket: string): Promise<Record<string, string>> {
  return { ...envFor(store, bucket, 'repo'), WALVAULT_SPOOL: join(await tempDir('wv-check-spool'), 'spool'), ...FAST };
}

describe.each(testStores())('walvault check on $name', (store) => {
  it(`check: passes on ${store.name}, one ok line per probe, and leaves nothing behind`, async () => {
    const bucket = await createTestBucket(store, 'check');
    const r = await runWalvault(['check'], { env: await s3Env(store, bucket) });
    console.log(`check on ${store.name}:\n${r.stdout}`);
    expect(r.code, show(r)).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.map((l) => l.slice(5).split(':')[0])).toEqual(S3_PROBES);
    for (const l of lines) expect(l, show(r)).toMatch(/^(ok  |warn) \S+: /);
    expect(line(r, 'credentials'), show(r)).toMatch(/^ok   credentials: access key \w{4}\*{4} accepted/);
    expect(line(r, 'endpoint'), show(r)).toMatch(/^ok   endpoint: http:\/\/127\.0\.0\.1:\d+ answered HTTP \d+ .*plain http on loopback/);
    expect(line(r, 'clock'), show(r)).toMatch(/^ok   clock: local clock within 2 s/);
    expect(line(r, 'write-read-delete'), show(r)).toMatch(/^ok   write-read-delete: put, get \(\d+ bytes and metadata equal\), delete and gone/);
    expect(line(r, 'missing-key'), show(r)).toMatch(/^ok   missing-key: a missing key answers 404 NoSuchKey/);
    expect(line(r, 'walvault.json'), show(r)).toMatch(/^ok   walvault.json: absent: a new repository/);
    // radosgw enforces If-None-Match; Swift's s3api answers 501: walvault falls back, not atomic.
    expect(line(r, 'conditional-writes'), show(r)).toMatch(
      store.conditionalWrites ? /^ok   conditional-writes: a second PutObject with If-None-Match: \* was refused with 412/ : /^warn conditional-writes: the store answers HTTP 501 NotImplemented .*HEAD then PUT, which is not atomic/,
    );
    expect(await listKeys(store, bucket)).toEqual([]);
  });
});

const rgw = testStores().filter((s) => s.name === 'rgw');

describe('walvault check against an https endpoint', () => {
  it('check: an untrusted certificate fails the endpoint line by name; a clock 10 minutes off fails the clock line', async () => {
    const work = await tempDir('wv-check-tls');
    const [key, cert] = [join(work, 'key.pem'), join(work, 'cert.pem')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    // Not a store: every request gets 403 AccessDenied, dated ten minutes ago.
    const server = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
      req.resume();
      res.setHeader('Date', new Date(Date.now() - 600_000).toUTCString());
      res.writeHead(403, { 'Content-Type': 'application/xml' });
      res.end(req.method === 'HEAD' ? undefined : '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const env = {
        WALVAULT_REPO: 's3://tls-check/repo',
        AWS_ENDPOINT_URL_S3: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
        AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
        AWS_SECRET_ACCESS_KEY: 'secret',
        WALVAULT_S3_FORCE_PATH_STYLE: 'true',
        AWS_EC2_METADATA_DISABLED: 'true',
        WALVAULT_SPOOL: join(work, 'spool'),
        ...FAST,
      };
      const r = await runWalvault(['check'], { env });
      console.log(`check with an untrusted certificate:\n${r.stdout}`);
      expect(r.code, show(r)).toBe(15);
      expect(line(r, 'endpoint'), show(r)).toMatch(/^FAIL endpoint: the TLS certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted: DEPTH_ZERO_SELF_SIGNED_CERT .* — the endpoint uses a self-signed certificate: set s3CaBundle/);
      expect(line(r, 'credentials'), show(r)).toBe('skip credentials: not checked: the endpoint cannot be reached');

      const trusted = await runWalvault(['check', '--s3-ca-bundle', cert], { env });
      console.log(`check with a clock 10 minutes off:\n${trusted.stdout}`);
      expect(trusted.code, show(trusted)).toBe(15);
      expect(line(trusted, 'endpoint'), show(trusted)).toMatch(/^ok   endpoint: https:\/\/127\.0\.0\.1:\d+ answered HTTP 403 in \d+ ms; TLSv1\.3, certificate for 127\.0\.0\.1 trusted, valid until \d{4}-\d\d-\d\d$/);
      expect(line(trusted, 'clock'), show(trusted)).toMatch(/^FAIL clock: local clock (599|600|601) s ahead of the store's .* — synchronize this host's clock/);
      expect(line(trusted, 'credentials'), show(trusted)).toMatch(/^FAIL credentials: S3 ListObjectsV2 s3:\/\/tls-check\/repo failed: HTTP 403 AccessDenied.* — the credentials may not list the bucket: grant s3:ListBucket/);
      expect(trusted.stderr).toMatch(/CheckFailed: 2 of 12 checks failed: clock, credentials$/m);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('walvault check on a file:// repository', () => {
  it('check: a file:// repository gets directory, permissions, fsync, write/read/delete, missing key and no-overwrite', async () => {
    const work = await tempDir('wv-check-file');
    const repo = join(work, 'repo');
    await mkdir(repo, { mode: 0o750 });
    const env = { WALVAULT_REPO: `file://${repo}`, WALVAULT_SPOOL: join(work, 'spool') };
    const r = await runWalvault(['check'], { env });
    console.log(`check on file://:\n${r.stdout}`);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => l.slice(0, 5) + l.slice(5).split(':')[0])).toEqual(
      ['configuration', 'spool', 'directory', 'permissions', 'fsync', 'write-read-delete', 'missing-key', 'no-overwrite', 'walvault.json', 'encryption'].map((n) => `ok   ${n}`),
    );
    expect(line(r, 'fsync'), show(r)).toMatch(/^ok   fsync: a 1 MiB file and its directory written and fsynced in [\d.]+ ms$/);
    expect(line(r, 'missing-key'), show(r)).toMatch(/answers ENOENT/);
    expect(await readdir(join(repo, 'state', 'check'))).toEqual([]);

    // Others may delete archived WAL: a warning, not a failure.
    await chmod(repo, 0o777);
    const open = await runWalvault(['check'], { env });
    expect(open.code, show(open)).toBe(0);
    expect(line(open, 'permissions'), show(open)).toMatch(/^warn permissions: .* \(owner uid 0, mode 0777\) is writable by every user, who can delete or replace archived WAL — chown 0 \S+; chmod go-w /);

    // A missing directory (an unmounted share) is never created.
    const gone = await runWalvault(['check'], { env: { ...env, WALVAULT_REPO: `file://${work}/not-mounted` } });
    expect(gone.code, show(gone)).toBe(15);
    expect(line(gone, 'directory'), show(gone)).toMatch(/^FAIL directory: \S+\/not-mounted: ENOENT — create it .* or mount the share$/);
    expect(line(gone, 'write-read-delete'), show(gone)).toBe('skip write-read-delete: not checked: the directory is not usable');
  });

  it('check: --pg with no server there fails the postgresql line and skips nothing else', async () => {
    const work = await tempDir('wv-check-nopg');
    await mkdir(join(work, 'repo'));
    const env = { WALVAULT_REPO: `file://${work}/repo`, WALVAULT_SPOOL: join(work, 'spool'), PGHOST: '127.0.0.1', PGPORT: '1', PGUSER: 'postgres' };
    const r = await runWalvault(['check', '--pg'], { env });
    expect(r.code, show(r)).toBe(15);
    expect(line(r, 'write-read-delete'), show(r)).toMatch(/^ok /);
    expect(line(r, 'postgresql'), show(r)).toMatch(/^FAIL postgresql: cannot connect to PostgreSQL at 127\.0\.0\.1:1 \(user postgres, database postgres\): connection refused .* — give the server with --dbname CONNINFO or PGHOST/);
    expect(r.stderr).toMatch(/CheckFailed: 1 of 11 checks failed: postgresql$/m);
  });

  it('check: a configuration that does not load is the configuration line, with its own exit code (4)', async () => {
    const work = await tempDir('wv-check-config');
    const config = join(work, 'walvault.json');
    await writeFile(config, '{"repo": "file:///srv/wal",\n', { mode: 0o600 });
    const r = await runWalvault(['check', '--config', config], { env: { WALVAULT_SPOOL: join(work, 'spool') } });
    expect(r.code, show(r)).toBe(4);
    expect(r.stdout).toBe(`FAIL configuration: config file ${config} is not valid JSON (syntax error at line 2, column 1) — fix the configuration named (walvault config shows every value and where it comes from)\n`);
    expect(r.stderr).toMatch(/ERROR: ConfigError: config file .* is not valid JSON/);
    const j = await runWalvault(['check', '--config', config, '--json'], { env: { WALVAULT_SPOOL: join(work, 'spool') } });
    expect(j.code, show(j)).toBe(4);
    expect(JSON.parse(j.stdout)).toMatchObject({ repo: null, ok: false, probes: [{ name: 'configuration', status: 'fail' }] });
  });
});

describe.each(rgw)('walvault check failures on $name', (store) => {
  let bucket: string;
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'check-fail');
  });

  it('check: --json prints one document with every probe', async () => {
    const r = await runWalvault(['check', '--json'], { env: await s3Env(store, bucket) });
    expect(r.code, show(r)).toBe(0);
    const doc = JSON.parse(r.stdout) as { repo: string; ok: boolean; checkedAt: string; probes: { name: string; status: string; detail: string; fix: string | null }[] };
    expect(doc.repo).toBe(`s3://${bucket}/repo`);
    expect(doc.ok).toBe(true);
    expect(doc.checkedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(doc.probes.map((p) => p.name)).toEqual(S3_PROBES);
    for (const p of doc.probes) {
      expect(Object.keys(p).sort()).toEqual(['detail', 'fix', 'name', 'status']);
      expect(p.status).toBe('ok');
    }
  });

  it('check: a wrong secret fails the credentials line', async () => {
    const env = { ...(await s3Env(store, bucket)), AWS_SECRET_ACCESS_KEY: 'not-the-secret-key-0123456789' };
    const r = await runWalvault(['check'], { env });
    console.log(`check with a wrong secret:\n${r.stdout}${r.stderr}`);
    expect(r.code, show(r)).toBe(15);
    expect(line(r, 'endpoint'), show(r)).toMatch(/^ok /);
    expect(line(r, 'credentials'), show(r)).toMatch(/^FAIL credentials: S3 ListObjectsV2 .* HTTP 403 SignatureDoesNotMatch.* — the secret key does not match the access key: check s3SecretAccessKey/);
    for (const p of ['bucket', 'write-read-delete', 'missing-key', 'conditional-writes', 'object-lock', 'walvault.json', 'encryption']) expect(line(r, p)).toMatch(new RegExp(`^skip ${p}: not checked: the credentials failed`));
    expect(r.stderr).toMatch(/ERROR: CheckFailed: 1 of 12 checks failed: credentials$/m);
  });

  it('check: a missing bucket fails the bucket line', async () => {
    const r = await runWalvault(['check'], { env: await s3Env(store, `${bucket}-missing`) });
    console.log(`check with a missing bucket:\n${r.stdout}${r.stderr}`);
    expect(r.code, show(r)).toBe(15);
    expect(line(r, 'credentials'), show(r)).toMatch(/^ok   credentials: accepted/);
    expect(line(r, 'bucket'), show(r)).toMatch(/^FAIL bucket: S3 ListObjectsV2 .*NoSuchBucket.* does not exist at 127\.0\.0\.1:\d+ — create it \(aws s3 mb s3:\/\/wv-check-fail-\S+-missing\)/);
    expect(line(r, 'write-read-delete'), show(r)).toMatch(/^skip write-read-delete: not checked: the bucket is not usable/);
    expect(r.stderr).toMatch(/CheckFailed: 1 of 12 checks failed: bucket$/m);
  });

  it('check: a store that ignores If-None-Match fails the conditional-writes line', async () => {
    const proxy = await FaultProxy.start({ upstream: store.endpoint, secretAccessKey: store.secretAccessKey });
    try {
      proxy.addRule({ method: 'PUT', path: /\/state\/check\/if-none-match-/, action: fault.ignoreIfNoneMatch() });
      const env = { ...(await s3Env(store, bucket)), AWS_ENDPOINT_URL_S3: proxy.url };
      const r = await runWalvault(['check'], { env });
      console.log(`check through a store that ignores If-None-Match:\n${r.stdout}${r.stderr}`);
      expect(r.code, show(r)).toBe(15);
      expect(line(r, 'conditional-writes'), show(r)).toMatch(
        /^FAIL conditional-writes: .*a second PutObject with If-None-Match: \* succeeded .*overwrites anyway.* — use a store \(or gateway\) that enforces If-None-Match/,
      );
      expect(proxy.stats().faults).toBe(2);
      expect(r.stderr).toMatch(/CheckFailed: 1 of 12 checks failed: conditional-writes$/m);
    } finally {
      await proxy.close();
    }
  });
});

describe.each(rgw)('walvault check through a proxy answering 403 for a missing key on $name', (store) => {
  it('check: a 403 for a missing key fails the missing-key line naming s3:ListBucket', async () => {
    const bucket = await createTestBucket(store, 'check-403');
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      // What S3 answers for a missing key to credentials without s3:ListBucket.
      proxy.addRule({ method: 'GET', path: /\/state\/check\/missing-/, action: fault.accessDenied() });
      const r = await runWalvault(['check'], { env: { ...(await s3Env(store, bucket)), AWS_ENDPOINT_URL_S3: proxy.url } });
      expect(r.code, show(r)).toBe(15);
      expect(line(r, 'missing-key'), show(r)).toMatch(/^FAIL missing-key: a GET of a missing key answers 403 AccessDenied, not 404: the credentials lack s3:ListBucket.* — grant s3:ListBucket on the bucket$/);
      expect(r.stderr).toMatch(/CheckFailed: 1 of 12 checks failed: missing-key$/m);
    } finally {
      await proxy.close();
    }
  });
});

describe.each(rgw)('walvault check with a read that fails on $name', (store) => {
  it('check: a write/read/delete probe that fails after its put leaves no object behind', async () => {
    const bucket = await createTestBucket(store, 'check-leftover');
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      proxy.addRule({ method: 'GET', path: /\/state\/check\/rw-/, action: fault.accessDenied() });
      const r = await runWalvault(['check'], { env: { ...(await s3Env(store, bucket)), AWS_ENDPOINT_URL_S3: proxy.url } });
      expect(r.code, show(r)).toBe(15);
      expect(line(r, 'write-read-delete'), show(r)).toMatch(/^FAIL write-read-delete: get of state\/check\/rw-/);
      expect((await listKeys(store, bucket, '')).filter((k) => k.includes('state/check/'))).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});

describe.each(rgw)('walvault check --pg on $name', (store) => {
  let c: ArchivingCluster;
  beforeAll(async () => {
    c = await startArchivingCluster(store, 'check-pg');
  }, 120_000);
  afterAll(async () => {
    await c?.pg.destroy();
    c?.storage.close();
  });
  const env = () => ({ ...c.env, ...c.pg.connectionEnv(), ...FAST });

  it('check: --pg against an archiving PostgreSQL 15 passes and shows the switched segment arriving', async () => {
    await c.pg.query('CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g');
    const r = await runWalvault(['check', '--pg'], { env: env() });
    console.log(`check --pg:\n${r.stdout}`);
    expect(r.code, show(r)).toBe(0);
    const sysid = await c.pg.query('SELECT system_identifier FROM pg_control_system()');
    expect(line(r, 'postgresql'), show(r)).toMatch(new RegExp(`^ok   postgresql: 127\\.0\\.0\\.1:\\d+ \\(user postgres, database postgres\\): PostgreSQL 15\\.\\d+, a primary, system identifier ${sysid}`));
    expect(line(r, 'archive_mode'), show(r)).toBe('ok   archive_mode: on');
    expect(line(r, 'archive_command'), show(r)).toMatch(/^ok   archive_command: ".* --config \S+ wal-push %p %f"/);
    expect(line(r, 'archiver'), show(r)).toMatch(/^ok   archiver: pg_stat_archiver: (last archived|nothing archived yet)/);
    const m = /^ok   wal-switch: pg_switch_wal\(\) ended ([0-9A-F]{24}); it arrived in s3:\/\/\S+ after [\d.]+ s$/m.exec(r.stdout);
    expect(m, show(r)).not.toBeNull();
    expect(await c.storage.head(`wal/${m![1]!.slice(0, 16)}/${m![1]}`)).not.toBeNull();
    // Now the repository has walvault.json: the next check compares the identifiers.
    const again = await runWalvault(['check', '--pg'], { env: env() });
    expect(again.code, show(again)).toBe(0);
    expect(line(again, 'system-identifier'), show(again)).toBe(`ok   system-identifier: server and walvault.json agree: ${sysid}, 1 MiB segments`);
    expect(line(again, 'walvault.json'), show(again)).toMatch(new RegExp(`^ok   walvault.json: system identifier ${sysid}, PostgreSQL 15, 1 MiB WAL segments`));
  }, 60_000);

  it('check: --pg names pg_stat_archiver when the switched segment does not arrive', async () => {
    const original = await c.pg.query('SHOW archive_command');
    await c.pg.query("ALTER SYSTEM SET archive_command = '/bin/false walvault wal-push %p %f'");
    await c.pg.reload();
    try {
      const r = await runWalvault(['check', '--pg'], { env: { ...env(), WALVAULT_DEADLINE: '4' } });
      console.log(`check --pg with a failing archive_command:\n${r.stdout}`);
      expect(r.code, show(r)).toBe(15);
      expect(line(r, 'archive_command'), show(r)).toMatch(/^warn archive_command: .* uses no config file, this check used \S+/);
      expect(line(r, 'wal-switch'), show(r)).toMatch(
        /^FAIL wal-switch: pg_switch_wal\(\) ended [0-9A-F]{24}, which did not arrive in s3:\/\/\S+ within 4 s \(deadline\); pg_stat_archiver: .*failed_count [1-9]\d* \(last_failed_wal [0-9A-F]{24}.* — look at pg_stat_archiver/,
      );
    } finally {
      await c.pg.query(`ALTER SYSTEM SET archive_command = '${original.replace(/'/g, "''")}'`);
      await c.pg.reload();
    }
  }, 60_000);

  it('check: --pg with archive_mode off fails the archive_mode line', async () => {
    await c.pg.query('ALTER SYSTEM SET archive_mode = off');
    await c.pg.stop('fast');
    await c.pg.start();
    const r = await runWalvault(['check', '--pg'], { env: env() });
    console.log(`check --pg with archive_mode off:\n${r.stdout}`);
    expect(r.code, show(r)).toBe(15);
    expect(line(r, 'archive_mode'), show(r)).toBe('FAIL archive_mode: off: PostgreSQL archives nothing — set archive_mode = on in postgresql.conf (or ALTER SYSTEM), then restart PostgreSQL');
    expect(line(r, 'wal-switch'), show(r)).toBe('skip wal-switch: not tried: archiving is not set up (see above)');
    expect(r.stderr).toMatch(/CheckFailed: 1 of \d+ checks failed: archive_mode$/m);
  }, 60_000);
});
