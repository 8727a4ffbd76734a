import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { UnpackError } from "../errors.js";
import { type TreePrint, TreePrinter } from "./tree-print.js";

/** Where a new regular file goes and how it ends up; decided by the unpack thread. */
export interface FileJob {
  /** Host path, its parent a real directory inside the root. */
  readonly host: string;
  /** Mode given to open(); with `chmod`, the real mode is set after the owner. */
  readonly mode: number;
  readonly chmod?: number;
  readonly owner?: { readonly uid: number; readonly gid: number };
  /** Milliseconds since the epoch. */
  readonly mtime: number;
}

/**
 * Pieces of files, flat so that posting a batch costs a copy of one string and the transfer of
 * two buffers rather than a structured clone per piece: piece i is `hosts.split("\0")[i]` and
 * `numbers[i * PIECE_FIELDS …]` (see `encodePiece`); its bytes are `ring[start, end)`, in the
 * lane's ring buffer, shared with its writer thread (see `WriterInit`), which the batch's bytes
 * occupy until it is acknowledged. A fixed ring, not a buffer per batch: nothing to collect.
 */
export interface WriterBatch {
  readonly kind: "files";
  readonly seq: number;
  readonly hosts: string;
  readonly numbers: Float64Array;
}

export interface WriterInit {
  readonly ring: SharedArrayBuffer;
}

export const PIECE_FIELDS = 9;

/** Appends piece `id` of `job` (bytes `start`–`end`; `last` closes the file) to `numbers`. */
export function encodePiece(
  numbers: number[],
  id: number,
  job: FileJob,
  start: number,
  end: number,
  last: boolean,
): void {
  numbers.push(
    id,
    job.mode,
    job.chmod ?? -1,
    job.owner?.uid ?? -1,
    job.owner?.gid ?? -1,
    job.mtime,
    start,
    end,
    last ? 1 : 0,
  );
}

/**
 * One directory of a finished tree to hardlink or copy into a copy of it (whose directories
 * exist): `files` and `others` are NUL-separated names, `key` the directory's path in the tree.
 * A copy keeps modes and times, and owners when `owner`; its `others` must be symlinks.
 */
export interface LinkBatch {
  readonly kind: "links" | "copies";
  readonly owner?: boolean;
  readonly seq: number;
  readonly from: string;
  readonly to: string;
  readonly key: string;
  readonly files: string;
  readonly others: string;
}

export interface WriterAck {
  readonly seq: number;
  /** Link batches: the print of the regular files linked. */
  readonly print?: TreePrint;
  /** The first failure of this thread; every later op is skipped. */
  readonly error?: WriteFailure;
}

/** File data goes to a writer in pieces of about this size (a file's last piece may be smaller). */
export const PIECE = 256 * 1024;
/**
 * A batch is sent once it holds BATCH_BYTES of data or BATCH_PIECES pieces, or at the next turn
 * of the event loop (so that the writers never wait for a batch to fill).
 */
const BATCH_BYTES = 512 * 1024;
const BATCH_PIECES = 256;
/**
 * Each lane's ring. A batch is at most BATCH_BYTES plus a piece and a chunk (the archive pauses
 * while a full batch waits for room), so several fit.
 */
const RING_BYTES = 4 * 1024 * 1024;
/**
 * Queued for the writers before the archive is paused: file data, and files (a layer of tiny
 * files holds little data but a string, a job and a set entry per file).
 */
const BACKLOG_BYTES = 8 * 1024 * 1024;
const BACKLOG_FILES = 2048;

export interface WriteFailure {
  readonly host: string;
  readonly code?: string;
  readonly message: string;
}

interface Lane {
  readonly worker: Worker;
  hosts: string[];
  numbers: number[];
  /** Hosts of the files the batch closes. */
  closes: string[];
  chunks: Uint8Array[];
  bytes: number;
  readonly ring: Uint8Array;
  /** Ring positions as running totals: bytes placed so far, and freed by acknowledgements. */
  head: number;
  tail: number;
  /** Sent and not yet acknowledged: their bytes, where their ring space ends, the files they close. */
  readonly sent: Array<{ seq: number; bytes: number; end: number; closed: string[] }>;
}

/** A full batch still unsent: its ring has no room until the writer acknowledges more. */
function waitsForRoom(lane: Lane): boolean {
  return lane.bytes >= BATCH_BYTES;
}

