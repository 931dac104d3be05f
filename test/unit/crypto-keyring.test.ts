// Keyrings (issue 13, design "Keyring"): the text format, the checks on a key file, and a key command
// with its failures. No message may carry a key's hex: messages end up in PostgreSQL's log.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadKeyring, parseKeyring } from '../../src/crypto/keyring.js';

const hex = () => randomBytes(32).toString('hex');
const A = hex();
const B = hex();
const C = hex();

/** The ConfigError `f` throws (sync or async), checked to carry none of the keys' hex. */
async function configFailure(f: () => unknown, ...secrets: string[]): Promise<string> {
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({ code: 'ConfigError', exitCode: 4 });
  const msg = (err as Error).message;
  for (const s of [A, B, C, ...secrets]) {
    expect(msg).not.toContain(s);
    expect(msg.toLowerCase()).not.toContain(s.slice(0, 16).toLowerCase());
  }
  return msg;
}

describe('keyring text', () => {
  it('skips comments and blank lines, splits on spaces and tabs, keeps order; the first key encrypts', () => {
    const text = `# walvault keys\n\n   # indented comment\n\tnew-2026.1\t${A}\r\n  old_2025   ${B.toUpperCase()}  \n \t \nX ${C}`;
    const k = parseKeyring(text, 'kr');
    expect(k.current.id).toBe('new-2026.1');
    expect(k.current.key.equals(Buffer.from(A, 'hex'))).toBe(true);
    expect([...k.byId.keys()]).toEqual(['new-2026.1', 'old_2025', 'X']);
    expect(k.byId.get('old_2025')!.key.equals(Buffer.from(B, 'hex'))).toBe(true);
    expect(k.byId.get('X')!.key).toHaveLength(32);
    expect(k.source).toBe('kr');
    expect(parseKeyring(`\uFEFFbom ${A}\n`, 'kr').current.id).toBe('bom');
  });

  it('keeps key bytes out of JSON and inspect output of the keyring', () => {
    const k = parseKeyring(`a ${A}\nb ${B}`, 'kr');
    expect(JSON.stringify([...k.byId.values()])).toBe('[{"id":"a"},{"id":"b"}]');
    const shown = inspect(k, { depth: 10 });
    expect(shown).toContain("current: { id: 'a' }");
    expect(shown).not.toContain('Buffer');
    expect(k.current.key.equals(Buffer.from(A, 'hex'))).toBe(true);
  });

  it('refuses a duplicate id, naming both lines and neither key', async () => {
    expect(await configFailure(() => parseKeyring(`a ${A}\n# c\nb ${B}\na ${C}\n`, 'kr'))).toBe('kr line 4: the same key id as line 1; key ids must be unique');
  });

  it('refuses a key that is not 64 hex digits', async () => {
    expect(await configFailure(() => parseKeyring(`a ${A}\nb ${B.slice(0, 63)}`, 'kr'))).toBe('kr line 2: the key must be 64 hex digits (32 bytes), found 63 hex digits');
    expect(await configFailure(() => parseKeyring(`b ${B}0`, 'kr'))).toMatch(/^kr line 1: .*found 65 hex digits$/);
    expect(await configFailure(() => parseKeyring(`b ${B.slice(0, 63)}g`, 'kr'))).toMatch(/^kr line 1: .*found 64 characters, not all hex digits$/);
  });

  it('refuses a bad key id without printing it', async () => {
    for (const id of ['-a', '.a', 'a/b', 'a:b', 'é', 'x'.repeat(65)]) {
      const msg = await configFailure(() => parseKeyring(`${id} ${A}`, 'kr'));
      expect(msg).toMatch(/^kr line 1: not a valid key id/);
      expect(msg).not.toContain(id);
    }
    expect(parseKeyring(`${'x'.repeat(64)} ${A}`, 'kr').current.id).toHaveLength(64);
  });

  it('refuses a line with one or three fields (a key pasted in two, a trailing comment)', async () => {
    expect(await configFailure(() => parseKeyring(`${A}`, 'kr'))).toBe('kr line 1: expected "<key-id> <64 hex digits>", found 1 fields');
    expect(await configFailure(() => parseKeyring(`a ${A} # main`, 'kr'))).toBe('kr line 1: expected "<key-id> <64 hex digits>", found 4 fields');
    expect(await configFailure(() => parseKeyring(`a ${A.slice(0, 32)} ${A.slice(32)}`, 'kr'), A.slice(0, 32), A.slice(32))).toMatch(/found 3 fields/);
  });

  it('refuses a keyring without a key', async () => {
    for (const text of ['', '\n\n', '# only a comment\n   \n']) {
      expect(await configFailure(() => parseKeyring(text, 'kr'))).toBe('kr: no key in it (expected "<key-id> <64 hex digits>" per line)');
    }
  });
});

