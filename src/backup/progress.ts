import { formatBytes, log } from '../common/log.js';

// backup-push and backup-fetch report progress: on a terminal one line redrawn in place (bytes,
// rate, percentage and ETA when the total is known), otherwise a plain log line every `every` ms,
// since stderr then goes to a log file or PostgreSQL's log where carriage returns are noise.
export class Progress {
  private readonly started = Date.now();
  private last = 0;
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly tty: boolean;
  private drawn = false;

  constructor(
    private readonly what: string,
    private total: number | undefined,
    private readonly every = 10_000,
    tty = process.stderr.isTTY === true,
  ) {
    this.tty = tty;
    this.timer = setInterval(() => this.tick(), tty ? 250 : every);
    this.timer.unref();
  }

  setTotal(total: number | undefined): void {
    if (total && total > 0) this.total = total;
  }

  update(bytes: number): void {
    this.bytes = bytes;
  }

  line(): string {
    const secs = Math.max(0.001, (Date.now() - this.started) / 1000);
    const rate = this.bytes / secs;
    let s = `${this.what}: ${formatBytes(this.bytes)}`;
    if (this.total) {
      const pct = Math.min(100, (100 * this.bytes) / this.total);
      s += ` of ${formatBytes(this.total)} (${pct.toFixed(pct < 10 ? 1 : 0)}%)`;
    }
    s += `, ${formatBytes(Math.round(rate))}/s`;
    if (this.total && rate > 0 && this.bytes < this.total) s += `, ETA ${formatDuration((this.total - this.bytes) / rate)}`;
    return s;
  }

  private tick(): void {
    if (this.bytes === this.last && !this.tty) return;
    this.last = this.bytes;
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${this.line()}`);
      this.drawn = true;
    } else {
      log.info(this.line());
    }
  }

  /** Stops the reports; clears the terminal line so the next log line starts clean. */
  done(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty && this.drawn) process.stderr.write('\r\x1b[K');
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
