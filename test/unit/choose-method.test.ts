import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localSystemIdentifier } from '../../src/backup/choose-method.js';

// The proof that a local directory is the server's: pg_control's first 8 bytes (the system
// identifier, little-endian) read from <dir>/global/pg_control, through a symlinked path too.
describe('localSystemIdentifier', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  async function dataDir(control: Buffer | undefined): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'wv-choose-'));
    dirs.push(d);
    await mkdir(join(d, 'global'));
    if (control) await writeFile(join(d, 'global', 'pg_control'), control);
    return d;
  }

  it('reads the system identifier as pg_control stores it (uint64 little-endian), also through a symlink', async () => {
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(7442389119876543210n, 0);
    const d = await dataDir(control);
    expect(await localSystemIdentifier(d)).toBe('7442389119876543210');
    await symlink(d, `${d}-link`);
    dirs.push(`${d}-link`);
    expect(await localSystemIdentifier(`${d}-link`)).toBe('7442389119876543210');
  });

  it('a missing directory, a missing or short pg_control: the reason, never an identifier', async () => {
    expect(await localSystemIdentifier('/nonexistent/walvault/data')).toEqual({ error: 'ENOENT' });
    expect(await localSystemIdentifier(await dataDir(undefined))).toEqual({ error: 'ENOENT' });
    expect(await localSystemIdentifier(await dataDir(Buffer.alloc(5)))).toEqual({ error: 'global/pg_control is too short' });
  });
});