/**
 * Writer threads (see file-writer-worker.ts) fed in batches. A directory always goes to the same
 * thread, so threads do not contend for one directory's lock and a file's pieces stay in order.
 * The caller learns through `settled` when a file is on disk, and waits with `drained()` before
 * anything that must see every file so far (a removal, the end of a layer).
 */
export class FileWriters {
  private readonly lanes: Lane[];
  private seq = 0;
  private nextId = 0;
  /** Bytes of file data queued and not yet written. */
  private inflight = 0;
  private flushScheduled = false;
  private failure: WriteFailure | undefined;
  private quiet: Array<() => void> = [];
  private readonly printer = new TreePrinter();
  private nextLinkLane = 0;
  /** Files queued and not yet closed by a writer. */
  private files = 0;
  private waiters: Array<{ idle: boolean; resolve: () => void; reject: (failure: WriteFailure) => void }> =
    [];

  /** One thread per core, at least two: creation in two directories at once pays off even on one. */
  constructor(
    private readonly settled: (host: string) => void,
    count = Math.min(4, Math.max(2, availableParallelism())),
  ) {
    this.lanes = Array.from({ length: count }, () => {
      // The threads hold little: a small heap keeps the process's memory down.
      const ring = new SharedArrayBuffer(RING_BYTES);
      const worker = new Worker(new URL("./file-writer-worker.js", import.meta.url), {
        workerData: { ring } satisfies WriterInit,
        resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
      });
      const lane: Lane = {
        worker,
        hosts: [],
        numbers: [],
        closes: [],
        chunks: [],
        bytes: 0,
        ring: new Uint8Array(ring),
        head: 0,
        tail: 0,
        sent: [],
      };
      worker.on("message", (ack: WriterAck) => this.acknowledged(lane, ack));
      worker.on("error", (error) =>
        this.fail({ host: "", message: `a file-writer thread failed: ${error.message}` }),
      );
      return lane;
    });
  }

  /** The writers are behind: pause the archive until `caughtUp()`. */
  get backlogged(): boolean {
    return this.inflight > BACKLOG_BYTES || this.files > BACKLOG_FILES || this.lanes.some(waitsForRoom);
  }

  private halfway(): boolean {
    return (
      this.inflight <= BACKLOG_BYTES / 2 && this.files <= BACKLOG_FILES / 2 && !this.lanes.some(waitsForRoom)
    );
  }

  /** A new file id; every piece of one file goes with the same id and job. */
  newFile(): number {
    return this.nextId++;
  }

