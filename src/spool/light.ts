import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Config } from '../common/config.js';

// Import-light twins of a few helpers for the per-file fast paths (wal-push of a recorded file,
// wal-fetch from the prefetch spool). The originals pull in stream code, and process.stderr costs
// a few milliseconds to set up on a pipe; these use plain synchronous fs calls.
// test/unit/spool-fast.test.ts checks them against the originals.

/** Same as TEMP_MARK in src/common/fs-atomic.ts: cleanupStaleTemps() must recognise our temp files. */
export const TEMP_MARK = '.walvault-tmp.';

/** Same naming as tempPathFor() in src/common/fs-atomic.ts. */
export function tempPathFor(target: string): string {
  return join(dirname(target), `${TEMP_MARK}${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}`);
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** True when `dir` holds a walvault temp file (then the full cleanup is worth loading). */
export function hasTempFiles(dir: string): boolean {
  try {
    return readdirSync(dir).some((n) => n.startsWith(TEMP_MARK));
  } catch {
    return false;
  }
}

export function formatLogLine(command: string, level: 'info' | 'warn', message: string): string {
  return `walvault ${command}[${process.pid}] ${level.toUpperCase()}: ${message.replace(/[\r\n]+/g, ' ')}\n`;
}

/** One log line in the format of src/common/log.ts, honouring the configured level. */
export function logLine(config: Config, command: string, level: 'info' | 'warn', message: string): void {
  if (level === 'info' && config.logLevel !== 'info' && config.logLevel !== 'debug') return;
  if (level === 'warn' && config.logLevel === 'error') return;
  try {
    writeSync(2, formatLogLine(command, level, message));
  } catch {
    // stderr closed: nothing to tell
  }
}
