import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { backupError, describe as describeError, isErrorName, isWalvaultError, WalvaultError } from '../common/errors.js';
import { createExtractor, removeFiles } from './extract.js';
import { applyWrites, fileSha256, type PgdataWrite } from './pgdata-files.js';
import { finishPiecedFiles, type PiecedCheck } from './pieced-files.js';
import { checkTargetDir, removeContents, takeTargetDir } from './restore-target.js';
import type { Owner } from '../common/file-trust.js';

// A restore run as root for another user (--owner postgres) writes the data directory from a child
// process running with that user's uid and gid: Node has no openat(), so checking each path
// component from root could always be raced by a process swapping a directory for a symlink; a
// process that is the owner can at worst be sent where the owner may write anyway. The same goes
// for emptying the directory after a failure (a recursive delete as root through a swapped-in link
// would delete outside it). The parent keeps what needs root: reading the repository, checking the
// SHA-256, and the directory itself only where root alone controls its parent (restore-target.ts).
//
//   walvault __restore-worker extract <pgdata> [files]  stdin: the tar stream (files: format 2, keepModes)
//   walvault __restore-worker unlink <pgdata>         stdin: JSON array of paths to remove (extract.ts removeFiles)
//   walvault __restore-worker check <pgdata>          {created}: <pgdata> is new (else empty)
//   walvault __restore-worker take <pgdata> new|existing  creates or takes <pgdata> (restore-target.ts)
//   walvault __restore-worker wipe <pgdata> [remove]  removes everything inside <pgdata> (and it)
//   walvault __restore-worker write <pgdata>          stdin: JSON PgdataWrite[] (pgdata-files.ts)
//   walvault __restore-worker sha256 <pgdata> <name>  SHA-256 of <pgdata>/<name>, or null
//   walvault __restore-worker finish <pgdata>         stdin: JSON PiecedCheck[] (pieced-files.ts)
// Each prints one JSON line on stdout: its result, or {"error": {code, exitCode, message}}.

export const WORKER_COMMAND = '__restore-worker';

export interface WorkerResult {
  entries: number;
  files: number;
  dirs: number;
}

type Op = 'extract' | 'wipe' | 'write' | 'sha256' | 'check' | 'take' | 'unlink' | 'finish';
const OPS: readonly string[] = ['extract', 'wipe', 'write', 'sha256', 'check', 'take', 'unlink', 'finish'];
/** The operations that read a request on stdin. */
const STDIN_OPS: readonly string[] = ['extract', 'write', 'unlink', 'finish'];

/** True when writing for `owner` needs a process of its own (we are someone else, i.e. root). */
export function needsWorker(owner: Owner | undefined): owner is Owner {
  return owner !== undefined && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.());
}

/** The child side (entered from bin.ts before anything else loads). */
export async function workerMain(args: string[]): Promise<number> {
  const [op, root, name] = args;
  let out: Record<string, unknown>;
  try {
    if (!root || !op || !OPS.includes(op)) throw backupError(`usage: walvault ${WORKER_COMMAND} ${OPS.join("|")} <pgdata> [name]`);
    out = await runOp(op as Op, root, name);
  } catch (e) {
    const w = isWalvaultError(e) ? e : backupError(`${op ?? 'restore worker'} ${root ?? ''}: ${describeError(e)}`);
    out = { error: { code: w.code, exitCode: w.exitCode, message: w.message } };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  return 'error' in out ? (out['error'] as { exitCode: number }).exitCode : 0;
}

async function runOp(op: Op, root: string, name: string | undefined): Promise<Record<string, unknown>> {
  switch (op) {
    case 'extract': {
      const ex = createExtractor(root, { keepModes: name === 'files' });
      await pipeline(process.stdin, ex);
      return { entries: ex.entries(), ...ex.synced() };
    }
    case 'wipe':
      await removeContents(root, name === 'remove');
      return {};
    case 'check':
      return { created: await checkTargetDir(root) };
    case 'take':
      await takeTargetDir(root, name === 'new');
      return {};
    case 'write':
      await applyWrites(root, (await readJsonStdin()) as PgdataWrite[]);
      return {};
    case 'unlink': {
      const paths = await readJsonStdin();
      if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string')) throw backupError('unlink: stdin must be a JSON array of paths');
      await removeFiles(root, paths as string[]);
      return {};
    }
    case 'sha256':
      return { sha256: await fileSha256(root, name ?? '') };
    case 'finish': {
      const files = await readJsonStdin();
      if (!Array.isArray(files)) throw backupError('finish: stdin must be a JSON array');
      await finishPiecedFiles(root, files as PiecedCheck[]);
      return {};
    }
  }
}

async function readJsonStdin(): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

export interface RunningWorker {
  /** What the operation reads (extract, write). */
  stdin: Writable | null;
  done: Promise<Record<string, unknown>>;
  kill(): void;
}

/**
 * The environment of what runs as the owner (the worker, pg_verifybackup): the owner can read
 * /proc/<pid>/environ of its own processes, so root's credentials (AWS_*, WALVAULT_*, PG*) never go
 * there, nor NODE_OPTIONS (code to load). Locale and time zone only, HOME the root directory.
 */
export function ownerEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = { PATH: env['PATH'] || '/usr/bin:/bin', HOME: '/', NODE_DISABLE_COMPILE_CACHE: '1' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && (k === 'LANG' || k === 'TZ' || k.startsWith('LC_'))) out[k] = v;
  return out;
}

