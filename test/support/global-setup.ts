// vitest globalSetup: starts the S3 test servers once per test run and hands their coordinates to
// the test files through provide/inject (see testStores() in ./stores.ts). It also provides
// `tmpRoot`, a per-run directory that the teardown deletes: test workers are ended without their
// 'exit' handlers running, so per-worker scratch (walvaultBin's copy of Node) is kept there.
//
// WALVAULT_TEST_STORES selects the servers: "rgw,swift" (default), "rgw", "swift" or "none" (for
// runs that need no S3, e.g. unit tests only). A requested server that fails to start fails the
// run with the start script's stderr: integration tests must never skip silently.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { TestStore } from './stores.js';

type StoreName = TestStore['name'];

const SCRIPTS = resolve(dirname(fileURLToPath(import.meta.url)), '../../scripts/test-servers');
// First start on a bare CI machine includes an apt-get install of the Ceph or Swift packages.
const START_TIMEOUT_MS = 15 * 60_000;

interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runScript(script: string, args: string[], timeoutMs: number): Promise<ScriptResult> {
  const started = performance.now();
  // Our S3_* variables would override the scripts' credentials (Swift insists on account:user).
  const env = { ...process.env };
  delete env.S3_ACCESS_KEY;
  delete env.S3_SECRET_KEY;
  return new Promise((resolvePromise) => {
    const child = spawn('bash', [join(SCRIPTS, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stderr += `\n[global-setup] ${script} timed out after ${timeoutMs} ms`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => (stderr += `\n[global-setup] ${err.message}`));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

function parseInfo(stdout: string): Record<string, string> {
  const info: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) info[m[1]!] = m[2]!;
  }
  return info;
}

function requestedStores(): StoreName[] {
  const raw = (process.env.WALVAULT_TEST_STORES ?? 'rgw,swift').trim();
  if (raw === '' || raw === 'none') return [];
  const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (n !== 'rgw' && n !== 'swift') throw new Error(`WALVAULT_TEST_STORES: unknown store "${n}" (use rgw, swift or none)`);
  }
  return [...new Set(names)] as StoreName[];
}

/** Copies dist/ and this Node into a postgres-readable dir with the installed command (scripts/make-wrapper.sh); '' without a build. */
function prepareWalvaultBin(tmpRoot: string): string {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  if (!existsSync(join(repo, 'dist', 'walvault.mjs'))) return '';
  const dir = mkdtempSync(join(tmpRoot, 'walvault-bin-'));
  cpSync(join(repo, 'dist'), join(dir, 'dist'), { recursive: true });
  copyFileSync(process.execPath, join(dir, 'node'));
  execFileSync('chmod', ['-R', 'u=rwX,go=rX', dir]);
  chmodSync(join(dir, 'node'), 0o755);
  const wrapper = join(dir, 'walvault');
  writeFileSync(wrapper, execFileSync(join(repo, 'scripts', 'make-wrapper.sh'), [join(dir, 'node'), join(dir, 'dist', 'walvault.mjs')]), { mode: 0o755 });
  return wrapper;
}

const tail = (s: string, lines = 40) => s.trimEnd().split('\n').slice(-lines).join('\n');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const names = requestedStores();
  // Short path under /tmp: Ceph's admin sockets live in it and unix socket paths max out at 107 bytes.
  const root = mkdtempSync('/tmp/walvault-test-');
  const tmpRoot = join(root, 'tmp');
  mkdirSync(tmpRoot);
  // postgres must traverse into tmpRoot (the walvault wrapper and its temp dirs live below it).
  chmodSync(root, 0o755);
  chmodSync(tmpRoot, 0o755);
  project.provide('tmpRoot', tmpRoot);
  // Copied here, before any test process spawns children: a fork that inherits the copy's write fd
  // makes exec of the new node binary fail with ETXTBSY ("Text file busy").
  project.provide('walvaultBin', prepareWalvaultBin(tmpRoot));
  const stateDir = (name: StoreName) => join(root, name);

  let stopped = false;
  const stopAll = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(names.map((n) => runScript(`${n}-stop.sh`, [stateDir(n), '--purge'], 60_000)));
    rmSync(root, { recursive: true, force: true });
  };
  // Last resort if the run dies without calling the teardown (e.g. an uncaught error in vitest):
  // daemons outliving the run would hold ports and, for rgw, up to 2 GiB of RAM.
  const onExit = () => {
    if (stopped) return;
    stopped = true;
    for (const n of names) spawnSync('bash', [join(SCRIPTS, `${n}-stop.sh`), stateDir(n), '--purge'], { stdio: 'ignore' });
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  if (names.length === 0) {
    project.provide('stores', []);
    return async () => {
      await stopAll();
      process.removeListener('exit', onExit);
    };
  }

  const started = performance.now();
  // Parallel: radosgw is ready in ~1-4 s, Swift in ~3-11 s; serial starts would add them up.
  const results = await Promise.all(names.map((n) => runScript(`${n}-start.sh`, [stateDir(n)], START_TIMEOUT_MS)));
  const totalMs = performance.now() - started;

  const stores: TestStore[] = [];
  const failures: string[] = [];
  names.forEach((name, i) => {
    const r = results[i]!;
    const info = parseInfo(r.stdout);
    if (r.code !== 0 || !info.S3_ENDPOINT || !info.S3_ACCESS_KEY || !info.S3_SECRET_KEY) {
      failures.push(`${name}-start.sh exited with ${r.code}:\n${tail(r.stderr) || '(no stderr)'}\n${tail(r.stdout, 10)}`);
      return;
    }
    stores.push({
      name,
      endpoint: info.S3_ENDPOINT,
      region: info.S3_REGION ?? 'us-east-1',
      accessKeyId: info.S3_ACCESS_KEY,
      secretAccessKey: info.S3_SECRET_KEY,
      conditionalWrites: name === 'rgw',
      ...(info.S3_USER ? { user: info.S3_USER } : {}),
      ...(info.S3_PUSHER_USER && info.S3_PUSHER_ACCESS_KEY && info.S3_PUSHER_SECRET_KEY
        ? { pusher: { user: info.S3_PUSHER_USER, accessKeyId: info.S3_PUSHER_ACCESS_KEY, secretAccessKey: info.S3_PUSHER_SECRET_KEY } }
        : {}),
    });
  });

  if (failures.length > 0) {
    await stopAll();
    process.removeListener('exit', onExit);
    throw new Error(`test S3 server(s) failed to start:\n${failures.join('\n\n')}`);
  }

  const each = names.map((n, i) => `${n} ${(results[i]!.ms / 1000).toFixed(1)} s`).join(', ');
  process.stderr.write(
    `[walvault tests] S3 stores up in ${(totalMs / 1000).toFixed(1)} s (${each}): ` +
      stores.map((s) => `${s.name}=${s.endpoint}`).join(' ') + '\n',
  );
  project.provide('stores', stores);

  return async () => {
    const t = performance.now();
    await stopAll();
    process.removeListener('exit', onExit);
    process.stderr.write(`[walvault tests] S3 stores stopped in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
  };
}
