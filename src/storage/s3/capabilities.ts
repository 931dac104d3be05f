import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeJsonReplaceSync } from '../../fs/json-file.js';

// What a store does with If-None-Match, remembered so that the probe (src/storage/s3/conditional.ts)
// runs once per store, not once per wal-push: in the process, and in the spool for later processes.
// The key is the store's identity (endpoint and bucket): the same repository URL through another
// endpoint is another store.

/** enforced: 412 on an existing key. ignored: accepted and overwritten. unsupported: 501 (Swift). */
export type ConditionalSupport = 'enforced' | 'ignored' | 'unsupported';
const SUPPORT = new Set<string>(['enforced', 'ignored', 'unsupported']);

interface CapabilityFile {
  conditionalWrites?: Record<string, string>;
  /** Format before the probe: the one store that answered 501. */
  noConditionalWrites?: string;
}

function readFile(file: string): CapabilityFile {
  try {
    const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as CapabilityFile) : {};
  } catch {
    return {};
  }
}

/** The remembered answer for `storeId`, if any (a missing or unreadable file is no answer). */
export function readSupport(file: string, storeId: string): ConditionalSupport | undefined {
  const f = readFile(file);
  const v = f.conditionalWrites?.[storeId];
  if (typeof v === 'string' && SUPPORT.has(v)) return v as ConditionalSupport;
  return f.noConditionalWrites === storeId ? 'unsupported' : undefined;
}

export function rememberSupport(file: string, storeId: string, support: ConditionalSupport): void {
  try {
    const f = readFile(file);
    const all = { ...(typeof f.conditionalWrites === 'object' && f.conditionalWrites !== null ? f.conditionalWrites : {}), [storeId]: support };
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeJsonReplaceSync(file, { conditionalWrites: all });
  } catch {
    // Only a speed-up: the next process probes again.
  }
}

/** One answer (or one probe in flight) per store for the whole process. */
const answers = new Map<string, Promise<ConditionalSupport>>();

/**
 * The store's answer: remembered in the process, else in `file`, else `probe()`d and remembered.
 * Concurrent callers share one probe; a failed probe is forgotten so that the next call probes again.
 */
export function conditionalSupport(storeId: string, file: string | undefined, probe: () => Promise<ConditionalSupport>): Promise<ConditionalSupport> {
  let answer = answers.get(storeId);
  if (!answer) {
    const stored = file ? readSupport(file, storeId) : undefined;
    answer = stored
      ? Promise.resolve(stored)
      : probe().then((s) => {
          if (file) rememberSupport(file, storeId, s);
          return s;
        });
    answers.set(storeId, answer);
    answer.catch(() => {
      if (answers.get(storeId) === answer) answers.delete(storeId);
    });
  }
  return answer;
}

/** A store that changed its mind after the probe (501 on a real write): remember the new answer. */
export function noteSupport(storeId: string, file: string | undefined, support: ConditionalSupport): void {
  answers.set(storeId, Promise.resolve(support));
  if (file) rememberSupport(file, storeId, support);
}
