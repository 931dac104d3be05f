// The pure parts of the restore fast path: what the data directory says about where replay starts
// (read before any storage code loads), and the fetch acknowledgement the shell wrapper reads.
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dataDirSystemIdentifier, parseControlStart, parseSystemIdentifier, recoveryStart } from '../../src/prefetch/data-dir.js';
import { ackTargetFrom, formatAck } from '../../src/prefetch/fetch-ack.js';
import type { Config } from '../../src/common/config.js';

const work = mkdtempSync(join(tmpdir(), 'wv-prefetch-start-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The first 52 bytes of a PostgreSQL 11+ pg_control, little-endian. */
function controlHead(o: { sysid: bigint; version?: number; redo: bigint; tli: number }): Buffer {
  const b = Buffer.alloc(8192);
  b.writeBigUInt64LE(o.sysid, 0);
  b.writeUInt32LE(o.version ?? 1300, 8);
  b.writeBigUInt64LE(o.redo + 0x100n, 32); // checkPoint: after redo
  b.writeBigUInt64LE(o.redo, 40);
  b.writeUInt32LE(o.tli, 48);
  return b;
}

function dataDir(name: string, files: Record<string, Buffer | string>): string {
  const d = join(work, name);
  mkdirSync(join(d, 'global'), { recursive: true });
  for (const [f, data] of Object.entries(files)) writeFileSync(join(d, f), data);
  return d;
}

describe('where replay starts', () => {
  it('reads the system identifier and the redo pointer of pg_control', () => {
    const head = controlHead({ sysid: 7713930423496719894n, redo: 0x11000028n, tli: 1 });
    expect(parseSystemIdentifier(head, 'LE')).toBe('7713930423496719894');
    expect(parseControlStart(head, 'LE')).toEqual({ timeline: 1, lsn: '0/11000028' });
    const d = dataDir('control', { 'global/pg_control': head });
    expect(dataDirSystemIdentifier(d)).toBe('7713930423496719894');
    expect(recoveryStart(d)).toEqual({ timeline: 1, lsn: '0/11000028' });
  });

  it('reads big-endian control files the same way', () => {
    const b = Buffer.alloc(64);
    b.writeBigUInt64BE(42n, 0);
    b.writeUInt32BE(1700, 8);
    b.writeBigUInt64BE(0x2_0300_0000n, 40);
    b.writeUInt32BE(3, 48);
    expect(parseSystemIdentifier(b, 'BE')).toBe('42');
    expect(parseControlStart(b, 'BE')).toEqual({ timeline: 3, lsn: '2/3000000' });
  });

  it('refuses what is not a PostgreSQL 11+ pg_control', () => {
    expect(parseControlStart(controlHead({ sysid: 1n, version: 1002, redo: 0x11000028n, tli: 1 }), 'LE')).toBeNull(); // PostgreSQL 10 layout
    expect(parseControlStart(controlHead({ sysid: 1n, redo: 0n, tli: 1 }), 'LE')).toBeNull();
    expect(parseControlStart(controlHead({ sysid: 1n, redo: 0x11000028n, tli: 0 }), 'LE')).toBeNull();
    expect(parseControlStart(Buffer.alloc(20), 'LE')).toBeNull();
    expect(parseSystemIdentifier(Buffer.alloc(8), 'LE')).toBeNull();
    expect(dataDirSystemIdentifier(join(work, 'nowhere'))).toBeNull();
    expect(recoveryStart(dataDir('short', { 'global/pg_control': Buffer.alloc(10) }))).toBeNull();
  });

  it("prefers backup_label's start segment (a base backup being restored)", () => {
    const label = 'START WAL LOCATION: 0/5000028 (file 000000020000000000000005)\nCHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\n';
    const d = dataDir('label', { 'global/pg_control': controlHead({ sysid: 9n, redo: 0x9000028n, tli: 2 }), backup_label: label });
    expect(recoveryStart(d)).toEqual({ timeline: 2, segment: '000000020000000000000005' });
    const bad = dataDir('badlabel', { 'global/pg_control': controlHead({ sysid: 9n, redo: 0x9000028n, tli: 2 }), backup_label: 'START WAL LOCATION: garbage\n' });
    expect(recoveryStart(bad)).toBeNull();
  });
});

describe('fetch acknowledgements', () => {
  const id = { dev: '2049', ino: '131', size: '16777216', mtimeNs: '1764500000000000007', ctimeNs: '1764500000120000000' };

  it('writes magic, name, file, identity, SHA-256, log level, worker pid, then the context verbatim', () => {
    const context = 'walvault-context 1\ncwd /var/lib/postgresql/15/main\neuid 999\nenv HOME=/var/lib/postgresql';
    const text = formatAck({ name: '000000010000000000000011', file: '/spool/x/000000010000000000000011', identity: id, sha256: 'ab'.repeat(32), logLevel: 'info', pid: 4242, context });
    expect(text.split('\n')).toEqual([
      'walvault-fetch-ack 1',
      '000000010000000000000011',
      '/spool/x/000000010000000000000011',
      '2049 131 16777216 1764500000.000000007 1764500000.120000000',
      'ab'.repeat(32),
      'info',
      '4242',
      ...context.split('\n'),
      '',
    ]);
  });

  const config = (over: Partial<Config> = {}) => ({ logLevel: 'info', fastPathHash: false, ...over }) as Config;
  const ctx = 'walvault-context 1\ncwd /data\neuid 0';
  const env = (dir: string, context = ctx) => ({ WALVAULT_WRAPPER_CONTEXT: context, WALVAULT_WRAPPER_DIR: dir });

  it('acknowledges only into a private directory of this user, and only with a context', () => {
    const dir = join(work, 'fast-ok');
    expect(ackTargetFrom(config(), env(dir))).toEqual({ dir: join(dir, 'fetch'), context: ctx, logLevel: 'info' });
    expect(statSync(join(dir, 'fetch')).mode & 0o777).toBe(0o700);

    expect(ackTargetFrom(config(), { WALVAULT_WRAPPER_DIR: dir })).toBeUndefined();
    expect(ackTargetFrom(config(), { WALVAULT_WRAPPER_CONTEXT: ctx })).toBeUndefined();
    expect(ackTargetFrom(config(), env(dir, 'something else'))).toBeUndefined();
    expect(ackTargetFrom(config(), env('relative/dir'))).toBeUndefined();
    // fastPathHash: identities are not trusted, so nothing the wrapper could answer from.
    expect(ackTargetFrom(config({ fastPathHash: true }), env(dir))).toBeUndefined();
    // A secret on the command line: the variables were not set by the wrapper.
    expect(ackTargetFrom(config({ s3SecretAccessKey: 'hunter2hunter2' }), env(dir, `${ctx}\noption --s3-secret-access-key=hunter2hunter2`))).toBeUndefined();
  });

  it("never writes into another user's directory", () => {
    const foreign = join(work, 'fast-foreign');
    mkdirSync(join(foreign, 'fetch'), { recursive: true, mode: 0o700 });
    const uid = Number(readFileSync('/etc/passwd', 'utf8').match(/^postgres:[^:]*:(\d+):/m)?.[1] ?? 65534);
    chownSync(foreign, uid, uid);
    expect(ackTargetFrom(config(), env(foreign))).toBeUndefined();
  });
});
