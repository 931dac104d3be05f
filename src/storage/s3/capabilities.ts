import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

// What a store cannot do, remembered so that later processes skip requests doomed to fail: wal-push
// runs once per segment, and a 501 to If-None-Match (Swift) would otherwise cost an upload each time.

/** Endpoint+bucket pairs that answered 501 to If-None-Match: remembered for the process. */
export const withoutConditionalWrites = new Set<string>();

export function readCapability(file: string, storeId: string): boolean {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { noConditionalWrites?: string }).noConditionalWrites === storeId;
  } catch {
    return false;
  }
}

export function rememberCapability(file: string, storeId: string): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(`${file}.${process.pid}`, JSON.stringify({ noConditionalWrites: storeId }));
    renameSync(`${file}.${process.pid}`, file);
  } catch {
    // Only a speed-up: the next process probes again.
  }
}

