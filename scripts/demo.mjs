// npm run demo: the README's "Restore to 1:59 PM" story, told end to end in a temporary directory.
// A PostgreSQL 15 cluster archives its WAL with walvault into a file:// repository, takes a base
// backup, records orders until "1:59 PM" and loses the table at "2:00 PM"; backup-fetch --target-time
// restores the 1:59 PM state into a second cluster, which must show exactly the 1:59 PM rows.
// "1:59 PM" is a label: the target is the real now() of the cluster after the last kept order.
// Node built-ins only. Everything it starts is stopped by PID and the directory removed, also on
// failure and on Ctrl-C. Exit 0 only when the restored row count is right.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const PGBIN = process.env.WALVAULT_DEMO_PGBIN || '/usr/lib/postgresql/15/bin';
const isRoot = process.getuid() === 0;
const ORDERS = 1000;

const say = (line) => process.stdout.write(`${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class DemoError extends Error {}
const fail = (msg) => { throw new DemoError(msg); };

// ---- processes: every child is tracked, in its own process group, so cleanup can end it by PID.
const running = new Set();
let aborting = false;

function run(cmd, args, { env = {}, asPostgres = false, timeoutMs = 120_000, forCleanup = false } = {}) {
  if (aborting && !forCleanup) return Promise.reject(new DemoError('interrupted'));
  const [file, argv] = asPostgres && isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return new Promise((resolve) => {
    // cwd '/': postgres may not be allowed into the caller's directory (a checkout under /root).
    const child = spawn(file, argv, { cwd: '/', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running.add(child.pid);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), timeoutMs);
    child.on('error', (e) => (err += e.message));
    child.on('close', (code) => {
      clearTimeout(timer);
      running.delete(child.pid);
      resolve({ code, out: out.trim(), err: err.trim() });
    });
  });
}

async function must(what, cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) fail(`${what} failed (exit ${r.code}): ${lastLine(r.err || r.out)}`);
  return r.out;
}

const lastLine = (s) => s.split('\n').filter((l) => l.trim()).pop() ?? '(no output)';

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {}
}

/** Processes whose command line or working directory lies in `dir`: the servers and walvault workers we caused. */
function processesUnder(dir) {
  const found = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      let cwd = '';
      try { cwd = readlinkSync(`/proc/${p}/cwd`); } catch {}
      const argv = cmdline.split('\0');
      const bundleAt = argv.findIndex((a) => a.endsWith('walvault.mjs'));
      const what = bundleAt >= 0 ? `walvault's ${argv[bundleAt + 1]} worker` : `a leftover ${argv[0]}`;
      if (cmdline.includes(dir) || cwd.startsWith(dir)) found.push({ pid: Number(p), what });
    } catch {} // gone meanwhile
  }
  return found;
}

// ---- the temporary world: dir/{node,dist} readable by postgres, dir/pg (postgres's) with both clusters.
const dir = mkdtempSync(join(tmpdir(), 'walvault-demo-'));
const clusters = [];

let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  aborting = true;
  for (const pid of running) killGroup(pid, 'SIGTERM');
  for (const c of clusters.reverse()) {
    const r = await run(join(PGBIN, 'pg_ctl'), ['stop', '-D', c.data, '-m', 'fast', '-w', '-t', '30'], { asPostgres: true, forCleanup: true });
    if (r.code === 0 && c.pid) say(`Cleanup: stopped the ${c.name} cluster (pid ${c.pid}).`);
  }
  // Left: walvault's background workers (push look-ahead, prefetch) would idle out after seconds.
  const told = new Set();
  for (let round = 0; round < 20; round++) {
    const left = processesUnder(dir);
    if (left.length === 0) break;
    for (const { pid, what } of left) {
      if (!told.has(pid)) say(`Cleanup: stopped ${what} (pid ${pid}).`);
      told.add(pid);
      try { process.kill(pid, round < 10 ? 'SIGTERM' : 'SIGKILL'); } catch {}
    }
    await sleep(200);
  }
  rmSync(dir, { recursive: true, force: true });
  say(`Cleanup: removed ${dir}.`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer().on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function newestMtime(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...readdirSync(path).map((e) => newestMtime(join(path, e))));
}

/** A directory postgres owns (mode 700) when we are root; ours otherwise. */
function ownDir(path) {
  mkdirSync(path, { mode: 0o700 });
  if (isRoot) chownSync(path, pgUid.uid, pgUid.gid);
  return path;
}

