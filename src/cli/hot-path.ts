import { loadConfig, type Config } from '../common/config.js';
import { setLogCommand, setLogLevel } from '../common/log.js';
import { reportFailure } from './report-failure.js';
import { SETTINGS } from '../common/settings.js';
import { basename } from 'node:path';
import { logFastPathHit, tryFastPush } from '../push-ahead/fast-path.js';
import { tryFastFetch } from '../prefetch/fast-path.js';
import { WORKERS, workerOfCommand, type WorkerJob, type WorkerKind } from '../worker/control.js';
import type { PrefetchJob } from '../prefetch/spool-dir.js';
import type { PusherJob } from '../push-ahead/client.js';

// The commands PostgreSQL runs once per WAL file (wal-push, wal-fetch) and the hidden worker commands,
// dispatched without yargs: loading and setting up yargs costs more than Node's own start-up, paid
// once per 16 MiB segment. Only the plain argument shapes PostgreSQL and the README use are handled
// here (`[--flag value | --flag=value]... command args...`, flags from the settings table); anything
// else (help, version, short options, unknown flags, wrong arity) returns null and goes to the full
// yargs CLI, which then parses, validates and reports exactly as before. Values are checked by
// loadConfig for both (types, ranges, who may write the config file and the spool); a boolean flag
// takes only true or false, here and in src/cli/main.ts.


const ARITY: Record<string, [number, number]> = { 'wal-push': [1, 2], 'wal-fetch': [2, 2] };
for (const w of Object.values(WORKERS)) ARITY[w.command] = [0, 0];

/** What each hidden worker command runs, loaded only when it is the command (src/worker/control.ts). */
const RUN_WORKER: Record<WorkerKind, (job: WorkerJob) => Promise<number>> = {
  prefetch: async (job) => (await import('../prefetch/worker.js')).runPrefetchWorker(job as PrefetchJob),
  lookahead: async (job) => (await import('../push-ahead/worker.js')).runPusher(job as PusherJob),
};

export interface HotArgs {
  command: string;
  args: string[];
  flags: Record<string, string | boolean>;
}

const BY_NAME = new Map<string, { key: string; boolean: boolean }>();
for (const s of SETTINGS) {
  BY_NAME.set(s.flag, { key: s.flag, boolean: s.type === 'boolean' });
  BY_NAME.set(s.key, { key: s.flag, boolean: s.type === 'boolean' });
}
BY_NAME.set('config', { key: 'config', boolean: false });

export function parseHotArgv(argv: string[]): HotArgs | null {
  const positionals: string[] = [];
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (!tok.startsWith('-')) {
      if (tok === '') return null;
      positionals.push(tok);
      continue;
    }
    if (!tok.startsWith('--') || tok === '--') return null;
    const eq = tok.indexOf('=');
    let name = tok.slice(2, eq < 0 ? undefined : eq);
    let value: string | boolean | undefined = eq < 0 ? undefined : tok.slice(eq + 1);
    let negated = false;
    if (!BY_NAME.has(name) && name.startsWith('no-') && BY_NAME.get(name.slice(3))?.boolean) {
      name = name.slice(3);
      negated = true;
    }
    const def = BY_NAME.get(name);
    if (!def || flags[def.key] !== undefined) return null;
    if (def.boolean) {
      if (negated) {
        if (value !== undefined) return null;
        value = false;
      } else if (value === undefined) {
        const next = argv[i + 1];
        if (next === 'true' || next === 'false') {
          value = next === 'true';
          i++;
        } else {
          value = true;
        }
      } else if (value === 'true' || value === 'false') {
        value = value === 'true';
      } else {
        return null;
      }
    } else if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('-')) return null;
      value = next;
      i++;
    }
    flags[def.key] = value;
  }
  const [command, ...args] = positionals;
  const arity = command === undefined ? undefined : ARITY[command];
  if (!arity || args.length < arity[0] || args.length > arity[1]) return null;
  return { command: command!, args, flags };
}

/** Runs a hot command and returns its exit code, or null when the full CLI must handle argv. */
export async function fastMain(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number | null> {
  const hot = parseHotArgv(argv);
  if (!hot) return null;
  setLogCommand(hot.command);
  let config: Config | undefined;
  try {
    const worker = workerOfCommand(hot.command);
    if (worker) {
      // The job comes from the walvault that started the worker (startWorker), not from a user.
      const raw = env[WORKERS[worker].jobEnv];
      if (!raw) return null;
      const job = JSON.parse(raw) as WorkerJob;
      config = job.config;
      setLogLevel(config.logLevel);
      return await RUN_WORKER[worker](job);
    }
    config = loadConfig(hot.flags, env).config;
    setLogLevel(config.logLevel);
    if (hot.command === 'wal-push') {
      const [path, name] = hot.args as [string, string | undefined];
      const walName = name ?? basename(path);
      const started = process.hrtime.bigint();
      // The first thing to try, before the rest of wal-push (and the storage driver) is loaded.
      const hit = await tryFastPush(config, path, walName).catch(() => null);
      if (hit) {
        logFastPathHit(config, walName, hit, started);
        return 0;
      }
      const { walPush } = await import('../commands/wal-push.js');
      return await walPush(config, path, name, { fastPathChecked: true });
    }
    const [name, path] = hot.args as [string, string];
    const started = process.hrtime.bigint();
    const answered = await tryFastFetch(config, name, path, started);
    if (answered !== null) return answered;
    const { walFetch } = await import('../commands/wal-fetch.js');
    return await walFetch(config, name, path, { spoolChecked: true, started });
  } catch (e) {
    const code = reportFailure(hot.command, e, config);
    // A background worker's failure is only logged: nobody waits for its exit code.
    return workerOfCommand(hot.command) ? 0 : code;
  }
}
