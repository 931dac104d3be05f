/**
 * True while process `pid` exists. Signal 0 checks without sending anything; EPERM means it exists
 * but belongs to another user, which still counts as alive.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
