// index.txt in memory, packed: per line only where it starts in the file, its status and a
// hash of its serial, in typed arrays, plus an open-addressing table serial hash -> line.
// About 25 bytes a line (a JS object and strings per line cost ~500: 1,000,000 lines made a
// 500 MiB signer). The text stays in the file; the rare lookups that need a line's fields read
// it back (CaDatabase does, with pread on the descriptor the index was read from).

/** FNV-1a over the serial's characters (upper-case hex, so one byte each). */
export function serialHash(serial: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < serial.length; i++) h = Math.imul(h ^ serial.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const STATUS_CODES = { V: 0x56, R: 0x52, E: 0x45 } as const;
export type LineStatus = keyof typeof STATUS_CODES;

export class IndexLines {
  /** starts[i]: byte offset of line i; starts[count]: end of the last line (after its LF) */
  private starts = new Float64Array(1024);
  private statuses = new Uint8Array(1024);
  private hashes = new Uint32Array(1024);
  /** line index + 1 per slot, 0 = empty; at most half full */
  private table = new Int32Array(2048);
  private count = 0;

  get length(): number {
    return this.count;
  }

  /** Bytes covered by the lines (the file size they were read from, plus appends). */
  get end(): number {
    return this.starts[this.count]!;
  }

  start(i: number): number {
    return this.starts[i]!;
  }

  /** Length of line i in bytes, LF included. */
  byteLength(i: number): number {
    return this.starts[i + 1]! - this.starts[i]!;
  }

  status(i: number): LineStatus {
    return String.fromCharCode(this.statuses[i]!) as LineStatus;
  }

  isRevoked(i: number): boolean {
    return this.statuses[i] === STATUS_CODES.R;
  }

  setStatus(i: number, s: LineStatus): void {
    this.statuses[i] = STATUS_CODES[s];
  }

  /** Index of the line holding `serial`, or -1. `isSerialOf(i)` confirms a hash match. */
  find(serial: string, isSerialOf: (line: number) => boolean): number {
    const h = serialHash(serial);
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const v = this.table[slot]!;
      if (v === 0) return -1;
      if (this.hashes[v - 1] === h && isSerialOf(v - 1)) return v - 1;
    }
  }

  /** Adds a line at the end (the caller made sure its serial is new); returns its index. */
  push(serial: string, status: LineStatus, byteLength: number): number {
    const i = this.count;
    if (i + 1 >= this.starts.length) this.growLines();
    if ((i + 1) * 2 > this.table.length) this.growTable();
    const h = serialHash(serial);
    this.hashes[i] = h;
    this.statuses[i] = STATUS_CODES[status];
    this.starts[i + 1] = this.starts[i]! + byteLength;
    this.count = i + 1;
    this.insert(h, i);
    return i;
  }

  /**
   * After index.txt was rewritten with some lines changed (same lines, same order, same
   * serials): their new lengths, LF included. Every later line moves.
   */
  relayout(newLengths: ReadonlyMap<number, number>): void {
    let first = this.count;
    for (const i of newLengths.keys()) if (i < first) first = i;
    let offset = this.starts[first]!;
    for (let i = first; i < this.count; i++) {
      const len = newLengths.get(i) ?? this.starts[i + 1]! - this.starts[i]!;
      this.starts[i] = offset;
      offset += len;
    }
    this.starts[this.count] = offset;
  }

  private insert(h: number, line: number): void {
    const mask = this.table.length - 1;
    let slot = h & mask;
    while (this.table[slot] !== 0) slot = (slot + 1) & mask;
    this.table[slot] = line + 1;
  }

  private growLines(): void {
    const n = this.starts.length * 2;
    const starts = new Float64Array(n);
    starts.set(this.starts);
    const statuses = new Uint8Array(n);
    statuses.set(this.statuses);
    const hashes = new Uint32Array(n);
    hashes.set(this.hashes);
    this.starts = starts;
    this.statuses = statuses;
    this.hashes = hashes;
  }

  private growTable(): void {
    this.table = new Int32Array(this.table.length * 2);
    for (let i = 0; i < this.count; i++) this.insert(this.hashes[i]!, i);
  }
}
