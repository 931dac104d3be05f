// Peak RSS of a walvault run: pass RSS_PREFIX as runWalvault's `prefix` (peak-rss.mjs wraps the node
// process and prints `peak-rss-kib N` on stderr), then read it with peakRssMiB.
import { join } from 'node:path';
import { REPO_ROOT, type WalvaultResult } from './walvault.js';

export const RSS_PREFIX = [process.execPath, join(REPO_ROOT, 'test', 'support', 'peak-rss.mjs')];

export function peakRssMiB(r: WalvaultResult): number {
  const m = /peak-rss-kib (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`no peak RSS in stderr:\n${r.stderr}`);
  return Number(m[1]) / 1024;
}
