// The recovery window as a picture for a terminal: a time axis from the oldest thing shown to now,
// backups as marks (F full, i incremental), archived WAL as a bar, gaps marked '!' (and red with
// colour). Pure: the same input draws the same lines (unit-tested as a fixed-width snapshot).

export interface PictureInput {
  tli: number;
  now: Date;
  /** Total width in columns (the terminal's, or 72). */
  width: number;
  color: boolean;
  backups: Array<{ time: Date; type: 'full' | 'incremental' }>;
  /** When the first and the last archived segment of the timeline were stored. */
  wal: { first: Date; last: Date } | null;
  /** Missing WAL, as the time between the segments around it. */
  gaps: Array<{ from: Date; to: Date }>;
  window: { start: Date; end: Date } | null;
}

const LABEL = 9;
const RED = '\x1b[31m';
const GREEN = '\x1b[32m';
const RESET = '\x1b[0m';

const short = (d: Date): string => d.toISOString().slice(0, 19).replace('T', ' ') + 'Z';

export function drawWindow(p: PictureInput): string[] {
  const cols = Math.max(20, p.width - LABEL - 2);
  const times = [p.now.getTime(), ...p.backups.map((b) => b.time.getTime())];
  if (p.wal) times.push(p.wal.first.getTime());
  const from = Math.min(...times);
  const span = Math.max(1, p.now.getTime() - from);
  const col = (d: Date): number => Math.max(0, Math.min(cols - 1, Math.floor(((d.getTime() - from) / span) * (cols - 1) + 0.5)));

  const marks: string[] = Array.from({ length: cols }, () => ' ');
  for (const b of [...p.backups].sort((x, y) => x.time.getTime() - y.time.getTime())) {
    const c = col(b.time);
    // A full backup and an incremental in one column: the full one shows (it starts a chain).
    if (marks[c] !== 'F') marks[c] = b.type === 'full' ? 'F' : 'i';
  }
  const bar: Array<'wal' | 'gap' | 'none'> = Array.from({ length: cols }, () => 'none');
  if (p.wal) for (let c = col(p.wal.first); c <= col(p.wal.last); c++) bar[c] = 'wal';
  for (const g of p.gaps) for (let c = col(g.from); c <= col(g.to); c++) bar[c] = 'gap';
  const cell = (k: 'wal' | 'gap' | 'none'): string => {
    if (k === 'none') return ' ';
    if (!p.color) return k === 'gap' ? '!' : '=';
    return k === 'gap' ? `${RED}!${RESET}` : `${GREEN}=${RESET}`;
  };

  const left = short(new Date(from));
  const right = `now ${short(p.now)}`;
  const axis = '+' + '-'.repeat(cols) + '+';
  const lines = [
    `timeline ${p.tli}`,
    `${'backups'.padEnd(LABEL)}|${marks.join('')}|`,
    `${'WAL'.padEnd(LABEL)}|${bar.map(cell).join('')}|`,
    `${''.padEnd(LABEL)}${axis}`,
    `${''.padEnd(LABEL)}${left}${right.padStart(Math.max(1, cols + 2 - left.length))}`,
  ];
  lines.push(
    p.window
      ? `${''.padEnd(LABEL)}restorable from ${short(p.window.start)} to ${short(p.window.end)}`
      : `${''.padEnd(LABEL)}nothing restorable on this timeline (no backup with unbroken WAL after it)`,
  );
  lines.push(`${''.padEnd(LABEL)}F full backup  i incremental  = archived WAL  ! gap (missing WAL)`);
  return lines;
}
