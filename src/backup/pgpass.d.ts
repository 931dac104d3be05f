// The password-file reader node-postgres itself depends on (pgpass 1.x, no published types): its
// matcher and file checks, used by pg-session.ts with the file libpq would read.
declare module 'pgpass/lib/helper.js' {
  import type { Stats } from 'node:fs';
  import type { Readable } from 'node:stream';
  export interface PgpassConnInfo {
    host: string;
    port: number;
    database: string;
    user: string;
  }
  export function usePgPass(stats: Stats, fname: string): boolean;
  export function getPassword(connInfo: PgpassConnInfo, stream: Readable, cb: (pass: string | undefined) => void): void;
  export function warnTo(stream: NodeJS.WritableStream): NodeJS.WritableStream;
}
