import { maskUserInfo } from './redact.js';

// One line per event on stderr: PostgreSQL copies archive_command/restore_command stderr into its log,
// so every line must stand alone and never contain a secret.
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

let threshold: LogLevel = 'info';
let command = '';

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export function setLogCommand(name: string): void {
  command = name;
}

/** The one log line format, also used by the fast paths' synchronous writer (src/fs/sync-io.ts). */
export function formatLogLine(name: string, level: LogLevel, message: string): string {
  const tag = name ? `walvault ${name}[${process.pid}]` : 'walvault';
  return `${tag} ${level.toUpperCase()}: ${maskUserInfo(message.replace(/[\r\n]+/g, ' '))}\n`;
}

function write(level: LogLevel, message: string): void {
  if (ORDER[level] > ORDER[threshold]) return;
  process.stderr.write(formatLogLine(command, level, message));
}

export const log = {
  error: (m: string) => write('error', m),
  warn: (m: string) => write('warn', m),
  info: (m: string) => write('info', m),
  debug: (m: string) => write('debug', m),
};

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function elapsed(startNs: bigint): string {
  const ms = Number(process.hrtime.bigint() - startNs) / 1e6;
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
