// Runs a command and reports its peak resident set size on stderr as `peak-rss-kib <N>` (VmHWM,
// polled from /proc every 10 ms), exiting with the command's code. A stand-in for /usr/bin/time -v
// that needs nothing installed. Usage: node peak-rss.mjs <command> [args...]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const child = spawn(process.argv[2], process.argv.slice(3), { stdio: 'inherit' });
let peak = 0;
const poll = () => {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    if (m) peak = Math.max(peak, Number(m[1]));
  } catch {
    // exited between two polls
  }
};
const timer = setInterval(poll, 10);
child.on('exit', (code, signal) => {
  clearInterval(timer);
  process.stderr.write(`peak-rss-kib ${peak}\n`);
  process.exit(code ?? (signal ? 128 : 1));
});
