import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/walvault.js';

// `npm run demo` (scripts/demo.mjs) as a user runs it: the story on its stdout, its verdict in the
// exit code, and nothing of it left on the machine afterwards. It needs PostgreSQL 15, no S3.

interface DemoRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the demo; `interruptAfter`: send SIGINT once a stdout line matches it, as Ctrl-C would. */
function runDemo(interruptAfter?: RegExp): Promise<DemoRun> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(process.execPath, [join(REPO_ROOT, 'scripts', 'demo.mjs')], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (interruptAfter && !sent && interruptAfter.test(stdout)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** PIDs whose command line or working directory is inside `dir` (a postmaster -D, a backend, a walvault worker). */
function processesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${p}/cwd`);
      } catch {}
      if (cmdline.includes(dir) || cwd.startsWith(dir)) found.push(`${p}: ${cmdline}`);
    } catch {} // exited meanwhile
  }
  return found;
}

function demoDir(stdout: string): string {
  const dir = /^Demo directory (\/\S+):/m.exec(stdout)?.[1];
  expect(dir, stdout).toBeDefined();
  return dir!;
}

/** The command line of a live process (empty for one gone or a zombie awaiting its reaper). */
const cmdlineOf = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
};

describe('npm run demo', () => {
  it('demo: restores exactly the rows of 1:59 PM, narrates each step and leaves nothing behind', async () => {
    const r = await runDemo();
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // A build only when dist/ is stale; walvault's background workers (prefetch, look-ahead) only while not idled out yet.
    const optional = /^(Building walvault|Cleanup: stopped walvault's [\w-]+ worker \(pid \d+\)\.$)/;
    const lines = r.stdout.trimEnd().split('\n').filter((l) => !optional.test(l));
    const story = [
      /^Demo directory \/\S+: a file:\/\/ repository and two throw-away PostgreSQL 15 clusters/,
      /^Yesterday: PostgreSQL on port \d+ archives every WAL file with archive_command = walvault wal-push %p %f\.$/,
      /^Last night: walvault backup-push stored base backup base_[0-9A-F]{24}_\d{8}T\d{6}Z\.$/,
      /^Today until 1:59 PM: 1000 orders; "1:59 PM" is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d\d(:\d\d)? on the cluster's clock\.$/,
      /^1:59:30 PM one more order \(id 1001\); 2:00 PM someone runs DROP TABLE orders\.$/,
      /^The WAL up to the drop is archived \(through segment [0-9A-F]{24}\)\.$/,
      /^walvault backup-fetch LATEST --target-time '[^']+' restored base_\S+ and wrote its restore_command\.$/,
      /^The restored cluster on port \d+ replayed the WAL up to 1:59 PM and was promoted\.$/,
      /^Restored: 1000 orders, ids 1 to 1000: exactly the rows of 1:59 PM/,
      /^Demo passed: /,
      /^Cleanup: stopped the restored cluster \(pid \d+\)\.$/,
      /^Cleanup: stopped the original cluster \(pid \d+\)\.$/,
      /^Cleanup: removed \/\S+\.$/,
    ];
    expect(lines).toHaveLength(story.length);
    story.forEach((re, i) => expect(lines[i]).toMatch(re));
    // The target printed is the instant backup-fetch was given.
    const target = /"1:59 PM" is (.+) on the cluster's clock/.exec(r.stdout)![1];
    expect(r.stdout).toContain(`--target-time '${target}'`);

    const dir = demoDir(r.stdout);
    expect(existsSync(dir)).toBe(false);
    expect(processesUnder(dir)).toEqual([]);
    // The postmasters it reported by PID: gone (or zombies, whose command line is empty).
    const pids = [...r.stdout.matchAll(/cluster \(pid (\d+)\)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(2);
    expect(pids.filter((pid) => cmdlineOf(pid).includes(dir))).toEqual([]);
    console.log(`npm run demo took ${(r.ms / 1000).toFixed(1)} s`);
  });

  it('demo: Ctrl-C stops everything it started and removes its directory', async () => {
    const r = await runDemo(/^Last night: /m);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(130);
    expect(r.stderr).toMatch(/^demo: interrupted \(SIGINT\); stopping what it started$/m);
    expect(r.stdout).not.toMatch(/Demo passed/);
    expect(r.stdout).toMatch(/^Cleanup: stopped the original cluster \(pid \d+\)\.$/m);
    const dir = demoDir(r.stdout);
    expect(existsSync(dir)).toBe(false);
    expect(processesUnder(dir)).toEqual([]);
  });
});
