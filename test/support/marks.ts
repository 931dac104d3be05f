// The high-water marks wal-push wrote, read raw from the store: write-once objects under
// state/timeline-<TLI>/, the newest listed first (src/archive/high-water-marks.ts).
import { markPrefix } from '../../src/archive/high-water-marks.js';
import { getRaw, listKeys, type TestStore } from './stores.js';

export interface RawMark {
  key: string;
  body: Buffer;
  metadata: Record<string, string>;
  mark: { timeline: number; first: string; last: string; updatedAt: string };
}

/** Every write-once mark key of timeline `tli` under `prefix` (no trailing slash), newest first. */
export async function markKeys(store: TestStore, bucket: string, prefix: string, tli = 1): Promise<string[]> {
  return listKeys(store, bucket, `${prefix}/${markPrefix(tli)}`);
}

/** The newest write-once mark of timeline `tli`, or null when there is none. */
export async function newestMark(store: TestStore, bucket: string, prefix: string, tli = 1): Promise<RawMark | null> {
  const key = (await markKeys(store, bucket, prefix, tli))[0];
  if (!key) return null;
  const got = await getRaw(store, bucket, key);
  return got ? { key, ...got, mark: JSON.parse(got.body.toString('utf8')) as RawMark['mark'] } : null;
}
