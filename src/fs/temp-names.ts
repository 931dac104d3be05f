import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

// Names of the temp files walvault writes beside a target: cleanupStaleTemps() recognises them by
// TEMP_MARK and reads the writer's pid from the name. Its own module so the fast paths can use it
// without loading stream code.
export const TEMP_MARK = '.walvault-tmp.';

export function tempPathFor(target: string): string {
  return join(dirname(target), `${TEMP_MARK}${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}`);
}
