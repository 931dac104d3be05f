// Memory bound for the uploads of one process (wal-push with its look-ahead, the look-ahead worker).

/**
 * Bounds the bytes held by parallel uploads. A file reserves what it is expected to hold before it is
 * read (archive/push.ts memoryReservation) and keeps the size of its body until the upload ends,
 * taking more at once if the body turned out larger; one file is always admitted, however big.
 */
export class ByteBudget {
  private used = 0;
  private readonly queue: Array<{ n: number; go: () => void }> = [];

  constructor(readonly limit: number) {}

  acquire(n: number): Promise<void> {
    if (this.queue.length === 0 && this.fits(n)) {
      this.used += n;
      return Promise.resolve();
    }
    return new Promise((go) => this.queue.push({ n, go }));
  }

  /** Takes `n` more at once, past the limit if need be (a body turned out larger than reserved). */
  take(n: number): void {
    this.used += n;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
    while (this.queue.length > 0 && this.fits(this.queue[0]!.n)) {
      const next = this.queue.shift()!;
      this.used += next.n;
      next.go();
    }
  }

  get inUse(): number {
    return this.used;
  }

  private fits(n: number): boolean {
    return this.used === 0 || this.used + n <= this.limit;
  }
}
