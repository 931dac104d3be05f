import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
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
  // `version` comes from backup.json: only a plain major version may become part of a path.
  if (typeof version === 'number' && Number.isInteger(version) && version >= 10 && version <= 999) {
    const p = join(DEBIAN_ROOT, String(version), 'bin', name);
    if (executable(p)) return p;
  }
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    // A relative entry ("." or empty) would run whatever sits in the current directory.
    if (!isAbsolute(dir)) continue;
    const p = join(dir, name);
    if (executable(p)) return p;
  }
  let versions: number[] = [];
  try {
    versions = readdirSync(DEBIAN_ROOT)
      .filter((d) => /^[1-9]\d{0,2}$/.test(d))
      .map(Number)
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