  /** Queues `data` for file `id` (created by its first piece); `last` closes it with its metadata. */
  write(id: number, job: FileJob, data: readonly Uint8Array[], last: boolean): void {
    if (this.failure !== undefined) return;
    const lane = this.laneFor(job.host);
    const start = lane.bytes;
    for (const chunk of data) {
      lane.chunks.push(chunk);
      lane.bytes += chunk.length;
    }
    this.inflight += lane.bytes - start;
    lane.hosts.push(job.host);
    encodePiece(lane.numbers, id, job, start, lane.bytes, last);
    if (last) {
      lane.closes.push(job.host);
      this.files++;
    }
    if (lane.bytes >= BATCH_BYTES || lane.hosts.length >= BATCH_PIECES) this.send(lane);
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /**
   * Hardlinks the entries of directory `from` (key `key` in the tree) into `to`, which exists;
   * regular files are fingerprinted on the way (see `linkedPrint`). Wait with `drained()`.
   */
  link(from: string, to: string, key: string, files: readonly string[], others: readonly string[]): void {
    this.entries({ kind: "links" }, from, to, key, files, others);
  }

  /**
   * Copies the entries of directory `from` into `to`, which exists: regular files (reflinked
   * where the filesystem can) and symlinks, with their modes and times, and owners when `owner`.
   * Wait with `drained()`.
   */
  copy(
    from: string,
    to: string,
    files: readonly string[],
    symlinks: readonly string[],
    owner: boolean,
  ): void {
    this.entries({ kind: "copies", owner }, from, to, "", files, symlinks);
  }

  private entries(
    how: Pick<LinkBatch, "kind" | "owner">,
    from: string,
    to: string,
    key: string,
    files: readonly string[],
    others: readonly string[],
  ): void {
    if (this.failure !== undefined) return;
    const lane = this.lanes[this.nextLinkLane++ % this.lanes.length] as Lane;
    const batch: LinkBatch = {
      ...how,
      seq: this.seq++,
      from,
      to,
      key,
      files: files.join("\0"),
      others: others.join("\0"),
    };
    lane.sent.push({ seq: batch.seq, bytes: 0, end: lane.head, closed: [] });
    lane.worker.postMessage(batch);
  }

  /** The print of the files linked so far. */
  linkedPrint(): TreePrint {
    return this.printer.print;
  }

  /** Resolves once the backlog is down to half; rejects if a write failed. */
  caughtUp(): Promise<void> {
    this.flush();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.halfway()) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ idle: false, resolve, reject }));
  }

  /** Every file queued so far is written and closed; rejects if a write failed. */
  drained(): Promise<void> {
    this.flush();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.idle()) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ idle: true, resolve, reject }));
  }

  /** Resolves when no batch is out, failed or not: nothing is writing any more. */
  stopped(): Promise<void> {
    if (this.failure === undefined) this.flush();
    else for (const lane of this.lanes) this.reset(lane);
    if (this.lanes.every((lane) => lane.sent.length === 0)) return Promise.resolve();
    return new Promise((resolve) => this.quiet.push(resolve));
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.worker.terminate()));
  }

  private idle(): boolean {
    return this.lanes.every((lane) => lane.sent.length === 0 && lane.hosts.length === 0);
  }

  private laneFor(host: string): Lane {
    const parent = host.slice(0, host.lastIndexOf("/"));
    let hash = 0;
    for (let i = 0; i < parent.length; i++) hash = (hash * 31 + parent.charCodeAt(i)) | 0;
    return this.lanes[Math.abs(hash) % this.lanes.length] as Lane;
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const lane of this.lanes) if (lane.hosts.length > 0) this.send(lane);
  }

  /** Where in the ring `bytes` fit in one piece, if they do now; undefined until acks free room. */
  private place(lane: Lane, bytes: number): number | undefined {
    // Never: the archive pauses long before (see RING_BYTES); a bug if it does not.
    if (bytes > RING_BYTES)
      throw new UnpackError(`A write batch of ${bytes} bytes does not fit the writer's ring.`);
    const at = lane.head % RING_BYTES;
    const skip = at + bytes > RING_BYTES ? RING_BYTES - at : 0;
    if (lane.head + skip + bytes - lane.tail > RING_BYTES) return undefined;
    lane.head += skip + bytes;
    return skip === 0 ? at : 0;
  }

  private send(lane: Lane): void {
    const offset = this.place(lane, lane.bytes);
    if (offset === undefined) return; // Sent when an acknowledgement frees room (see acknowledged).
    let at = offset;
    for (const chunk of lane.chunks) {
      lane.ring.set(chunk, at);
      at += chunk.length;
    }
    const numbers = Float64Array.from(lane.numbers);
    for (let i = 0; i < numbers.length; i += PIECE_FIELDS) {
      numbers[i + 6] = (numbers[i + 6] as number) + offset;
      numbers[i + 7] = (numbers[i + 7] as number) + offset;
    }
    const batch: WriterBatch = { kind: "files", seq: this.seq++, hosts: lane.hosts.join("\0"), numbers };
    lane.sent.push({ seq: batch.seq, bytes: lane.bytes, end: lane.head, closed: lane.closes });
    lane.worker.postMessage(batch, [numbers.buffer]);
    this.reset(lane);
  }

  private reset(lane: Lane): void {
    lane.hosts = [];
    lane.numbers = [];
    lane.closes = [];
    lane.chunks = [];
    lane.bytes = 0;
  }

  private acknowledged(lane: Lane, ack: WriterAck): void {
    if (ack.print !== undefined) this.printer.merge(ack.print);
    const sent = lane.sent.shift();
    if (sent === undefined || sent.seq !== ack.seq) {
      this.fail({ host: "", message: "a file-writer thread answered out of turn" });
      return;
    }
    this.inflight -= sent.bytes;
    lane.tail = sent.end;
    if (lane.hosts.length > 0 && this.failure === undefined && ack.error === undefined) this.send(lane);
    if (this.lanes.every((other) => other.sent.length === 0))
      for (const resolve of this.quiet.splice(0)) resolve();
    if (ack.error !== undefined) {
      this.fail(ack.error);
      return;
    }
    this.files -= sent.closed.length;
    for (const host of sent.closed) this.settled(host);
    const idle = this.idle();
    const halfway = this.halfway();
    this.waiters = this.waiters.filter((waiter) => {
      const done = waiter.idle ? idle : halfway;
      if (done) waiter.resolve();
      return !done;
    });
  }

  private fail(failure: WriteFailure): void {
    this.failure ??= failure;
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
  }
}
