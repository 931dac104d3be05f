import { spawn, type ChildProcess } from 'node:child_process';
import { backupError, type WalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { within } from './wait.js';

// The pg_basebackup child of backup-push (-D - -Ft -X none: the tar on stdout), its stderr (progress
// estimate and the last lines for error messages), how its failure is reported, and what backup-push
// reads from the pg_control the tar carries.

export interface BaseBackupOptions {
  dbname?: string;
  checkpoint: 'fast' | 'spread';
  /** pg_basebackup --max-rate, e.g. "50M" (32 kB/s to 1 GB/s). */
  maxRate?: string;
}

export interface BaseBackupProcess {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderrTail: () => string;
  /** pg_basebackup --progress: the server's estimate of the total size, in bytes. */
  estimate: () => number | undefined;
}

/** Seconds pg_basebackup may take to connect when the user set no PGCONNECT_TIMEOUT. */
export const CONNECT_TIMEOUT_S = 30;

/**
 * pg_basebackup's environment: a server that accepts the TCP connection and never answers (a hung
 * postmaster, a half-open firewall) would otherwise keep backup-push waiting forever, before
 * backupWaitTimeout applies. A stalled walsender during the data phase is bounded only by TCP
 * keepalive (README, known limits).
 */
export function baseBackupEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, PGCONNECT_TIMEOUT: env['PGCONNECT_TIMEOUT'] || String(CONNECT_TIMEOUT_S) };
}

export function startBaseBackup(bin: string, opts: BaseBackupOptions, label: string): BaseBackupProcess {
  const args = ['-D', '-', '-Ft', '-X', 'none', `--checkpoint=${opts.checkpoint}`, '--label', label, '--progress', '--no-password'];
  if (opts.dbname) args.push('--dbname', opts.dbname);
  if (opts.maxRate) args.push(`--max-rate=${opts.maxRate}`);
  log.info(`running ${bin} ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ').replace(/--dbname \S+/, '--dbname ****')}`);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: baseBackupEnv() });
  const lines: string[] = [];
  let estimate: number | undefined;
  let partial = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    const parts = (partial + d).split(/[\r\n]/);
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.trim()) continue;
      const m = /^\s*(\d+)\/(\d+) kB \(\d+%\)/.exec(line);
      if (m) {
        estimate = Number(m[2]) * 1024;
        continue;
      }
      lines.push(line);
      if (lines.length > 30) lines.shift();
      log.debug(`pg_basebackup: ${line}`);
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => {
      lines.push(`cannot run ${bin}: ${e.message}`);
      resolve({ code: 127, signal: null });
    });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return { child, exit, stderrTail: () => [...lines, partial].filter((l) => l.trim()).join('\n'), estimate: () => estimate };
}

/** How long pg_basebackup gets to exit after closing its output, and after each signal. */
export const EXIT_AFTER_EOF_MS = 30_000;
export const STOP_GRACE_MS = 5_000;

/**
 * Stops pg_basebackup by its PID: SIGTERM, then SIGKILL after a grace period; gives up (with a
 * warning naming the PID) rather than wait for a process that even SIGKILL does not end.
 */
export async function stopBaseBackup(p: BaseBackupProcess, graceMs = STOP_GRACE_MS): Promise<void> {
  const pid = p.child.pid;
  if (pid === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return;
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    try {
      process.kill(pid, sig);
    } catch {
      return; // already gone
    }
    if ((await within(p.exit, graceMs)) !== 'timeout') return;
    if (sig === 'SIGTERM') log.warn(`pg_basebackup (pid ${pid}) did not exit ${graceMs / 1000}s after SIGTERM; sending SIGKILL`);
  }
  log.warn(`pg_basebackup (pid ${pid}) did not exit ${graceMs / 1000}s after SIGKILL; leaving it`);
}

export function baseBackupFailure(p: BaseBackupProcess, r: { code: number | null; signal: NodeJS.Signals | null }): WalvaultError {
  const tail = p.stderrTail();
  const how = r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`;
  if (/can only write single tablespace to stdout/.test(tail)) {
    return backupError(
      `the cluster has more than one tablespace; backup-push --method stream (one pg_basebackup stream) does not support tablespaces: use --method files on the database host (pg_basebackup: ${tail.split('\n').find((l) => /tablespace/.test(l))?.trim()})`,
    );
  }
  return backupError(`pg_basebackup ${how}${tail ? `: ${tail.replace(/\n/g, ' | ')}` : ''}`);
}

/**
 * checkPointCopy.nextXid from pg_control (ControlFileData: system_identifier u64 @0,
 * pg_control_version u32 @8, ..., checkPoint @32, checkPointCopy @40 whose nextXid, a 64-bit
 * FullTransactionId, sits at +24). That layout holds for pg_control versions 1201 (PostgreSQL 12),
 * 1300 (13-16) and 1700 (17); for any other version nothing is recorded.
 */
export function nextXidFromControl(control: Buffer): string | undefined {
  if (control.length < 72) return undefined;
  const version = control.readUInt32LE(8);
  if (![1201, 1300, 1700].includes(version)) return undefined;
  return control.readBigUInt64LE(64).toString();
}