let pgUid = null;
function lookupPostgres() {
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (r.status !== 0) fail('running as root needs a "postgres" OS user to run PostgreSQL (initdb and postgres refuse root)');
  return { uid: Number(r.stdout), gid: Number(g.stdout) };
}

// ---- the story
async function main() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 15)) fail(`walvault needs Node >= 22.15, this is ${process.version}: export PATH="$(scripts/setup-node.sh):$PATH" first`);
  if (!existsSync(join(PGBIN, 'initdb'))) fail(`${PGBIN}/initdb not found: install PostgreSQL 15 (Debian: apt-get install postgresql-15) or set WALVAULT_DEMO_PGBIN`);
  const bundle = join(REPO, 'dist', 'walvault.mjs');
  if (!existsSync(bundle) || statSync(bundle).mtimeMs < newestMtime(join(REPO, 'src'))) {
    say('Building walvault (dist/ is missing or older than src/): npm run build');
    const b = spawnSync(process.execPath, [join(REPO, 'scripts', 'build.mjs')], { cwd: REPO, stdio: ['ignore', 2, 2] });
    if (b.status !== 0) fail(`npm run build failed (exit ${b.status})`);
  }
  if (isRoot) pgUid = lookupPostgres();
  say(`Demo directory ${dir}: a file:// repository and two throw-away PostgreSQL 15 clusters${isRoot ? ' run as postgres' : ''}.`);

  // PostgreSQL runs walvault as its own user: Node and the bundle must be where that user can read them.
  chmodSync(dir, 0o755);
  cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true });
  copyFileSync(process.execPath, join(dir, 'node'));
  spawnSync('chmod', ['-R', 'a+rX', join(dir, 'dist'), join(dir, 'node')]);
  const pgDir = ownDir(join(dir, 'pg'));
  const archive = ownDir(join(dir, 'archive'));
  const config = join(dir, 'walvault.json');
  writeFileSync(config, JSON.stringify({ repo: `file://${archive}` }) + '\n', { mode: 0o644 });
  const wv = [join(dir, 'node'), join(dir, 'dist', 'walvault.mjs'), '--config', config];
  // Each user keeps its own spool (walvault refuses a spool another user owns), all inside `dir`.
  const asMe = { WALVAULT_SPOOL: join(dir, 'spool') };
  const walvault = (args, env = {}) => must(`walvault ${args[0]}`, wv[0], [...wv.slice(1), ...args], { env: { ...asMe, ...env }, timeoutMs: 180_000 });

  // Yesterday: a cluster that archives its WAL with walvault.
  const original = { name: 'original', data: join(pgDir, 'main'), port: await freePort() };
  clusters.push(original);
  await must('initdb', join(PGBIN, 'initdb'), ['-D', original.data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'], { asPostgres: true });
  const archiveCommand = `${wv.map((a) => `'${a}'`).join(' ')} wal-push %p %f`;
  writeFileSync(join(original.data, 'postgresql.conf'), `archive_mode = on\narchive_command = '${archiveCommand.replace(/'/g, "''")}'\n`, { flag: 'a' });
  await startCluster(original, pgDir, []);
  say(`Yesterday: PostgreSQL on port ${original.port} archives every WAL file with archive_command = walvault wal-push %p %f.`);
  await sql(original, 'CREATE TABLE orders (id int PRIMARY KEY, note text)');

  // Last night's base backup.
  const backupId = await walvault(['backup-push'], libpqEnv(original));
  say(`Last night: walvault backup-push stored base backup ${backupId}.`);

  // Today: orders until 1:59 PM, then the instant to restore to, read from the cluster's own clock.
  await sql(original, `INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, ${ORDERS}) g`);
  // A backup counts as ended at its STOP TIME rounded up to the second: a target in that same
  // second would be "before the end of the oldest backup" (as in the README's script, sleep 1).
  await sleep(1000);
  const target = await sql(original, 'SELECT now()');
  await sleep(300);
  say(`Today until 1:59 PM: ${ORDERS} orders; "1:59 PM" is ${target} on the cluster's clock.`);
  await sql(original, `INSERT INTO orders VALUES (${ORDERS + 1}, 'the order we lose')`);
  await sql(original, 'DROP TABLE orders');
  say(`1:59:30 PM one more order (id ${ORDERS + 1}); 2:00 PM someone runs DROP TABLE orders.`);

  // In production archive_timeout or more traffic closes the segment; here a switch does.
  const last = await sql(original, 'SELECT pg_walfile_name(pg_switch_wal())');
  for (let t0 = Date.now(); ; await sleep(200)) {
    if ((await sql(original, "SELECT coalesce(last_archived_wal, '') >= '" + last + "' FROM pg_stat_archiver")) === 't') break;
    if (Date.now() - t0 > 60_000) fail(`WAL segment ${last} was not archived within 60 s: ${logTail(original)}`);
  }
  say(`The WAL up to the drop is archived (through segment ${last}).`);

  // Restore as of 1:59 PM into a new directory, beside the original.
  const restored = { name: 'restored', data: join(pgDir, 'restored'), port: await freePort() };
  clusters.push(restored);
  await walvault(['backup-fetch', 'LATEST', restored.data, '--target-time', target, '--target-action', 'promote', ...(isRoot ? ['--owner', 'postgres'] : [])]);
  say(`walvault backup-fetch LATEST --target-time '${target}' restored ${backupId} and wrote its restore_command.`);
  // archive_mode off: a copy for inspection must not archive a new timeline into the shared repository.
  await startCluster(restored, pgDir, ['-c archive_mode=off']);
  for (let t0 = Date.now(); ; await sleep(200)) {
    // Errors are expected while it starts up; only the answer "f" (promoted) ends the wait.
    if ((await run(join(PGBIN, 'psql'), ['-AtX', '-c', 'SELECT pg_is_in_recovery()'], { env: libpqEnv(restored) })).out === 'f') break;
    if (Date.now() - t0 > 60_000) fail(`the restored cluster did not finish recovery within 60 s: ${logTail(restored)}`);
  }
  say(`The restored cluster on port ${restored.port} replayed the WAL up to 1:59 PM and was promoted.`);

  const [count, maxId] = (await sql(restored, 'SELECT count(*), max(id) FROM orders')).split('|').map(Number);
  if (count !== ORDERS || maxId !== ORDERS) fail(`the restored cluster has ${count} orders (max id ${maxId}); expected exactly the ${ORDERS} of 1:59 PM`);
  say(`Restored: ${count} orders, ids 1 to ${maxId}: exactly the rows of 1:59 PM (the 1:59:30 order and the drop are not replayed).`);
}

async function startCluster(c, pgDir, extra) {
  c.log = join(pgDir, `${c.name}.log`);
  const o = [`-c port=${c.port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories='${pgDir}'`, ...extra].join(' ');
  // The postmaster's environment is what archive_command and restore_command see: a spool in `dir`.
  const env = { WALVAULT_SPOOL: join(pgDir, `spool-${c.name}`), HOME: pgDir };
  const r = await run(join(PGBIN, 'pg_ctl'), ['start', '-D', c.data, '-l', c.log, '-o', o, '-w', '-t', '60'], { asPostgres: true, env });
  if (r.code !== 0) fail(`pg_ctl start (${c.name}) failed (exit ${r.code}): ${logTail(c) || lastLine(r.err || r.out)}`);
  c.pid = Number(readFileSync(join(c.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

const libpqEnv = (c) => ({ PGHOST: '127.0.0.1', PGPORT: String(c.port), PGUSER: 'postgres', PGDATABASE: 'postgres' });
const sql = (c, q) => must(`psql -c ${JSON.stringify(q)}`, join(PGBIN, 'psql'), ['-AtX', '-v', 'ON_ERROR_STOP=1', '-c', q], { env: libpqEnv(c) });
/** The server log's last line, for a failure message (the log itself goes with the directory). */
const logTail = (c) => (existsSync(c.log) ? lastLine(readFileSync(c.log, 'utf8')) : '');

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`demo: interrupted (${sig}); stopping what it started\n`);
    cleanup().finally(() => process.exit({ SIGINT: 130, SIGTERM: 143, SIGHUP: 129 }[sig]));
  });
}

let failure = '';
try {
  await main();
  say('Demo passed: point-in-time recovery brought back the table as it was at 1:59 PM.');
} catch (e) {
  failure = e instanceof DemoError ? e.message : e.stack;
}
if (!interrupted) {
  await cleanup();
  // Last, so the reason is the line a user sees after the clean-up lines.
  if (failure) process.stderr.write(`demo failed: ${failure}\n`);
  process.exit(failure ? 1 : 0);
}
