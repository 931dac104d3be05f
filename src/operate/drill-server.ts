import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, open, readdir, readFile, rmdir, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Owner } from '../common/file-trust.js';
import { directoryControl } from '../common/file-trust.js';
import { checkFailedError } from '../common/errors.js';
import { ownerEnv } from '../backup/restore-worker.js';
import { wipe } from '../backup/restore-data.js';
import { freePort } from '../common/free-port.js';
import { pidAlive } from '../common/pid.js';
import { sleep } from '../common/sleep.js';

// The scratch PostgreSQL of restore-test: a directory of its own (mode 0700) holding the restored
// data directory, the server's configuration, socket, log and walvault spool, and a server on a
// free 127.0.0.1 port that nothing but this drill can reach (pg_hba allows only the socket, which
// is inside the directory). Production's postgresql.conf is not used: its memory, preload libraries,
// listen addresses and archive settings are for another server. Run as root, the directory is
// prepared by root while root alone can reach it, then given to the owner; root reads the log only
// through the descriptor it opened then, and removes the contents as the owner (backup/restore-data.ts wipe).

export interface DrillDir {
  dir: string;
  pgdata: string;
  spool: string;
  tablespaces: string;
  logFile: string;
  /** Root's (or our) own descriptor of the server log, opened before the owner could touch it. */
  log: FileHandle;
  owner: Owner | undefined;
}

const PREFIX = 'walvault-restore-test-';

export async function makeDrillDir(base: string, owner: Owner | undefined): Promise<DrillDir> {
  // Root creates and fills it only where no other user can rename it (root's, or sticky like /tmp).
  const real = owner ? directoryControl(base, 0, 'restore-test --dir').real : base;
  const dir = await mkdtemp(join(real, PREFIX));
  await chmod(dir, 0o700);
  const d: DrillDir = {
    dir,
    pgdata: join(dir, 'data'),
    spool: join(dir, 'spool'),
    tablespaces: join(dir, 'tablespaces'),
    logFile: join(dir, 'postgres.log'),
    log: await open(join(dir, 'postgres.log'), constants.O_CREAT | constants.O_EXCL | constants.O_RDWR | constants.O_APPEND, 0o600),
    owner,
  };
  const files: Record<string, string> = {
    'postgresql.conf': '# walvault restore-test: settings are on the command line\n',
    // Only the socket (in this 0700 directory); no TCP connection is allowed at all.
    'pg_hba.conf': 'local all all trust\n',
    'pg_ident.conf': '',
  };
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text, { mode: 0o600, flag: 'wx' });
  await mkdir(d.spool, { mode: 0o700 });
  await mkdir(d.tablespaces, { mode: 0o700 });
  if (owner) {
    for (const name of [...Object.keys(files), 'spool', 'tablespaces']) await chown(join(dir, name), owner.uid, owner.gid);
    await d.log.chown(owner.uid, owner.gid);
    await chown(dir, owner.uid, owner.gid);
  }
  return d;
}

/** Removes the directory and all in it (the contents as the owner). */
export async function removeDrillDir(d: DrillDir): Promise<void> {
  await d.log.close().catch(() => undefined);
  await wipe(d.dir, false, d.owner);
  await rmdir(d.dir);
}

/** The last `n` lines of the server log, read through our own descriptor. */
export async function logTail(d: DrillDir, n = 12): Promise<string[]> {
  const st = await d.log.stat();
  const from = Math.max(0, st.size - 64 * 1024);
  const buf = Buffer.alloc(st.size - from);
  await d.log.read(buf, 0, buf.length, from);
  return buf.toString('utf8').trimEnd().split('\n').slice(-n);
}

export interface DrillServer {
  child: ChildProcess;
  port: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running: () => boolean;
}

/** Starts `postgres` on the restored directory, as the owner when root. */
export async function startDrillServer(postgres: string, d: DrillDir): Promise<DrillServer> {
  const port = await freePort();
  const settings: Array<[string, string]> = [
    ['config_file', join(d.dir, 'postgresql.conf')],
    ['hba_file', join(d.dir, 'pg_hba.conf')],
    ['ident_file', join(d.dir, 'pg_ident.conf')],
    ['port', String(port)],
    ['listen_addresses', '127.0.0.1'],
    ['unix_socket_directories', d.dir],
    ['archive_mode', 'off'],
    // No connections until recovery ends, so none of the primary's limits (max_connections...) apply.
    ['hot_standby', 'off'],
    ['shared_buffers', '16MB'],
    ['max_connections', '10'],
    ['shared_preload_libraries', ''],
    ['logging_collector', 'off'],
    ['log_destination', 'stderr'],
    ['log_line_prefix', '%m [%p] '],
    ['cluster_name', 'walvault-restore-test'],
  ];
  // Each -c is one argument (no shell): the value is taken as it is, without quotes.
  const args = ['-D', d.pgdata, ...settings.flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  const fd = d.log.fd;
  const child = spawn(postgres, args, {
    cwd: d.dir,
    // wal-fetch (restore_command) runs with this environment: its spool is the drill's own.
    env: { ...ownerEnv(), ...(d.owner ? {} : { HOME: process.env['HOME'] ?? '/' }), WALVAULT_SPOOL: d.spool },
    stdio: ['ignore', fd, fd],
    // Its own process group: a Ctrl-C reaches walvault, which stops it in order.
    detached: true,
    ...(d.owner ? { uid: d.owner.uid, gid: d.owner.gid } : {}),
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', () => ((done = true), resolve({ code: null, signal: null })));
    child.once('exit', (code, signal) => ((done = true), resolve({ code, signal })));
  });
  return { child, port, exited, running: () => !done };
}

/** Fast shutdown (SIGINT), then immediate (SIGQUIT) after `graceMs`, then SIGKILL. */
export async function stopDrillServer(s: DrillServer, graceMs = 60_000): Promise<void> {
  for (const [sig, ms] of [['SIGINT', graceMs], ['SIGQUIT', 10_000], ['SIGKILL', 10_000]] as const) {
    if (!s.running()) return;
    s.child.kill(sig);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([s.exited, new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }
  if (s.running()) throw checkFailedError(`PostgreSQL (pid ${s.child.pid}) did not stop`);
}

/**
 * Ends what the server left running with the drill's spool in its environment (a prefetch worker of
 * wal-fetch waits a few idle seconds before it exits): only processes of the owner (or ours).
 */
export async function stopLeftovers(d: DrillDir): Promise<number> {
  const uid = d.owner?.uid ?? process.getuid?.();
  const marker = `WALVAULT_SPOOL=${d.spool}\0`;
  const found: number[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const status = await readFile(`/proc/${name}/status`, 'utf8').catch(() => '');
    const m = /^Uid:\s+(\d+)/m.exec(status);
    if (!m || Number(m[1]) !== uid) continue;
    const env = await readFile(`/proc/${name}/environ`, 'utf8').catch(() => '');
    if (env.includes(marker)) found.push(Number(name));
  }
  for (const pid of found) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  for (let i = 0; i < 40 && found.some(pidAlive); i++) await sleep(50);
  for (const pid of found.filter(pidAlive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  return found.length;
}

