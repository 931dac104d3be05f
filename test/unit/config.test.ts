import { chmodSync, chownSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig } from '../../src/common/config.js';
import { parseBytes } from '../../src/common/config-values.js';
import { execFileSync } from 'node:child_process';
import { main } from '../../src/cli/main.js';
import { ExitCode } from '../../src/common/errors.js';
import { formatLogLine } from '../../src/common/log.js';

const dir = mkdtempSync(join(tmpdir(), 'wv-config-'));
function file(content: string): string {
  const p = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(p, content);
  return p;
}

describe('loadConfig', () => {
  it('applies flag > env > file > default precedence and records sources', () => {
    const cfg = file(JSON.stringify({ repo: 's3://from-file/p', compression: 'gzip', deadline: 30 }));
    const { config, sources } = loadConfig({ config: cfg, deadline: '10' }, { WALVAULT_COMPRESSION: 'none', HOME: '/home/x' });
    expect(config.repo).toBe('s3://from-file/p');
    expect(sources['repo']!.source).toBe('file');
    expect(config.compression).toBe('none');
    expect(sources['compression']!.from).toBe('WALVAULT_COMPRESSION');
    expect(config.deadline).toBe(10);
    expect(config.retries).toBe(8);
    expect(config.spool).toBe('/home/x/.cache/walvault');
  });

  it('reads the AWS conventions for endpoint, region and path style', () => {
    const { config } = loadConfig({}, { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9000', AWS_REGION: 'eu-west-1', WALVAULT_S3_FORCE_PATH_STYLE: 'true' });
    expect(config.s3Endpoint).toBe('http://127.0.0.1:9000');
    expect(config.s3Region).toBe('eu-west-1');
    expect(config.s3ForcePathStyle).toBe(true);
  });

  it.each([
    [{ compression: 'lz4' }, /expected one of zstd, gzip, none/],
    [{ deadline: '-1' }, /positive number of seconds/],
    [{ 'fetch-stop-exit-code': '100' }, /between 126 and 255/],
    [{ 's3-part-size': '1MiB' }, /at least 5MiB/],
  ])('refuses bad values %j with a ConfigError', (flags, message) => {
    try {
      loadConfig(flags, {});
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).toMatch(message);
      expect((e as { exitCode: number }).exitCode).toBe(ExitCode.config);
    }
  });

  it('refuses a malformed or unknown-key config file', () => {
    expect(() => loadConfig({ config: file('{ nope') }, {})).toThrow(/not valid JSON/);
    expect(() => loadConfig({ config: file('{"reop": "x"}') }, {})).toThrow(/unknown setting "reop"/);
    expect(() => loadConfig({ config: join(dir, 'missing.json') }, {})).toThrow(/cannot read config file/);
    expect(() => loadConfig({}, { WALVAULT_CONFIG: file('[1]') })).toThrow(/one JSON object/);
  });

  it('masks secrets when describing the config', () => {
    const loaded = loadConfig({}, { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'supersecretvalue' });
    const rows = Object.fromEntries(describeConfig(loaded).map((r) => [r.key, r.value]));
    expect(rows['s3SecretAccessKey']).toBe('****');
    expect(rows['s3AccessKeyId']).toBe('AKIA****');
    expect(JSON.stringify(rows)).not.toContain('supersecretvalue');
  });

  it('parses sizes', () => {
    expect(parseBytes('16MiB')).toBe(16 * 1024 * 1024);
    expect(parseBytes('1g')).toBe(1024 ** 3);
    expect(parseBytes(4096)).toBe(4096);
    expect(() => parseBytes('lots')).toThrow();
  });
});

describe('S3 multipart part size', () => {
  it('keeps the configured size for small or unknown uploads and grows it to fit 10,000 parts', async () => {
    const { partSizeFor } = await import('../../src/storage/s3/upload.js');
    const MiB = 1024 * 1024;
    expect(partSizeFor(16 * MiB)).toBe(16 * MiB);
    expect(partSizeFor(16 * MiB, 10 * 1024 * MiB)).toBe(16 * MiB);
    const tib = 1024 * 1024 * MiB;
    const grown = partSizeFor(16 * MiB, tib);
    expect(grown * 10_000).toBeGreaterThanOrEqual(2 * tib);
    expect(grown % MiB).toBe(0);
  });
});

// Issue 8 item 10: settings are checked at load, strictly, in both CLIs (both call loadConfig).
function configErrorOf(fn: () => unknown): Error & { exitCode: number } {
  try {
    fn();
  } catch (e) {
    return e as Error & { exitCode: number };
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('trust: settings', () => {
  const spool = mkdtempSync(join(tmpdir(), 'wv-config-spool-'));

  it('trust: durations beyond timer range are refused', () => {
    // 2^31-1 ms is the longest a Node timer waits; 3,000,000 s made every deadline fire at once (exit 9).
    const cases: Array<[Record<string, unknown>, NodeJS.ProcessEnv]> = [
      [{ deadline: '3000000' }, {}],
      [{}, { WALVAULT_ATTEMPT_TIMEOUT: '2147484' }],
      [{ config: file(JSON.stringify({ retryMaxDelay: 1e9 })) }, {}],
      [{ 'backup-wait-timeout': '99999999' }, {}],
      [{ 'connect-timeout': '1e400' }, {}],
    ];
    for (const [flags, env] of cases) {
      const e = configErrorOf(() => loadConfig({ spool, ...flags }, env));
      expect(e.exitCode, e.message).toBe(ExitCode.config);
      expect(e.message).toMatch(/^(deadline|attemptTimeout|retryMaxDelay|backupWaitTimeout|connectTimeout) \(from .+\): /);
    }
    expect(configErrorOf(() => loadConfig({ spool, deadline: '3000000' }, {})).message).toMatch(/longer than a timer can wait \(at most 2147483 s/);
    // The longest a timer accepts still loads, and every derived millisecond value fits a timer.
    const { config } = loadConfig({ spool, deadline: '2147483', 'attempt-timeout': '2147483' }, {});
    expect(config.deadline * 1000).toBeLessThanOrEqual(2 ** 31 - 1);
    // Counts that become parallel work, memory or timers have upper bounds too.
    for (const [flag, value] of [['retries', '1000001'], ['lookahead', '100000'], ['prefetch', '100000'], ['s3-queue-size', '10000'], ['s3-part-size', '6GiB'], ['backup-stale-upload-age', '1e12']]) {
      const e = configErrorOf(() => loadConfig({ spool, [flag!]: value }, {}));
      expect(e.exitCode, `${flag}=${value}`).toBe(ExitCode.config);
      expect(e.message).toMatch(/must be at most|expected a positive number/);
    }
    expect(configErrorOf(() => loadConfig({ spool, compression: 'gzip', 'compression-level': '15' }, {})).message).toMatch(/compressionLevel 15 is out of range for gzip/);
  });

  it('trust: numbers must be numbers', async () => {
    const flagCases: Array<[string, unknown]> = [
      ['retries', ''],
      ['retries', '12abc'],
      ['retries', '-1'],
      ['retries', '1.5'],
      ['lookahead', true],
      ['prefetch', []],
      ['s3-queue-size', {}],
      ['deadline', ''],
      ['deadline', 'NaN'],
      ['deadline', 'Infinity'],
      ['deadline', '0x10'],
      ['deadline', ['10', '20']], // a flag given twice
      ['prefetch-max-bytes', ''],
      ['prefetch-max-bytes', ['64MiB']],
      ['prefetch-max-bytes', '0'],
      ['s3-force-path-style', 'maybe'],
      ['s3-force-path-style', ''],
    ];
    for (const [flag, value] of flagCases) {
      const e = configErrorOf(() => loadConfig({ spool, [flag]: value }, {}));
      expect(e.exitCode, `--${flag} ${JSON.stringify(value)}`).toBe(ExitCode.config);
      expect(e.message).toContain(`(from --${flag})`);
    }
    const e = configErrorOf(() => loadConfig({ spool }, { WALVAULT_RETRIES: '8 retries' }));
    expect(e.message).toBe('retries (from WALVAULT_RETRIES): expected a whole number, got "8 retries"');

    // In the JSON file a number is a JSON number and a boolean a JSON boolean.
    const fileCases: Array<[string, unknown]> = [
      ['retries', '8'],
      ['retries', true],
      ['retries', []],
      ['retries', {}],
      ['retries', 1.5],
      ['retries', -3],
      ['deadline', '60'],
      ['deadline', false],
      ['deadline', [60]],
      ['deadline', 1e400], // JSON.parse reads 1e400 as Infinity
      ['s3PartSize', true],
      ['s3PartSize', ['16MiB']],
      ['s3ForcePathStyle', 'true'],
      ['s3ForcePathStyle', 1],
      ['repo', 5],
      ['repo', ''],
      ['s3Region', ['eu-west-1']],
    ];
    for (const [key, value] of fileCases) {
      const path = file(`{"${key}": ${value === 1e400 ? '1e400' : JSON.stringify(value)}}`);
      const err = configErrorOf(() => loadConfig({ spool, config: path }, {}));
      expect(err.exitCode, `${key}: ${JSON.stringify(value)}`).toBe(ExitCode.config);
      expect(err.message).toContain(`${key} (from config file ${path}): `);
    }
    // yargs alone would read --s3-force-path-style=yes as false: the full CLI refuses it like the fast path.
    expect(await main(['config', '--spool', spool, '--s3-force-path-style=yes'])).toBe(ExitCode.config);
    expect(await main(['wal-push', '--spool', spool, '--s3ForcePathStyle=1', '/nonexistent', '000000010000000000000001'])).toBe(ExitCode.config);

    // A secret in the wrong type is not echoed.
    const secretFile = file('{"s3SecretAccessKey": ["hunter2-secret"]}');
    expect(configErrorOf(() => loadConfig({ spool, config: secretFile }, {})).message).not.toContain('hunter2');

    // Well-formed values still load, from each source.
    const ok = loadConfig({ spool, retries: '3', deadline: ' 2.5 ', 's3-force-path-style': 'yes', config: file('{"lookahead": 0, "prefetchMaxBytes": "64MiB", "s3QueueSize": 4}') }, { WALVAULT_PREFETCH: '0' });
    expect(ok.config).toMatchObject({ retries: 3, deadline: 2.5, s3ForcePathStyle: true, lookahead: 0, prefetch: 0, prefetchMaxBytes: 64 * 1024 * 1024, s3QueueSize: 4 });
  });

  it('trust: a JSON syntax error never echoes the file', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY';
    const cases: Array<[string, string]> = [
      [`{\n  "s3AccessKeyId": "AKIA",\n  "s3SecretAccessKey": "${secret}",\n}\n`, 'line 4, column 1'],
      [`{ "s3SecretAccessKey": "${secret}" "repo": "s3://b/p" }`, `line 1, column ${`{ "s3SecretAccessKey": "${secret}" `.length + 1}`],
      [`{ "s3SecretAccessKey": '${secret}' }`, 'line 1, column 24'],
      [`{ "s3SecretAccessKey": "${secret}`, `line 1, column ${`{ "s3SecretAccessKey": "${secret}`.length + 1}`],
    ];
    for (const [text, position] of cases) {
      const path = file(text);
      const e = configErrorOf(() => loadConfig({ spool, config: path }, {}));
      expect(e.exitCode).toBe(ExitCode.config);
      expect(e.message).toBe(`config file ${path} is not valid JSON (syntax error at ${position})`);
      expect(e.message).not.toContain(secret.slice(0, 8));
    }
  });

  it('trust: a config file others can write is refused', () => {
    const sub = mkdtempSync(join(dir, 'perm-'));
    const path = join(sub, 'walvault.json');
    writeFileSync(path, '{"retries": 3}', { mode: 0o644 });
    expect(loadConfig({ spool, config: path }, {}).config.retries).toBe(3);

    chmodSync(path, 0o666);
    let e = configErrorOf(() => loadConfig({ spool, config: path }, {}));
    expect(e.exitCode).toBe(ExitCode.config);
    expect(e.message).toBe(`config file ${path} is writable by other users (mode 0666), who could change what walvault does: chmod go-w ${path}`);
    chmodSync(path, 0o620); // group-writable is refused as well
    expect(configErrorOf(() => loadConfig({ spool, config: path }, {})).message).toMatch(/mode 0620/);
    chmodSync(path, 0o600);

    // A directory above it that others can write: they could replace the file.
    chmodSync(sub, 0o777);
    e = configErrorOf(() => loadConfig({}, { WALVAULT_CONFIG: path, WALVAULT_SPOOL: spool }));
    expect(e.message).toBe(`config file ${path}: directory ${sub} is writable by other users (mode 0777), who could change what walvault does: chmod go-w ${sub}`);
    // ...unless it has the sticky bit (like /tmp): others cannot rename what is ours.
    chmodSync(sub, 0o1777);
    expect(loadConfig({ spool, config: path }, {}).config.retries).toBe(3);
    chmodSync(sub, 0o700);

    // A symlink is judged by what it points to.
    const open = mkdtempSync(join(dir, 'open-'));
    writeFileSync(join(open, 'real.json'), '{}');
    chmodSync(open, 0o777);
    symlinkSync(join(open, 'real.json'), join(sub, 'link.json'));
    expect(configErrorOf(() => loadConfig({ spool, config: join(sub, 'link.json') }, {})).message).toMatch(new RegExp(`directory ${open} is writable by other users`));

    // A FIFO would block the read forever: refused before it is opened.
    execFileSync('mkfifo', ['-m', '0600', join(sub, 'fifo.json')]);
    expect(configErrorOf(() => loadConfig({ spool, config: join(sub, 'fifo.json') }, {})).message).toBe(`config file ${join(sub, 'fifo.json')} is not a regular file`);

    // Owned by another user (not root): refused even when not writable by others.
    if (process.geteuid!() === 0) {
      chownSync(path, 65534, 65534);
      e = configErrorOf(() => loadConfig({ spool, config: path }, {}));
      expect(e.message).toBe(`config file ${path} is owned by uid 65534, who could make walvault (uid 0) act for them; it must belong to uid 0 or root: chown 0 ${path}`);
      chownSync(path, 0, 0);
    }
  });

  it('trust: a spool others can write is refused', () => {
    const base = mkdtempSync(join(dir, 'spool-'));
    const own = join(base, 'spool');
    mkdirSync(own, { mode: 0o700 });
    expect(loadConfig({ spool: own }, {}).config.spool).toBe(own);

    chmodSync(own, 0o777);
    let e = configErrorOf(() => loadConfig({ spool: own }, {}));
    expect(e.exitCode).toBe(ExitCode.config);
    expect(e.message).toBe(`spool directory ${own} is writable by other users (mode 0777), who could change what walvault does: chmod go-w ${own}`);
    chmodSync(own, 0o1777); // the sticky bit is no excuse for the spool itself: others could add files to it
    expect(configErrorOf(() => loadConfig({ spool: own }, {})).message).toMatch(/mode 1777/);
    chmodSync(own, 0o700);

    // Not created yet: the directories it would be created in are checked, from the environment too.
    chmodSync(base, 0o775);
    e = configErrorOf(() => loadConfig({}, { WALVAULT_SPOOL: join(base, 'later', 'spool') }));
    expect(e.message).toBe(`spool directory ${join(base, 'later', 'spool')}: directory ${base} is writable by other users (mode 0775), who could change what walvault does: chmod go-w ${base}`);
    chmodSync(base, 0o755);
    expect(loadConfig({}, { WALVAULT_SPOOL: join(base, 'later', 'spool') }).config.spool).toBe(join(base, 'later', 'spool'));

    if (process.geteuid!() === 0) {
      chownSync(own, 65534, 65534);
      e = configErrorOf(() => loadConfig({ spool: own }, {}));
      expect(e.message).toMatch(new RegExp(`^spool directory ${own} is owned by uid 65534, .*: chown 0 ${own}, or use a spool of your own \\(--spool\\)$`));
    }
  });

  it('trust: endpoint user-info is masked in walvault config', () => {
    const loaded = loadConfig(
      { spool, repo: 's3://bucket/prefix' },
      { WALVAULT_S3_ENDPOINT: 'https://admin:s3cr3t-pass@minio.internal:9000', WALVAULT_S3_CA_BUNDLE: 'https://u:tok3n@ca.example/ca.pem' },
    );
    const rows = Object.fromEntries(describeConfig(loaded).map((r) => [r.key, r.value]));
    expect(rows['s3Endpoint']).toBe('https://****@minio.internal:9000');
    expect(rows['s3CaBundle']).toBe('https://****@ca.example/ca.pem');
    expect(JSON.stringify(rows)).not.toMatch(/s3cr3t|tok3n|admin/);
    // ...and never in a log line (every line goes through formatLogLine).
    const line = formatLogLine('wal-push', 'error', 'StorageUnavailable: cannot reach https://admin:s3cr3t-pass@minio.internal:9000/bucket');
    expect(line).toContain('https://****@minio.internal:9000/bucket');
    expect(line).not.toContain('s3cr3t');
  });
});

describe('URL user-info', () => {
  it('trust: a password containing @ is masked and stripped whole', async () => {
    const { maskUserInfo, stripUserInfo } = await import('../../src/common/redact.js');
    expect(maskUserInfo('endpoint https://user:p@ss@host:9000/x failed')).toBe('endpoint https://****@host:9000/x failed');
    expect(stripUserInfo('https://user:p@ss@host:9000/x')).toBe('https://host:9000/x');
    expect(stripUserInfo('https://host:9000/x')).toBe('https://host:9000/x');
  });
});
