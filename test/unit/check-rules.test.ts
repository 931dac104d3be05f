// walvault check's pure rules: the line format, the exit decision, what archive_mode and
// archive_command settings pass, which config file an archive_command names, clock skew bounds.
import { describe, expect, it } from 'vitest';
import { checkOutcome, formatJson, formatProbe, type Probe } from '../../src/operate/check-report.js';
import { configNamedIn, judgeArchiveSettings } from '../../src/operate/check-pg.js';
import { clockFinding, endpointOf, isLoopback } from '../../src/storage/s3/diagnose.js';

describe('check report', () => {
  it('formats ok, warn, FAIL and skip lines, the fix only for fail and warn, never a control character', () => {
    expect(formatProbe({ name: 'bucket', status: 'ok', detail: 'exists', fix: 'unused' })).toBe('ok   bucket: exists');
    expect(formatProbe({ name: 'clock', status: 'warn', detail: '40 s ahead', fix: 'use NTP' })).toBe('warn clock: 40 s ahead — use NTP');
    expect(formatProbe({ name: 'bucket', status: 'fail', detail: 'NoSuchBucket', fix: 'create it' })).toBe('FAIL bucket: NoSuchBucket — create it');
    expect(formatProbe({ name: 'fsync', status: 'skip', detail: 'not checked' })).toBe('skip fsync: not checked');
    expect(formatProbe({ name: 'x', status: 'fail', detail: 'a\nFAIL forged: line\r', fix: 'b\u001b[31m' })).toBe('FAIL x: a FAIL forged: line  — b [31m');
  });

  it('exit: nothing failed is success; a failed configuration is ConfigError (4); any other failure CheckFailed (15)', () => {
    const ok: Probe = { name: 'a', status: 'ok', detail: '' };
    const warn: Probe = { name: 'b', status: 'warn', detail: '' };
    expect(checkOutcome([ok, warn, { name: 's', status: 'skip', detail: '' }])).toBeUndefined();
    const e = checkOutcome([ok, { name: 'bucket', status: 'fail', detail: '' }, { name: 'missing-key', status: 'fail', detail: '' }]);
    expect(e?.code).toBe('CheckFailed');
    expect(e?.exitCode).toBe(15);
    expect(e?.message).toBe('2 of 3 checks failed: bucket, missing-key');
    expect(checkOutcome([{ name: 'configuration', status: 'fail', detail: '' }])?.exitCode).toBe(4);
  });

  it('JSON: every probe with name, status, detail and fix (null when none), ok false on a failure', () => {
    const doc = JSON.parse(formatJson('s3://b/p', [{ name: 'a', status: 'ok', detail: 'd' }, { name: 'b', status: 'fail', detail: 'e', fix: 'f' }], new Date('2026-11-30T10:00:00Z')));
    expect(doc).toEqual({
      repo: 's3://b/p',
      checkedAt: '2026-11-30T10:00:00.000Z',
      ok: false,
      probes: [
        { name: 'a', status: 'ok', detail: 'd', fix: null },
        { name: 'b', status: 'fail', detail: 'e', fix: 'f' },
      ],
    });
  });
});

