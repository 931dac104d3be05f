import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { escapeControl } from '../common/control-chars.js';
import { configError, isWalvaultError } from '../common/errors.js';
import type { Key } from './frames.js';

// The keyring: `<key-id> <64 hex digits>` per line, the first key encrypts, every key decrypts (so
// rotation is a new first line). It comes from a file only its owner can read, or from a command's
// stdout (Vault, a KMS). No message ever carries a line of it: a line holds a key, and a message ends
// up in PostgreSQL's log.

export interface Keyring {
  /** Encrypts new objects: the first key. */
  current: Key;
  /** Every key, in keyring order. */
  byId: Map<string, Key>;
  /** "file /path" or "command": for messages and `walvault config`. */
  source: string;
}

export const KEYRING_MAX_BYTES = 64 * 1024;
export const KEY_COMMAND_TIMEOUT_MS = 30_000;
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const HEX = /^[0-9a-fA-F]{64}$/;
const FORMAT = 'expected "<key-id> <64 hex digits>"';

/** Parses keyring text; `where` names it in messages ("encryption key file /etc/x"). */
export function parseKeyring(text: string, where: string): Keyring {
  const byId = new Map<string, Key>();
  const lineOf = new Map<string, number>();
  // A byte order mark (some editors write one) is not part of the first key id.
  text.replace(/^\uFEFF/, '').split('\n').forEach((raw, index) => {
    const n = index + 1;
    const line = raw.replace(/^[ \t]+|[ \t\r]+$/g, '');
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/[ \t]+/);
    if (fields.length !== 2) throw configError(`${where} line ${n}: ${FORMAT}, found ${fields.length} fields`);
    const [id, hex] = fields as [string, string];
    if (!ID.test(id)) throw configError(`${where} line ${n}: not a valid key id (1 to 64 letters, digits, '.', '_' or '-', the first a letter or digit)`);
    if (!HEX.test(hex)) {
      const what = /^[0-9a-fA-F]*$/.test(hex) ? `${hex.length} hex digits` : `${hex.length} characters, not all hex digits`;
      throw configError(`${where} line ${n}: the key must be 64 hex digits (32 bytes), found ${what}`);
    }
    const first = lineOf.get(id);
    if (first !== undefined) throw configError(`${where} line ${n}: the same key id as line ${first}; key ids must be unique`);
    lineOf.set(id, n);
    byId.set(id, secretKey(id, Buffer.from(hex, 'hex')));
  });
  const current = byId.values().next().value;
  if (!current) throw configError(`${where}: no key in it (${FORMAT} per line)`);
  return { current, byId, source: where };
}

/** A Key whose bytes stay out of JSON.stringify, util.inspect and console.log of it or its keyring. */
function secretKey(id: string, key: Buffer): Key {
  const k = { id } as Key;
  Object.defineProperty(k, 'key', { value: key, enumerable: false });
  return k;
}

export interface KeyringSource {
  file?: string | undefined;
  command?: string | undefined;
  /** For tests; KEY_COMMAND_TIMEOUT_MS otherwise. */
  timeoutMs?: number;
}

/** The configured keyring, or null when neither setting is given (no encryption). */
export async function loadKeyring(opts: KeyringSource): Promise<Keyring | null> {
  if (opts.file && opts.command) throw configError('encryptionKeyFile and encryptionKeyCommand are both set; set only one');
  if (opts.file) {
    const text = await readKeyFile(opts.file);
    return { ...parseKeyring(text, `encryption key file ${opts.file}`), source: `file ${opts.file}` };
  }
  if (opts.command) {
    const text = await runKeyCommand(opts.command, opts.timeoutMs ?? KEY_COMMAND_TIMEOUT_MS);
    return { ...parseKeyring(text, 'output of encryptionKeyCommand'), source: 'command' };
  }
  return null;
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

/** Reads the keyring file after the checks ssh applies to a private key, on the descriptor read. */
async function readKeyFile(path: string): Promise<string> {
  const what = `encryption key file ${path}`;
  let fh: FileHandle;
  try {
    // O_NOFOLLOW: a symlink could be pointed elsewhere by whoever owns it; O_NONBLOCK: a FIFO would block.
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    if (code === 'ELOOP') throw configError(`${what} is a symbolic link; name the file itself`);
    if (code === 'ENOENT') throw configError(`${what} does not exist`);
    throw configError(`cannot read ${what}: ${code}`, { cause: e });
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw configError(`${what} is a directory, not a keyring file`);
    if (!st.isFile()) throw configError(`${what} is not a regular file`);
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw configError(`${what} is owned by uid ${st.uid}; it must belong to uid ${uid} (who runs walvault) or root`);
    }
    if ((st.mode & 0o077) !== 0) {
      const who = (st.mode & 0o044) !== 0 ? 'another user can read it' : 'another user can change it';
      throw configError(`${what} has mode ${octal(st.mode)}: ${who}; chmod 600 ${path}`);
    }
    const buf = Buffer.alloc(KEYRING_MAX_BYTES + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0 || (n += bytesRead) === buf.length) break;
    }
    if (n > KEYRING_MAX_BYTES) throw configError(`${what} is larger than ${KEYRING_MAX_BYTES / 1024} KiB; a keyring is a few lines`);
    const text = buf.toString('utf8', 0, n);
    buf.fill(0);
    return text;
  } catch (e) {
    if (isWalvaultError(e)) throw e;
    throw configError(`cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Runs the key command with `/bin/sh -c`, no stdin; its stdout is the keyring. */
function runKeyCommand(command: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // Its own process group, so that a timeout kills what the shell started too (a grandchild
    // holding stdout open would otherwise keep us waiting).
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let done = false;
    const finish = (e: Error | null, text?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (e) {
        killGroup(child.pid);
        child.stdout.destroy();
        child.stderr.destroy();
        reject(e);
      } else resolve(text!);
    };
    const timer = setTimeout(
      () => finish(configError(`encryptionKeyCommand did not finish within ${timeoutMs / 1000} s; killed`)),
      timeoutMs,
    );
    child.stdout.on('data', (c: Buffer) => {
      outBytes += c.length;
      if (outBytes > KEYRING_MAX_BYTES) return finish(configError(`encryptionKeyCommand printed more than ${KEYRING_MAX_BYTES / 1024} KiB; a keyring is a few lines`));
      out.push(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      if (err.length < 4096) err += c.toString('utf8');
    });
    child.on('error', (e) => finish(configError(`cannot run encryptionKeyCommand with /bin/sh: ${(e as NodeJS.ErrnoException).code ?? e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      if (code === 0) return finish(null, Buffer.concat(out).toString('utf8'));
      const status = code !== null ? `exited with status ${code}` : `was killed by ${signal}`;
      const line = firstLine(err);
      finish(configError(`encryptionKeyCommand ${status}${line ? `: ${line}` : ' (nothing on stderr)'}`));
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The first non-blank stderr line, one line, short, and with anything that looks like a key masked. */
function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '')?.trim() ?? '';
  const masked = line.replace(/[0-9a-fA-F]{32,}/g, '<hex>');
  return escapeControl(masked.length > 200 ? `${masked.slice(0, 200)}...` : masked);
}
