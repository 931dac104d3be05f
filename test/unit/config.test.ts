import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig, parseBytes } from '../../src/common/config.js';
import { ExitCode } from '../../src/common/errors.js';

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
