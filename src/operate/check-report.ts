// The result of `walvault check`: one finding per probe, printed as one line each (text) or one
// JSON document. Pure: the probes are in check.ts, check-store.ts and check-pg.ts.
import { printableJson } from '../common/control-chars.js';
import { checkFailedError, configError, type WalvaultError } from '../common/errors.js';

export type ProbeStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Probe {
  name: string;
  status: ProbeStatus;
  detail: string;
  /** What to do about a fail or warn. */
  fix?: string;
}

const LABEL: Record<ProbeStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };

/** `ok   name: detail`, `FAIL name: detail — fix`; control characters from a store's answer never reach the terminal. */
export function formatProbe(p: Probe): string {
  const clean = (s: string) => s.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  const fix = p.fix && (p.status === 'fail' || p.status === 'warn') ? ` — ${clean(p.fix)}` : '';
  return `${LABEL[p.status].padEnd(4)} ${p.name}: ${clean(p.detail)}${fix}`;
}

export function formatText(probes: Probe[]): string {
  return probes.map((p) => formatProbe(p) + '\n').join('');
}

export function formatJson(repo: string | undefined, probes: Probe[], checkedAt: Date): string {
  const doc = {
    repo: repo ?? null,
    checkedAt: checkedAt.toISOString(),
    ok: !probes.some((p) => p.status === 'fail'),
    probes: probes.map((p) => ({ name: p.name, status: p.status, detail: p.detail, fix: p.fix ?? null })),
  };
  return printableJson(doc);
}

/**
 * The error behind the exit code, or undefined when nothing failed: a configuration that cannot be
 * used keeps ConfigError (4): nothing else could be checked; any other failure is CheckFailed (15).
 */
export function checkOutcome(probes: Probe[]): WalvaultError | undefined {
  const failed = probes.filter((p) => p.status === 'fail');
  if (failed.length === 0) return undefined;
  const names = failed.map((p) => p.name).join(', ');
  const msg = `${failed.length} of ${probes.length} checks failed: ${names}`;
  return failed.some((p) => p.name === 'configuration') ? configError(msg) : checkFailedError(msg);
}
