import { configError } from './errors.js';
import { TIMER_MAX_SECONDS, type SettingDef, type SettingSource } from './settings.js';

// One setting's raw value (a flag, an environment variable, a JSON value from the config file) turned
// into its typed value, strictly: Number() and friends accept "", true, [] and "12abc" -> 12 (via
// parseInt) or 0, so a typo would silently become "no retries" or "no look-ahead". Flags and the
// environment are text; the config file is JSON, so there a number must be a JSON number and a
// boolean a JSON boolean. Both CLIs (src/cli/main.ts and the yargs-free src/cli/hot-path.ts) go through
// here via loadConfig.

export interface ValueSource {
  source: SettingSource;
  from?: string;
}

const INT_TEXT = /^\d+$/;
const DECIMAL_TEXT = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
const SIZE_TEXT = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/i;
const TRUE_TEXT = /^(true|1|yes|on)$/i;
const FALSE_TEXT = /^(false|0|no|off)$/i;

export function describeSource(src: ValueSource): string {
  if (src.source === 'file') return `config file ${src.from ?? ''}`.trim();
  return src.from ?? src.source;
}

export function coerceSetting(def: SettingDef, raw: unknown, src: ValueSource): unknown {
  const bad = (why: string) => configError(`${def.key} (from ${describeSource(src)}): ${why}`);
  // A secret typed into the wrong place must not end up in PostgreSQL's log.
  const shown = def.secret ? '(secret not shown)' : show(raw);
  const fromFile = src.source === 'file';
  const text = typeof raw === 'string' ? raw.trim() : undefined;
  let value: unknown;
  switch (def.type) {
    case 'string':
      if (typeof raw !== 'string') throw bad(`expected a string, got ${jsonType(raw)}`);
      if (raw.trim() === '') throw bad('expected a value, got an empty string');
      value = raw.trim();
      break;
    case 'boolean':
      if (typeof raw === 'boolean') value = raw;
      else if (!fromFile && text !== undefined && TRUE_TEXT.test(text)) value = true;
      else if (!fromFile && text !== undefined && FALSE_TEXT.test(text)) value = false;
      else throw bad(`expected true or false, got ${shown}`);
      break;
    case 'int': {
      const n = fromFile || typeof raw === 'number' ? raw : text !== undefined && INT_TEXT.test(text) ? Number(text) : undefined;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw bad(`expected a whole number, got ${shown}`);
      value = n;
      break;
    }
    case 'seconds': {
      const n = fromFile || typeof raw === 'number' ? raw : text !== undefined && DECIMAL_TEXT.test(text) ? Number(text) : undefined;
      if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) throw bad(`expected a positive number of seconds, got ${shown}`);
      const max = def.max ?? TIMER_MAX_SECONDS;
      if (n > max) {
        throw bad(
          def.max === undefined
            ? `${n} seconds is longer than a timer can wait (at most ${TIMER_MAX_SECONDS} s, about 24.8 days)`
            : `must be at most ${max} seconds, got ${n}`,
        );
      }
      value = n;
      break;
    }
    case 'bytes':
      value = parseBytes(raw, bad);
      break;
  }
  if (typeof value === 'number' && def.type !== 'seconds') checkBounds(def, value, bad);
  if (def.choices && !def.choices.includes(String(value))) {
    throw bad(`expected one of ${def.choices.join(', ')}, got ${shown}`);
  }
  return value;
}

function checkBounds(def: SettingDef, n: number, bad: (why: string) => Error): void {
  const fmt = (v: number) => (def.type === 'bytes' ? formatSize(v) : String(v));
  if (def.min !== undefined && n < def.min) throw bad(`must be at least ${fmt(def.min)}, got ${fmt(n)}`);
  if (def.max !== undefined && n > def.max) throw bad(`must be at most ${fmt(def.max)}, got ${fmt(n)}`);
}

/** A size: a whole number of bytes, or text such as 16MiB (binary units; KB, MB... read as KiB, MiB...). */
export function parseBytes(raw: unknown, bad: (why: string) => Error = (w) => configError(w)): number {
  let n: number | undefined;
  if (typeof raw === 'number') n = raw;
  else if (typeof raw === 'string') {
    const m = SIZE_TEXT.exec(raw.trim());
    if (m) n = Math.round(Number(m[1]) * 1024 ** 'bkmgt'.indexOf((m[2] ?? 'b')[0]!.toLowerCase()));
  }
  if (n === undefined || !Number.isSafeInteger(n) || n < 1) throw bad(`expected a size such as 16MiB, got ${show(raw)}`);
  return n;
}

function formatSize(n: number): string {
  for (const [unit, mult] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (n >= mult && n % mult === 0) return `${n / mult}${unit}`;
  }
  return `${n} bytes`;
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a${typeof v === 'object' ? 'n' : ''} ${typeof v}`;
}

/** The offending value, short: enough to find the typo, never a whole pasted blob. */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  if (typeof v === 'number' && !Number.isFinite(v)) s = String(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}
