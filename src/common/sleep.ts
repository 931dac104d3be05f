/** Resolves after `ms` milliseconds (not abortable: see backup/wait.ts for the abortable wait). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
