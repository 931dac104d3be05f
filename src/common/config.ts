import { readFileSync, type Stats } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { coerceSetting } from './config-values.js';
import { configError, isWalvaultError } from './errors.js';
import { trustedConfigFile, trustedSpool } from './file-trust.js';
import { jsonErrorPosition } from './json-position.js';
import { maskUserInfo } from './redact.js';
import type { RetryPolicy } from './retry.js';
import { SETTINGS, type SettingSource, type SettingValues } from './settings.js';


// Precedence: command-line flag > environment > config file (--config / WALVAULT_CONFIG) > default.
// archive_command runs with PostgreSQL's environment, which operators rarely control, hence the file.
/** `spool` has no default in the table because it is computed at load (defaultSpool), never absent. */
export type Config = Omit<SettingValues, 'spool'> & { spool: string };

export interface LoadedConfig {
  config: Config;
  sources: Record<string, { source: SettingSource; from?: string }>;
  configFile?: string;
}

export function loadConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const configFile = str(flags['config']) ?? nonEmpty(env['WALVAULT_CONFIG']);
  const stats = new Map<string, Stats>(); // the config file's and the spool's directories often share parents
  const file = configFile ? readConfigFile(configFile, stats) : {};
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
    if (raw !== undefined) values[def.key] = coerceSetting(def, raw, sources[def.key]!);
  }
  values['spool'] = trustedSpool((values['spool'] as string | undefined) ?? defaultSpool(env), stats);
  const config = values as unknown as Config;
  validate(config);
  return { config, sources, ...(configFile ? { configFile } : {}) };
}

function readConfigFile(path: string, stats: Map<string, Stats>): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(trustedConfigFile(path, stats), 'utf8');
  } catch (e) {
    if (isWalvaultError(e)) throw e;
    throw configError(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Never JSON.parse's message: it quotes the text, and the file holds credentials.
    const at = jsonErrorPosition(text);
    throw configError(`config file ${path} is not valid JSON${at ? ` (syntax error at line ${at.line}, column ${at.column})` : ''}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw configError(`config file ${path} must hold one JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function validate(c: Config): void {
  if (c.fetchStopExitCode < 126 || c.fetchStopExitCode > 255) {
    throw configError(`fetchStopExitCode must be between 126 and 255 (PostgreSQL stops recovery only above 125), got ${c.fetchStopExitCode}`);
  }
  const maxLevel = c.compression === 'gzip' ? 9 : c.compression === 'zstd' ? 22 : Infinity;
  if (c.compressionLevel !== undefined && c.compressionLevel > maxLevel) {
    throw configError(`compressionLevel ${c.compressionLevel} is out of range for ${c.compression} (at most ${maxLevel})`);
  }
  if (c.retryMaxDelay < c.retryMinDelay) throw configError('retryMaxDelay must not be below retryMinDelay');
  if ((c.s3ObjectLockMode === undefined) !== (c.s3ObjectLockDays === undefined)) {
    throw configError('s3ObjectLockMode and s3ObjectLockDays go together: set both (a retention needs a mode and a length) or neither');
  }
  if (c.s3ObjectLockMode !== undefined && c.repo !== undefined && /^file:/i.test(c.repo)) {
    throw configError(`s3ObjectLockMode is set, but repository ${c.repo} is file://: Object Lock is an S3 feature (unset both lock settings)`);
  }
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
    else if (typeof v === 'string') value = maskUserInfo(v); // repo, s3Endpoint: https://user:pass@host
    return { key: def.key, value, source: src.from ? `${src.source}:${src.from}` : src.source };
  });
}

function mask(s: string): string {
  return s.length <= 4 ? '****' : `${s.slice(0, 4)}****`;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v !== undefined && v.trim() !== '' ? v : undefined;
}