/** Starts `walvault __restore-worker <op> <root> [name]` as `owner`. `script` is this walvault's bundle. */
export function startWorker(op: Op, root: string, owner: Owner, name?: string, script = process.argv[1] ?? ''): RunningWorker {
  const child = spawn(process.execPath, [script, WORKER_COMMAND, op, root, ...(name ? [name] : [])], {
    uid: owner.uid,
    gid: owner.gid,
    // root's working and cache directories are usually closed to the owner.
    cwd: '/',
    env: ownerEnv(),
    stdio: [STDIN_OPS.includes(op) ? 'pipe' : 'ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => {
    if (stdout.length < 64 * 1024) stdout += c;
  });
  const done = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once('error', (e) => reject(backupError(`cannot start the restore worker as uid ${owner.uid}: ${describeError(e)}`)));
    child.once('close', (code, sig) => {
      let parsed: Record<string, unknown> | undefined;
      try {
        parsed = JSON.parse(stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>;
      } catch {
        parsed = undefined;
      }
      const err = parsed?.['error'] as { code?: unknown; exitCode?: unknown; message?: unknown } | undefined;
      if (err && typeof err.message === 'string') {
        // The worker is this same binary, so its error name is in ERRORS (and its exit code with it).
        return reject(isErrorName(err.code) ? new WalvaultError(err.code, err.message, { retryable: false }) : backupError(err.message));
      }
      if (code === 0 && parsed) return resolve(parsed);
      reject(
        backupError(
          `the restore worker running as uid ${owner.uid} gid ${owner.gid} ${sig ? `was killed by ${sig}` : `exited with code ${code}`} without a result: ` +
            `that user must be able to read ${script} and reach ${root} (every parent directory searchable)`,
        ),
      );
    });
  });
  done.catch(() => undefined);
  // A worker that stops reading must fail the operation through `done`, not an unhandled EPIPE.
  child.stdin?.on('error', () => undefined);
  return { stdin: child.stdin, done, kill: () => child.kill('SIGKILL') };
}

/** Writes files directly under `root` as `owner` (see pgdata-files.ts). */
export async function writeAsOwner(root: string, owner: Owner | undefined, writes: PgdataWrite[]): Promise<void> {
  if (!needsWorker(owner)) return applyWrites(root, writes);
  const w = startWorker('write', root, owner);
  w.stdin!.end(JSON.stringify(writes));
  await w.done;
}

/** SHA-256 of `root`/`name` read as `owner`, or null when there is no such file. */
export async function sha256AsOwner(root: string, owner: Owner | undefined, name: string): Promise<string | null> {
  if (!needsWorker(owner)) return fileSha256(root, name);
  const r = await startWorker('sha256', root, owner, name).done;
  return typeof r['sha256'] === 'string' ? r['sha256'] : null;
}

/** Checks the files restored in pieces and gives them their mtime (pieced-files.ts), as `owner` when that is another user. */
export async function finishAsOwner(root: string, owner: Owner | undefined, files: PiecedCheck[]): Promise<void> {
  if (files.length === 0) return;
  if (!needsWorker(owner)) return finishPiecedFiles(root, files);
  const w = startWorker('finish', root, owner);
  w.stdin!.end(JSON.stringify(files));
  await w.done;
}
