// walvault.json read back from a repository is data from outside: every field is validated, and the
// object must match the SHA-256 and size its writer recorded. Anything else ends with exit 10
// naming the object, never a value that reaches a path, a program or segment arithmetic.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isWalvaultError } from '../../src/common/errors.js';
import { Deadline } from '../../src/common/retry.js';
import { readRemoteManifest } from '../../src/archive/manifest.js';
import { createFileStorage } from '../../src/storage/file/driver.js';

const root = mkdtempSync(join(tmpdir(), 'wv-manifest-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const policy = { retries: 0, minDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 5_000, deadlineMs: 5_000 };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const VALID = {
  format: 1,
  systemIdentifier: '7412345678901234567',
  pgVersion: 15,
  walMagic: 0xd110,
  walSegmentSize: 16 * 1024 * 1024,
  walBlockSize: 8192,
  createdAt: '2026-11-30T03:00:00.000Z',
  createdBy: 'walvault 1.0.0',
};

let n = 0;
/** A file:// repository holding `body` as walvault.json, with metadata (by default the true one). */
async function repoWith(body: Buffer | string, meta?: Record<string, string>) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const dir = join(root, `r${n++}`);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir);
  const storage = createFileStorage(dir);
  await storage.put('walvault.json', buf, meta ?? { sha256: sha(buf), size: String(buf.length), codec: 'none' });
  return storage;
}

async function read(body: Buffer | string, meta?: Record<string, string>) {
  const storage = await repoWith(body, meta);
  const deadline = new Deadline(5_000);
  try {
    return await readRemoteManifest(storage, policy, deadline);
  } finally {
    deadline.dispose();
  }
}

async function expectRejected(body: Buffer | string, meta?: Record<string, string>, code = 'CorruptObject') {
  const err = await read(body, meta).then(
    (m) => new Error(`accepted: ${JSON.stringify(m)}`),
    (e: unknown) => e,
  );
  expect(isWalvaultError(err), String(err)).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  expect((err as { exitCode: number }).exitCode).toBe(10);
  expect((err as Error).message).toContain('walvault.json');
}

const HOSTILE: Record<string, unknown[]> = {
  format: [undefined, 2, '1', 0, null, true],
  systemIdentifier: [undefined, 7412345678901234567, '', '-1', '1e5', ' 1', '../../etc/passwd', '18446744073709551616', '0x1f', null, ['1']],
  pgVersion: ['15', 15.5, 8, 100, -1, 150000, '../../../tmp/evil', null, true],
  walMagic: [undefined, '0xd110', 0x1234, -1, 0xd110 + 0.5, 0x1d110, null],
  walSegmentSize: [undefined, 3 * 1024 * 1024, 512 * 1024, 2 * 1024 * 1024 * 1024, '16777216', 0, -16777216, 16777216.5, null],
  walBlockSize: [undefined, 1000, 0, 512, 131072, '8192', -8192, null],
  createdAt: [undefined, 123, 'x'.repeat(500), 'a\nwalvault wal-push ERROR: forged', null],
  createdBy: [undefined, {}, 'x'.repeat(500), 'walvault\u001b[2J', 'walvault\u2028forged', 'walvault\u0085forged', null],
};

describe('walvault.json from the repository', () => {
  it('a valid manifest is read back', async () => {
    expect(await read(JSON.stringify(VALID))).toEqual(VALID);
    const { pgVersion: _omit, ...noVersion } = VALID; // an unknown (newer) WAL magic has no version
    expect(await read(JSON.stringify(noVersion))).toEqual(noVersion);
  });

  it('trust: every field of walvault.json is validated', async () => {
    for (const [field, values] of Object.entries(HOSTILE)) {
      for (const value of values) {
        const m: Record<string, unknown> = { ...VALID, [field]: value };
        if (value === undefined) delete m[field];
        await expectRejected(JSON.stringify(m)).catch((e: Error) => {
          throw new Error(`${field} = ${JSON.stringify(value)}: ${e.message}`);
        });
      }
    }
    for (const body of ['', '{', 'null', '[]', '42', '"walvault"', '\u0000\u0001']) await expectRejected(body);
  });

  it('the object must match the SHA-256 and size its writer recorded', async () => {
    const body = Buffer.from(JSON.stringify(VALID));
    const tampered = Buffer.from(JSON.stringify({ ...VALID, systemIdentifier: '1' }));
    // content changed after it was written: same metadata, other bytes
    await expectRejected(tampered, { sha256: sha(body), size: String(body.length), codec: 'none' }, 'IntegrityError');
    await expectRejected(body, { sha256: sha(body), size: String(body.length + 1), codec: 'none' }, 'IntegrityError');
    await expectRejected(body, {}); // no walvault metadata at all
    await expectRejected(body, { sha256: sha(body), size: String(body.length), codec: 'zstd' });
    const huge = Buffer.alloc(1024 * 1024, 0x20);
    await expectRejected(huge);
  });
});