describe('check --pg archive settings', () => {
  const judge = (mode: string, command: string, configFile?: string, library = '', inRecovery = false) =>
    judgeArchiveSettings({ mode, command, library, inRecovery }, configFile).map((p) => `${p.status} ${p.name}`);

  it('archive_mode off fails; on and always pass; archive_command is unreadable while archiving is off', () => {
    expect(judge('off', '(disabled)')).toEqual(['fail archive_mode', 'skip archive_command']);
    expect(judge('on', 'walvault wal-push %p %f')).toEqual(['ok archive_mode', 'ok archive_command']);
    expect(judge('always', '/usr/bin/walvault wal-push %p %f')).toEqual(['ok archive_mode', 'ok archive_command']);
  });

  it('archive_command must run walvault wal-push with %p; archive_library set instead fails', () => {
    expect(judge('on', '')).toEqual(['ok archive_mode', 'fail archive_command']);
    expect(judge('on', 'cp %p /mnt/backup/%f')).toEqual(['ok archive_mode', 'fail archive_command']);
    expect(judge('on', 'walvault wal-fetch %f %p')).toEqual(['ok archive_mode', 'fail archive_command']);
    expect(judge('on', 'walvault wal-push')).toEqual(['ok archive_mode', 'fail archive_command']);
    expect(judge('on', '', undefined, 'basic_archive')).toEqual(['ok archive_mode', 'fail archive_command']);
  });

  it('another config file than the checked one is a warning, the same one (any spelling) is fine', () => {
    expect(judge('on', 'walvault --config /etc/walvault.json wal-push %p %f', '/etc/walvault.json')).toEqual(['ok archive_mode', 'ok archive_command']);
    expect(judge('on', 'walvault --config /etc/../etc/walvault.json wal-push %p %f', '/etc/walvault.json')).toEqual(['ok archive_mode', 'ok archive_command']);
    expect(judge('on', 'walvault --config /etc/other.json wal-push %p %f', '/etc/walvault.json')).toEqual(['ok archive_mode', 'warn archive_command']);
    expect(judge('on', 'walvault --config /etc/walvault.json wal-push %p %f', undefined)).toEqual(['ok archive_mode', 'warn archive_command']);
    expect(judge('on', 'walvault wal-push %p %f', '/etc/walvault.json')).toEqual(['ok archive_mode', 'warn archive_command']);
  });

  it('finds the config file an archive_command names', () => {
    expect(configNamedIn('walvault --config /etc/w.json wal-push %p %f')).toBe('/etc/w.json');
    expect(configNamedIn('walvault --config=/etc/w.json wal-push %p %f')).toBe('/etc/w.json');
    expect(configNamedIn("WALVAULT_CONFIG='/etc/my w.json' walvault wal-push %p %f")).toBe('/etc/my w.json');
    expect(configNamedIn('env WALVAULT_CONFIG=/etc/w.json walvault wal-push %p %f')).toBe('/etc/w.json');
    expect(configNamedIn('walvault wal-push %p %f')).toBeUndefined();
  });
});

describe('check clock and endpoint', () => {
  const at = (skewS: number) => clockFinding({ server: new Date('2026-11-30T10:00:00Z'), local: new Date(Date.parse('2026-11-30T10:00:00Z') + skewS * 1000) });

  it('skew: under 30 s ok, over 30 s warn, over 5 minutes FAIL (SigV4 refuses beyond 15), either direction', () => {
    expect(at(0.5).status).toBe('ok');
    expect(at(-20).status).toBe('ok');
    expect(at(31)).toMatchObject({ status: 'warn', detail: expect.stringMatching(/^local clock 31 s ahead of the store's/) });
    expect(at(-31)).toMatchObject({ status: 'warn', detail: expect.stringMatching(/31 s behind/) });
    expect(at(301)).toMatchObject({ status: 'fail', fix: expect.stringMatching(/NTP/) });
    expect(at(-3600).status).toBe('fail');
    expect(clockFinding(undefined).status).toBe('warn');
  });

  it('plain http is only accepted silently on loopback; AWS endpoints are derived from the region', () => {
    expect(['127.0.0.1', '127.1.2.3', 'localhost', '[::1]'].map(isLoopback)).toEqual([true, true, true, true]);
    expect(['10.0.0.1', 's3.example.com', '128.0.0.1'].map(isLoopback)).toEqual([false, false, false]);
    expect(endpointOf({ region: 'eu-west-1' }).href).toBe('https://s3.eu-west-1.amazonaws.com/');
    expect(endpointOf({ endpoint: 'http://127.0.0.1:7480' }).host).toBe('127.0.0.1:7480');
  });
});

describe('check --pg shows archive_command without its secrets', () => {
  it('check: archive_command is shown with secrets masked', () => {
    const command = "AWS_SECRET_ACCESS_KEY=s3cr3t PGPASSWORD='pw two' TOKEN=ab\"cd ef\"'gh ij' walvault --s3-secret-access-key=k3y --s3-endpoint https://u:p4ss@host wal-push %p %f";
    const probes = judgeArchiveSettings({ mode: 'on', command, library: '', inRecovery: false }, undefined);
    const text = JSON.stringify(probes);
    for (const secret of ['s3cr3t', 'pw two', 'cd ef', 'gh ij', 'k3y', 'p4ss']) expect(text).not.toContain(secret);
    expect(text).toContain('AWS_SECRET_ACCESS_KEY=****');
    expect(text).toContain('wal-push %p %f');
  });
});