describe('keyring file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wv-keyring-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string, mode: number) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    chmodSync(p, mode);
    return p;
  };

  it('reads a file only its owner can read', async () => {
    const p = file('ok', `k1 ${A}\nk0 ${B}\n`, 0o600);
    const k = await loadKeyring({ file: p });
    expect(k!.source).toBe(`file ${p}`);
    expect(k!.current.id).toBe('k1');
    expect(k!.byId.size).toBe(2);
    expect((await loadKeyring({ file: file('ro', `k1 ${A}\n`, 0o400) }))!.current.id).toBe('k1');
  });

  it('refuses a file other users can read or change', async () => {
    const p = file('open', `k1 ${A}\n`, 0o644);
    expect(await configFailure(() => loadKeyring({ file: p }))).toBe(`encryption key file ${p} has mode 0644: another user can read it; chmod 600 ${p}`);
    const w = file('gw', `k1 ${A}\n`, 0o620);
    expect(await configFailure(() => loadKeyring({ file: w }))).toMatch(/has mode 0620: another user can change it/);
  });

  it('refuses a file owned by another user', async () => {
    const p = file('theirs', `k1 ${A}\n`, 0o600);
    chownSync(p, 65534, 65534);
    expect(await configFailure(() => loadKeyring({ file: p }))).toMatch(new RegExp(`^encryption key file ${p} is owned by uid 65534; it must belong to uid \\d+ \\(who runs walvault\\) or root$`));
  });

  it('refuses a symlink, even to a good file; a directory; a FIFO (without blocking); a missing file', async () => {
    const target = file('target', `k1 ${A}\n`, 0o600);
    const link = join(dir, 'link');
    symlinkSync(target, link);
    expect(await configFailure(() => loadKeyring({ file: link }))).toBe(`encryption key file ${link} is a symbolic link; name the file itself`);
    const sub = join(dir, 'sub');
    mkdirSync(sub, { mode: 0o700 });
    expect(await configFailure(() => loadKeyring({ file: sub }))).toBe(`encryption key file ${sub} is a directory, not a keyring file`);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    expect(await configFailure(() => loadKeyring({ file: fifo }))).toBe(`encryption key file ${fifo} is not a regular file`);
    expect(await configFailure(() => loadKeyring({ file: join(dir, 'nope') }))).toMatch(/nope does not exist$/);
  });

  it('refuses a file over 64 KiB', async () => {
    const p = file('big', `k1 ${A}\n${'#'.repeat(70_000)}\n`, 0o600);
    expect(await configFailure(() => loadKeyring({ file: p }))).toBe(`encryption key file ${p} is larger than 64 KiB; a keyring is a few lines`);
  });

  it('names the file and the line of a parse error, never its content', async () => {
    const p = file('bad', `k1 ${A}\nk2 ${B.slice(1)}\n`, 0o600);
    expect(await configFailure(() => loadKeyring({ file: p }))).toBe(`encryption key file ${p} line 2: the key must be 64 hex digits (32 bytes), found 63 hex digits`);
  });

  it('refuses both a file and a command; neither means no encryption', async () => {
    expect(await configFailure(() => loadKeyring({ file: '/x', command: 'true' }))).toMatch(/encryptionKeyFile and encryptionKeyCommand are both set/);
    await expect(loadKeyring({})).resolves.toBeNull();
  });
});

describe('keyring command', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wv-keycmd-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the keyring from stdout, with no stdin', async () => {
    const k = await loadKeyring({ command: `read x || true; printf '# from vault\\nk2 ${A}\\nk1 ${B}\\n'` });
    expect(k!.source).toBe('command');
    expect(k!.current.id).toBe('k2');
    expect(k!.byId.get('k1')!.key.equals(Buffer.from(B, 'hex'))).toBe(true);
  });

  it('a non-zero exit names the status and the first stderr line, with anything key-like masked', async () => {
    const msg = await configFailure(() => loadKeyring({ command: `echo k1 ${A}; printf '\\nvault: permission denied ${C}\\nmore\\n' >&2; exit 3` }));
    expect(msg).toBe('encryptionKeyCommand exited with status 3: vault: permission denied <hex>');
    expect(await configFailure(() => loadKeyring({ command: 'exit 7' }))).toBe('encryptionKeyCommand exited with status 7 (nothing on stderr)');
    expect(await configFailure(() => loadKeyring({ command: 'kill -TERM $$' }))).toBe('encryptionKeyCommand was killed by SIGTERM (nothing on stderr)');
  });

  it('times out, killing what the command started', async () => {
    const pidFile = join(dir, 'pid');
    const t0 = Date.now();
    const msg = await configFailure(() => loadKeyring({ command: `sleep 30 & echo $! > ${pidFile}; wait`, timeoutMs: 500 }));
    expect(msg).toBe('encryptionKeyCommand did not finish within 0.5 s; killed');
    expect(Date.now() - t0).toBeLessThan(5000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(pid)).toBe(false);
  });

  it('refuses garbage or oversized output as a keyring, never echoing it', async () => {
    expect(await configFailure(() => loadKeyring({ command: `echo hello; echo k1 ${A}` }))).toBe('output of encryptionKeyCommand line 1: expected "<key-id> <64 hex digits>", found 1 fields');
    expect(await configFailure(() => loadKeyring({ command: 'true' }))).toMatch(/^output of encryptionKeyCommand: no key in it/);
    expect(await configFailure(() => loadKeyring({ command: `printf 'k1 ${A}\\n'; head -c 70000 /dev/zero` }))).toBe('encryptionKeyCommand printed more than 64 KiB; a keyring is a few lines');
  });
});

/** Running (a zombie waiting for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
