import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { configError } from '../common/errors.js';

// Where PostgreSQL's client programs live: the pgBinDir setting, then (for a given major version,
// e.g. pg_verifybackup matching the backup) /usr/lib/postgresql/<version>/bin, then PATH, then the
// newest /usr/lib/postgresql/*/bin (Debian/Ubuntu keep them there, off PATH).
const DEBIAN_ROOT = '/usr/lib/postgresql';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function findPgProgram(name: string, pgBinDir: string | undefined, version?: number): string | undefined {
  if (pgBinDir) {
    const p = join(pgBinDir, name);
    if (!executable(p)) throw configError(`pgBinDir ${pgBinDir} has no executable ${name}`);
    return p;
  }
  if (version) {
    const p = join(DEBIAN_ROOT, String(version), 'bin', name);
    if (executable(p)) return p;
  }
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (executable(p)) return p;
  }
  let versions: number[] = [];
  try {
    versions = readdirSync(DEBIAN_ROOT)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0)
      .sort((a, b) => b - a);
  } catch {
    // not Debian-style
  }
  for (const v of versions) {
    const p = join(DEBIAN_ROOT, String(v), 'bin', name);
    if (executable(p)) return p;
  }
  return undefined;
}
