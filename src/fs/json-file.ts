import { renameSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';

// Small JSON files that walvault keeps for itself (spool state, push and prefetch records, remembered
// store capabilities): a temp file beside the target, then rename, so a reader sees the whole old or
// the whole new file, never a torn one. No fsync: losing one in a crash only costs redoing some work.
// JSON that must survive a crash goes through writeJsonAtomic (fs/atomic.ts) instead.

function tempFor(path: string): string {
  return `${path}.${process.pid}.tmp`;
}

export async function writeJsonReplace(path: string, value: unknown): Promise<void> {
  const temp = tempFor(path);
  await writeFile(temp, JSON.stringify(value), { mode: 0o600 });
  await rename(temp, path);
}

/** The same for synchronous callers. */
export function writeJsonReplaceSync(path: string, value: unknown): void {
  const temp = tempFor(path);
  writeFileSync(temp, JSON.stringify(value), { mode: 0o600 });
  renameSync(temp, path);
}
