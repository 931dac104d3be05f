// Running the built walvault from tests, as PostgreSQL would (as the postgres user), plus temp
// directories with a cleanup registry.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { chmod, copyFile, cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { chownToPostgres, isRoot } from './pg.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DIST_ENTRY = join(REPO_ROOT, 'dist', 'walvault.mjs');

function requireDist(): void {
  if (!existsSync(DIST_ENTRY)) throw new Error(`${DIST_ENTRY} is missing: run npm run build first`);
}

async function setModes(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await setModes(p);
    else await chmod(p, 0o644);
  }
}

/**
 * Where scratch directories go: the global setup's per-run directory, which its teardown deletes
 * even when a test forgets cleanupAll() or a worker is ended without running 'exit' handlers.
 */
function scratchRoot(): string {
  try {
    return inject('tmpRoot') || '/tmp';
  } catch {
    return '/tmp'; // imported outside a vitest worker
  }
}

function providedBin(): string {
  try {
    return inject('walvaultBin') || '';
  } catch {
    return '';
  }
}

// Kept on globalThis: vitest may evaluate this module once per test file in the same process.
const g = globalThis as { __walvaultBin?: Promise<string> };

/**
 * Path of the installed command (scripts/make-wrapper.sh) that runs the built walvault with the running Node binary. The repo, dist
 * and Node may sit in directories postgres cannot read (/root, /work, a version manager), so both
 * are copied once per test process into a world-readable dir in the per-run scratch root.
 */
export function walvaultBin(): Promise<string> {
  g.__walvaultBin ??= (async () => {
    const prepared = providedBin();
    if (prepared) return prepared;
    requireDist();
    const dir = await mkdtemp(join(scratchRoot(), 'walvault-bin-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    await cp(join(REPO_ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
    await setModes(dir);
    await copyFile(process.execPath, join(dir, 'node'));
    await chmod(join(dir, 'node'), 0o755);
    const wrapper = join(dir, 'walvault');
    await writeFile(wrapper, wrapperScript(join(dir, 'node'), join(dir, 'dist', 'walvault.mjs')), { mode: 0o755 });
    await chmod(wrapper, 0o755);
    return wrapper;
  })();
  return g.__walvaultBin;
}

/** The installed command (scripts/make-wrapper.sh) for a Node binary and a bundle. */
function wrapperScript(node: string, main: string): Buffer {
  return execFileSync(join(REPO_ROOT, 'scripts', 'make-wrapper.sh'), [node, main]);
}

/** Exit code of walvaultWithoutNode() when a call falls through to Node (bash: exec of a missing file). */
export const FELL_THROUGH_TO_NODE = 127;

/**
 * The installed command with a Node binary that does not exist, in `dir`: exit 0 can only come from
 * the shell fast path (scripts/wrapper/), FELL_THROUGH_TO_NODE means the call would have started Node.
 */
export async function walvaultWithoutNode(dir: string): Promise<string> {
  const path = join(dir, 'walvault-no-node');
  await writeFile(path, wrapperScript('/nonexistent/node', join(dirname(await walvaultBin()), 'dist', 'walvault.mjs')), { mode: 0o755 });
  return path;
}

/** Every file below `dir` whose name `pred` accepts ([] when `dir` does not exist). */
export function findFiles(dir: string, pred: (name: string) => boolean): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? findFiles(join(dir, e.name), pred) : pred(e.name) ? [join(dir, e.name)] : [],
  );
}

let postgresIds: { uid: number; gid: number } | undefined;
function postgresUser(): { uid: number; gid: number } {
  postgresIds ??= {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
  return postgresIds;
}

export interface WalvaultResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunWalvaultOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Run through the wrapper as the postgres OS user (when root), like archive_command does. */
  asPostgres?: boolean;
  timeoutMs?: number;
  /**
   * Run through the world-readable wrapper (always the case with asPostgres): a backup-fetch run as
   * root then writes a restore_command postgres can run.
   */
  wrapper?: boolean;
  /** Command prefix for the node process, e.g. ['/usr/bin/time', '-f', '%M'] (not with asPostgres). */
  prefix?: string[];
}

/**
 * Runs walvault with a clean environment: PATH, HOME and opts.env only, so the developer's AWS_*
 * variables or profiles never leak into a test. As postgres it switches uid/gid in the spawn
 * itself rather than through runuser, so exit codes and signals are walvault's own (the >125
 * contract is tested on them) and a timeout kill reaches walvault directly.
 */
export async function runWalvault(args: string[], opts: RunWalvaultOptions = {}): Promise<WalvaultResult> {
  const asPostgres = opts.asPostgres ?? false;
  let cmd: string;
  let argv: string[];
  if (asPostgres || opts.wrapper) {
    cmd = await walvaultBin();
    argv = args;
  } else {
    requireDist();
    cmd = process.execPath;
    argv = [DIST_ENTRY, ...args];
    if (opts.prefix?.length) {
      argv = [...opts.prefix.slice(1), cmd, ...argv];
      cmd = opts.prefix[0]!;
    }
  }
  const home = asPostgres && isRoot ? '/var/lib/postgresql' : (process.env.HOME ?? '/tmp');
  const ids = asPostgres && isRoot ? postgresUser() : {};
  const started = performance.now();
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, argv, {
      cwd: opts.cwd ?? (asPostgres ? '/' : REPO_ROOT),
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...ids,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => (stderr += `\n[walvault.ts] ${err.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

const cleanups: (() => Promise<void> | void)[] = [];

/** Registers a cleanup step for cleanupAll() (run last-in, first-out). */
export function registerCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** A fresh directory in the per-run scratch root, removed by cleanupAll(); owned by postgres (0700) if asked. */
export async function tempDir(prefix: string, opts: { forPostgres?: boolean } = {}): Promise<string> {
  const safe = prefix.replace(/[^A-Za-z0-9_.-]+/g, '-');
  const dir = await mkdtemp(join(scratchRoot(), safe.endsWith('-') ? safe : `${safe}-`));
  if (opts.forPostgres) {
    await chmod(dir, 0o700);
    await chownToPostgres(dir);
  }
  // Retries: a detached prefetch/look-ahead worker of the test may still be finishing a file in it.
  registerCleanup(() => rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }));
  return dir;
}

/** Runs every registered cleanup, newest first; throws the first error after trying them all. */
export async function cleanupAll(): Promise<void> {
  let first: unknown;
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch (err) {
      first ??= err;
    }
  }
  if (first) throw first;
}
