import { closeSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { open, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { log } from '../common/log.js';
import { pidAlive } from '../common/pid.js';
import { VERSION } from '../common/version.js';
import { shortHash } from '../fs/short-hash.js';

// The background workers of the speed paths (prefetch for wal-fetch, look-ahead for wal-push) are
// detached walvault processes, one per spool directory. This is how they are started, found and
// kept unique: a lock file with the worker's pid (touched while it runs), and the fingerprint of
// the configuration it runs with, so that a command only talks to a worker that uses its settings.
// Import-light: wal-push and wal-fetch use it before loading anything heavy.

/**
 * The detached workers, each a hidden walvault command whose job (a JSON object with at least the
 * worker's directory and configuration) travels in an environment variable, not in argv.
 */
export const WORKERS = {
  prefetch: { command: 'wal-prefetch', jobEnv: 'WALVAULT_PREFETCH_JOB' },
  lookahead: { command: 'wal-lookahead', jobEnv: 'WALVAULT_LOOKAHEAD_JOB' },
} as const;
export type WorkerKind = keyof typeof WORKERS;

export interface WorkerJob {
  dir: string;
  config: Config;
}

/** The worker a hidden command runs, or undefined for any other command. */
export function workerOfCommand(command: string): WorkerKind | undefined {
  return (Object.keys(WORKERS) as WorkerKind[]).find((k) => WORKERS[k].command === command);
}

export const LOCK_FILE = 'worker.lock';
export const CONFIG_FILE = 'worker.config';
/** A lock not touched for this long belongs to a dead (or frozen) worker. */
export const LOCK_STALE_MS = 10_000;

/** A worker of another walvault version (before an upgrade) or configuration is never asked. */
export function configFingerprint(config: Config): string {
  return shortHash(`${VERSION}\n${JSON.stringify(config)}`, 16);
}

export function lockOwner(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, LOCK_FILE), 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True while a worker holds the lock (alive pid, recently touched), with this configuration if given. */
export function workerRunning(dir: string, fingerprint?: string): boolean {
  try {
    if (fingerprint !== undefined && readFileSync(join(dir, CONFIG_FILE), 'utf8') !== fingerprint) return false;
    if (Date.now() - statSync(join(dir, LOCK_FILE)).mtimeMs > LOCK_STALE_MS) return false;
    const pid = lockOwner(dir);
    return pid ? pidAlive(pid) : false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Starts the `kind` worker detached for `job.dir` unless a worker runs there. The lock is taken on
 * the worker's behalf at once, so that the next command already sees it running. Never throws: the
 * workers are only a speed-up.
 */
export async function startWorker<J extends WorkerJob>(kind: WorkerKind, job: J): Promise<void> {
  const { dir } = job;
  const { command, jobEnv } = WORKERS[kind];
  try {
    if (workerRunning(dir)) return;
    const entry = process.argv[1];
    if (!entry) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const { spawn } = await import('node:child_process'); // only here: it is not free to load
    // The worker's log goes to a file in its directory, not to PostgreSQL's stderr.
    const logFd = openSync(join(dir, 'worker.log'), 'w', 0o600);
    let pid: number | undefined;
    try {
      const child = spawn(process.execPath, [...process.execArgv, entry, command], {
        detached: true,
        stdio: ['ignore', 'ignore', logFd],
        env: { ...process.env, [jobEnv]: JSON.stringify(job) },
      });
      child.on('error', () => undefined);
      child.unref();
      pid = child.pid;
    } finally {
      closeSync(logFd);
    }
    if (!pid) return;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(join(dir, LOCK_FILE), 'wx', 0o600);
        writeSync(fd, String(pid));
        closeSync(fd);
        writeFileSync(join(dir, CONFIG_FILE), configFingerprint(job.config), { mode: 0o600 });
        return;
      } catch {
        if (workerRunning(dir)) return; // another command's worker won; ours exits at once
        unlinkSync(join(dir, LOCK_FILE)); // stale
      }
    }
  } catch (e) {
    log.debug(`cannot start ${command}: ${String(e)}`);
  }
}

/** Called first by a worker: true if the lock is (now) its own. */
export async function takeLock(dir: string, config: Config): Promise<boolean> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (lockOwner(dir) === process.pid) break; // taken for us by the command that started us
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return false;
      if (workerRunning(dir)) return false;
      await unlink(path).catch(() => undefined); // stale: its worker is gone
    }
  }
  if (lockOwner(dir) !== process.pid) return false;
  await writeFile(join(dir, CONFIG_FILE), configFingerprint(config), { mode: 0o600 });
  return true;
}

export async function touchLock(dir: string): Promise<void> {
  await utimes(join(dir, LOCK_FILE), new Date(), new Date()).catch(() => undefined);
}

export async function releaseLock(dir: string): Promise<void> {
  if (lockOwner(dir) === process.pid) await unlink(join(dir, LOCK_FILE)).catch(() => undefined);
}
