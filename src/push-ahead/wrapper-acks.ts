import { lstatSync } from 'node:fs';
import { chmod, mkdir, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { Config } from '../common/config.js';
import { describe } from '../common/errors.js';
import { trustedSpool } from '../common/file-trust.js';
import { log } from '../common/log.js';
import { pidAlive } from '../common/pid.js';
import { identityLine } from '../fs/file-identity.js';

// The acknowledgements the installed `walvault` bash script answers PostgreSQL from without starting
// Node (scripts/wrapper/push.bash, README "The shell fast path"). The script computes the context of
// the call (working directory, user, options, config file identity, environment) and hands it, with
// the directory to write into, to the Node it execs (WALVAULT_WRAPPER_CONTEXT, WALVAULT_WRAPPER_DIR).
// Node does not interpret the context: it copies it into each acknowledgement, and the script
// answers only when the context it computes later is the same, byte for byte. One recipe, in one
// place. Node's part is to write an acknowledgement only for bytes it stored, only for a file
// identity that stood still across the read (src/fs/file-identity.ts), and only into a directory
// that is this user's alone.

export interface WrapperAcks {
  /** `<boot spool>/fast/<data directory key>`: acknowledgements go to its `push/` directory. */
  dir: string;
  context: string;
}

/** What a stored file contributes to its acknowledgement. */
export interface AckedFile {
  name: string;
  sha256: string;
  identity?: import('../fs/file-identity.js').FileIdentity;
}

const CONTEXT_HEAD = 'walvault-context 1\n';
const MAX_CONTEXT = 64 * 1024;

/**
 * The wrapper's context from this process's environment, when there is a usable one: well formed,
 * an absolute directory, and no secret of the configuration among its options.
 */
export function wrapperAcksOf(config: Config, env: NodeJS.ProcessEnv = process.env): WrapperAcks | undefined {
  const context = env['WALVAULT_WRAPPER_CONTEXT'];
  const dir = env['WALVAULT_WRAPPER_DIR'];
  if (!context || !dir || !context.startsWith(CONTEXT_HEAD) || context.length > MAX_CONTEXT || context.includes('\0')) return undefined;
  if (!isAbsolute(dir) || dir.includes('\n')) return undefined;
  // fastPathHash: identities are not to be trusted here; the shell path has nothing else.
  if (config.fastPathHash) return undefined;
  // Secrets may only come from a file or the environment; the script keeps them out of the context
  // (and refuses such options), so an option carrying one means the variables were not set by it.
  const options = context.split('\n').filter((l) => l.startsWith('option '));
  for (const secret of [config.s3AccessKeyId, config.s3SecretAccessKey, config.s3SessionToken]) {
    if (secret && options.some((o) => o.includes(secret))) return undefined;
  }
  return { dir, context };
}

/**
 * Writes `<dir>/push/<name>` for a file just stored (temp + rename; no fsync: a lost ack costs one
 * Node start). Skipped, never failing the upload, when the file's identity was not stable, the
 * directory is not private, or a field would break the line format.
 */
export async function writePushAck(
  acks: WrapperAcks,
  file: AckedFile,
  info: { repo: string; object: string | undefined; logLevel: string },
): Promise<void> {
  if (!file.identity) return;
  const fields = [info.repo, info.object ?? '-', info.logLevel];
  if (fields.some((f) => f === '' || /[\n\r]/.test(f))) return;
  try {
    const dir = await privateDir(acks.dir, 'push');
    const text = ['walvault-ack 1', file.name, identityLine(file.identity), file.sha256, ...fields, acks.context].join('\n') + '\n';
    const temp = join(dir, `.${file.name}.${process.pid}.tmp`);
    await writeFile(temp, text, { mode: 0o600 });
    await rename(temp, join(dir, file.name));
  } catch (e) {
    log.debug(`no shell fast path acknowledgement for ${file.name}: ${describe(e)}`);
  }
}

/** Removes acknowledgements of files PostgreSQL no longer lists as ready, keeping `keep`. Best effort. */
export async function pruneWrapperAcks(acks: WrapperAcks, stillReady: Set<string>, keep: Set<string> = new Set()): Promise<void> {
  const dir = join(acks.dir, 'push');
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (entry.startsWith('.')) {
      // A writer killed between write and rename leaves its temp file; a live writer's stays.
      const writer = Number(/\.(\d+)\.tmp$/.exec(entry)?.[1]);
      if (!(writer > 0 && pidAlive(writer))) await unlink(join(dir, entry)).catch(() => undefined);
    } else if (!stillReady.has(entry) && !keep.has(entry)) {
      await unlink(join(dir, entry)).catch(() => undefined);
    }
  }
}

/**
 * `<dir>/<sub>`, created 0700 with its parents up to the boot spool; throws unless the chain above is
 * trusted (src/common/file-trust.ts) and the directories walvault owns here are private. The script
 * checks the same before it answers; checking here keeps acknowledgements out of a shared place.
 */
async function privateDir(dir: string, sub: string): Promise<string> {
  const path = join(trustedSpool(dir), sub);
  await mkdir(path, { recursive: true, mode: 0o700 });
  const uid = process.geteuid?.();
  for (const d of [join(dir, '..'), dir, path]) {
    const st = lstatSync(d);
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) throw new Error(`${d} is not a directory of uid ${uid}`);
    if ((st.mode & 0o077) !== 0) await chmod(d, st.mode & 0o700);
  }
  return path;
}
