import { readFileSync } from 'node:fs';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeJsonReplace } from '../fs/json-file.js';
import { sleep } from '../common/sleep.js';
import { workerRunning } from './control.js';

// How a foreground command (wal-push, wal-fetch) asks the detached worker of its directory for one
// file, and how the worker answers. Two files in the worker's directory:
//
//   state.json       the latest request (`req`, `reqId`) with the worker's own fields (prefetch: where
//                    it continues); one writer at a time wins, the worker reads it on every poll
//   <name>.answer    the worker's answer to exactly one request (its id inside): it could not deliver
//
// Delivery itself is not an answer file: the caller sees the result appear (a push record, a
// prefetched file). A worker that is not running, stops, or is silent until `waitMs` leaves the
// caller with 'no-answer': ask the repository yourself. Import-light: used by the fast paths.

const STATE_FILE = 'state.json';
const POLL_MS = 5;
/** Polls between two checks that the worker is still there (every ~100 ms). */
const ALIVE_EVERY = 20;

/** The fields of state.json the protocol owns; each worker adds its own. */
export interface WorkerState {
  /** A file a command is waiting for, and the id of that request. */
  req?: string;
  reqId?: string;
  at: number;
}

/** A worker's word for one request: the repository does not have it, or the worker failed on it. */
export type AnswerResult = 'absent' | 'error';

export interface WorkerAnswer {
  reqId: string;
  result: AnswerResult;
  detail?: string;
}

/** 'done': the result appeared; an answer: the worker's word for this request; 'no-answer': ask the repository. */
export type AskResult = 'done' | 'no-answer' | Omit<WorkerAnswer, 'reqId'>;

export async function readState<S extends WorkerState>(dir: string, valid: (s: S) => boolean = () => true): Promise<S | null> {
  try {
    const s = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as S;
    return s && typeof s === 'object' && valid(s) ? s : null;
  } catch {
    return null;
  }
}

export async function writeState<S extends WorkerState>(dir: string, state: S): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeJsonReplace(join(dir, STATE_FILE), state);
}

/**
 * Asks the worker of `dir` (running with configuration `fingerprint`) for `name` and waits until
 * `done()` says the result is there, the worker answers this very request, or `waitMs` is over.
 * `fields()` gives the worker-specific part of the request, read when it is made.
 */
export async function ask<S extends WorkerState>(
  dir: string,
  name: string,
  opts: { fingerprint: string; waitMs: number; done: () => boolean | Promise<boolean>; fields?: () => Promise<Omit<S, keyof WorkerState>> },
): Promise<AskResult> {
  if (!workerRunning(dir, opts.fingerprint)) return 'no-answer';
  const answerFile = answerPath(dir, name);
  await unlink(answerFile).catch(() => undefined); // an answer to an earlier request
  const reqId = `${process.pid}-${process.hrtime.bigint()}`;
  const fields = opts.fields ? await opts.fields() : {};
  await writeState(dir, { ...fields, req: name, reqId, at: Date.now() });
  const until = Date.now() + opts.waitMs;
  for (let i = 0; Date.now() < until; i++) {
    if (await opts.done()) return 'done';
    const a = readAnswer(answerFile);
    if (a?.reqId === reqId) {
      await unlink(answerFile).catch(() => undefined);
      return a.detail === undefined ? { result: a.result } : { result: a.result, detail: a.detail };
    }
    if (i % ALIVE_EVERY === ALIVE_EVERY - 1 && !workerRunning(dir)) return 'no-answer';
    await sleep(POLL_MS);
  }
  return 'no-answer';
}

/** The worker's answer to request `reqId` for `name`. */
export async function answer(dir: string, name: string, reqId: string, result: AnswerResult, detail?: string): Promise<void> {
  await writeFile(answerPath(dir, name), JSON.stringify({ reqId, result, detail } satisfies WorkerAnswer), { mode: 0o600 });
}

function answerPath(dir: string, name: string): string {
  return join(dir, `${name}.answer`);
}

function readAnswer(path: string): WorkerAnswer | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as WorkerAnswer;
  } catch {
    return null;
  }
}
