import { createHash } from 'node:crypto';

/** The first `chars` hex digits of SHA-256(`text`): a stable, file-name-safe name for a path, URL or setting. */
export function shortHash(text: string, chars: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, chars);
}
