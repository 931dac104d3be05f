import { watch, type FSWatcher } from 'node:fs';
import { SEGMENT } from './spool-dir.js';

// How the prefetch worker learns at once that something concerns it, instead of polling every few
// milliseconds (which cost more CPU than its downloads): inotify on its directory.

export interface DirChanges {
  /** Resolves at the next change in the directory. */
  next: () => Promise<void>;
  close: () => void;
}

export function watchDir(dir: string): DirChanges | undefined {
  let watcher: FSWatcher;
  let waiting: Array<() => void> = [];
  // Sticky: a change that comes while the loop is busy (between two waits) wakes the next wait at
  // once; without it a request written during a step waited for the next poll.
  let pending = false;
  const fire = () => {
    pending = true;
    const w = waiting;
    waiting = [];
    for (const f of w) f();
  };
  try {
    // Only what concerns the loop: a request (state.json) or a WAL file handed over (its link count
    // and ctime change) or gone; not the worker's own downloads in progress.
    watcher = watch(dir, { persistent: false }, (_event, file) => {
      if (!file || file === 'state.json' || SEGMENT.test(file)) fire();
    });
  } catch {
    return undefined; // no inotify here: plain polling
  }
  watcher.on('error', fire);
  return {
    next: () => {
      if (!pending) return new Promise<void>((r) => waiting.push(r));
      pending = false;
      return Promise.resolve();
    },
    close: () => watcher.close(),
  };
}
