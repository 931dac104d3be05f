import { chmodSync, lstatSync, mkdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { Config } from '../common/config.js';
import { trustedSpool } from '../common/file-trust.js';

// Where the background work of wal-push (look-ahead) and wal-fetch (prefetch) acknowledges files for
// the installed `walvault` bash script (README "The shell fast path"): the script computes the context
// of the call and hands it, with the directory to write into, to the Node it execs
// (WALVAULT_WRAPPER_CONTEXT, WALVAULT_WRAPPER_DIR). Node does not interpret the context: it copies it
// into each acknowledgement, and the script answers only when the context it computes later is the
// same, byte for byte. Shared by src/push-ahead/wrapper-acks.ts and src/prefetch/fetch-ack.ts.

export interface WrapperAcks {
  /** `<boot spool>/fast/<data directory key>`: acknowledgements go to its `push/` and `fetch/`. */
  dir: string;
  context: string;
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
 * `<dir>/<sub>`, created 0700 with its parents up to the boot spool; throws unless the chain above is
 * trusted (src/common/file-trust.ts) and the directories walvault owns here are private. The script
 * checks the same before it answers; checking here keeps acknowledgements out of a shared place.
 */
export function privateAckDir(dir: string, sub: string): string {
  const path = join(trustedSpool(dir), sub);
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const uid = process.geteuid?.();
  for (const d of [join(dir, '..'), dir, path]) {
    const st = lstatSync(d);
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) throw new Error(`${d} is not a directory of uid ${uid}`);
    if ((st.mode & 0o077) !== 0) chmodSync(d, st.mode & 0o700);
  }
  return path;
}

/**
 * Writes the acknowledgement `<dir>/<name>` whole or not at all: a temp file `.<name>.<pid>.tmp`
 * beside it, renamed over it. No fsync: an ack lost in a crash only costs one Node start. Throws.
 */
export function writeAckFile(dir: string, name: string, text: string): void {
  const temp = join(dir, `.${name}.${process.pid}.tmp`);
  try {
    writeFileSync(temp, text, { mode: 0o600 });
    renameSync(temp, join(dir, name));
  } catch (e) {
    try {
      unlinkSync(temp);
    } catch {
      // not there
    }
    throw e;
  }
}
