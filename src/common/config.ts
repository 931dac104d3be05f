import { readFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { configError } from './errors.js';
import type { LogLevel } from './log.js';
import type { RetryPolicy } from './retry.js';
import { SETTINGS, type SettingDef, type SettingSource } from './settings.js';

// Precedence: command-line flag > environment > config file (--config / WALVAULT_CONFIG) > default.
// archive_command runs with PostgreSQL's environment, which operators rarely control, hence the file.
export interface Config {
  repo?: string;
  spool: string;
  compression: 'zstd' | 'gzip' | 'none';
  compressionLevel?: number;
  logLevel: LogLevel;
  retries: number;
  retryMinDelay: number;
  retryMaxDelay: number;
  attemptTimeout: number;
  deadline: number;
  connectTimeout: number;
  idleTimeout: number;
  highWaterInterval: number;
  maxReadyBytes?: number;
  lookahead: number;
  prefetch: number;
  prefetchMaxBytes: number;
  fetchErrorPolicy: 'auto' | 'stop' | 'retry';
  fetchStopExitCode: number;
  s3Endpoint?: string;
  s3Region?: string;
  s3ForcePathStyle: boolean;
  s3Profile?: string;
  s3AccessKeyId?: string;
  s3SecretAccessKey?: string;
  s3SessionToken?: string;
  s3CaBundle?: string;
  s3StorageClass?: string;
  s3Sse?: string;
  s3SseKmsKeyId?: string;
  s3ChecksumMode: 'when_required' | 'when_supported';
  s3ConditionalWrites: 'auto' | 'on' | 'off';
  s3PartSize: number;
  s3QueueSize: number;
  backupWaitTimeout: number;
  backupStaleUploadAge: number;
  pgBinDir?: string;
}

export interface LoadedConfig {
  config: Config;
  sources: Record<string, { source: SettingSource; from?: string }>;
  configFile?: string;
}

export function loadConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const configFile = str(flags['config']) ?? nonEmpty(env['WALVAULT_CONFIG']);
  const file = configFile ? readConfigFile(configFile) : {};
  const known = new Set(SETTINGS.map((s) => s.key));
  for (const k of Object.keys(file)) {
    if (!known.has(k)) throw configError(`config file ${configFile}: unknown setting ${JSON.stringify(k)}`);
  }

  const values: Record<string, unknown> = {};
  const sources: LoadedConfig['sources'] = {};
  for (const def of SETTINGS) {
    const flagValue = flags[def.flag] ?? flags[def.key];
    let raw: unknown;
    if (flagValue !== undefined && flagValue !== null) {
      raw = flagValue;
      sources[def.key] = { source: 'flag', from: `--${def.flag}` };
    } else {
      const envName = def.env.find((n) => nonEmpty(env[n]) !== undefined);
      if (envName) {
        raw = env[envName];
        sources[def.key] = { source: 'env', from: envName };
      } else if (file[def.key] !== undefined && file[def.key] !== null) {
        raw = file[def.key];
        sources[def.key] = { source: 'file', from: configFile };
      } else {
        raw = def.default;
        sources[def.key] = { source: 'default' };
      }
    }
    if (raw !== undefined) values[def.key] = coerce(def, raw, sources[def.key]!);
  }
  values['spool'] ??= defaultSpool(env);
  const config = values as unknown as Config;
  validate(config);
  return { config, sources, ...(configFile ? { configFile } : {}) };
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw configError(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw configError(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw configError(`config file ${path} must hold one JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function where(src: { source: SettingSource; from?: string }): string {
  return src.from ?? src.source;
}

function coerce(def: SettingDef, raw: unknown, src: { source: SettingSource; from?: string }): unknown {
  const bad = (why: string) => configError(`${def.key} (from ${where(src)}): ${why}`);
  const text = typeof raw === 'string' ? raw.trim() : raw;
  let value: unknown;
  switch (def.type) {
    case 'string':
      if (typeof text !== 'string' && typeof text !== 'number') throw bad('expected a string');
      value = String(text);
      break;
    case 'boolean':
      if (typeof text === 'boolean') value = text;
      else if (typeof text === 'string' && /^(true|1|yes|on)$/i.test(text)) value = true;
      else if (typeof text === 'string' && /^(false|0|no|off)$/i.test(text)) value = false;
      else throw bad(`expected true or false, got ${JSON.stringify(raw)}`);
      break;
    case 'int': {
      const n = typeof text === 'number' ? text : Number(text);
      if (!Number.isInteger(n) || n < 0) throw bad(`expected a whole number, got ${JSON.stringify(raw)}`);
      value = n;
      break;
    }
    case 'seconds': {
      const n = typeof text === 'number' ? text : Number(text);
      if (!Number.isFinite(n) || n <= 0) throw bad(`expected a positive number of seconds, got ${JSON.stringify(raw)}`);
      value = n;
      break;
    }
    case 'bytes':
      value = parseBytes(text, bad);
      break;
  }
  if (def.choices && !def.choices.includes(String(value))) {
    throw bad(`expected one of ${def.choices.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function parseBytes(raw: unknown, bad: (why: string) => Error = (w) => configError(w)): number {
  if (typeof raw === 'number' && Number.isInteger(raw) && raw > 0) return raw;
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(String(raw).trim());
  if (!m) throw bad(`expected a size such as 16MiB, got ${JSON.stringify(raw)}`);
  const unit = (m[2] ?? 'b').toLowerCase()[0]!;
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit] ?? 1;
  return Math.round(Number(m[1]) * mult);
}

function validate(c: Config): void {
  if (c.fetchStopExitCode < 126 || c.fetchStopExitCode > 255) {
    throw configError(`fetchStopExitCode must be between 126 and 255 (PostgreSQL stops recovery only above 125), got ${c.fetchStopExitCode}`);
  }
  if (c.s3PartSize < 5 * 1024 * 1024) throw configError('s3PartSize must be at least 5MiB (S3 minimum part size)');
  if (c.s3QueueSize < 1) throw configError('s3QueueSize must be at least 1');
  if (c.retryMaxDelay < c.retryMinDelay) throw configError('retryMaxDelay must not be below retryMinDelay');
}

function defaultSpool(env: NodeJS.ProcessEnv): string {
  const home = nonEmpty(env['HOME']) ?? safeHomedir();
  return home ? join(home, '.cache', 'walvault') : join(tmpdir(), `walvault-${process.getuid?.() ?? 'user'}`);
}

function safeHomedir(): string | undefined {
  try {
    return homedir() || undefined;
  } catch {
    return undefined;
  }
}

export function retryPolicy(c: Config): RetryPolicy {
  return {
    retries: c.retries,
    minDelayMs: c.retryMinDelay * 1000,
    maxDelayMs: c.retryMaxDelay * 1000,
    attemptTimeoutMs: c.attemptTimeout * 1000,
    deadlineMs: c.deadline * 1000,
  };
}

/** The config as `walvault config` prints it: secrets masked, with where each value came from. */
export function describeConfig(loaded: LoadedConfig): Array<{ key: string; value: string; source: string }> {
  return SETTINGS.map((def) => {
    const v = (loaded.config as unknown as Record<string, unknown>)[def.key];
    const src = loaded.sources[def.key]!;
    let value = v === undefined ? '(unset)' : String(v);
    if (def.secret && v !== undefined) value = def.key === 's3AccessKeyId' ? mask(String(v)) : '****';
    if (def.key === 'repo' && typeof v === 'string') value = stripUserInfo(v);
    return { key: def.key, value, source: src.from ? `${src.source}:${src.from}` : src.source };
  });
}

function mask(s: string): string {
  return s.length <= 4 ? '****' : `${s.slice(0, 4)}****`;
}

function stripUserInfo(url: string): string {
  return url.replace(/^([a-z0-9]+:\/\/)[^/@]*@/i, '$1****@');
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v !== undefined && v.trim() !== '' ? v : undefined;
}
