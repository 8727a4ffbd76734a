import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { Worker } from "node:worker_threads";
import { type Digest, parseDigest } from "../digest.js";
import {
  DigestMismatchError,
  InvalidLayerError,
  type OciError,
  SizeLimitError,
  UnpackError,
  UnsafeLayerError,
} from "../errors.js";
import type { LayerBlob } from "./archive.js";
import type { ChangesetOptions, UnpackReport } from "./changeset.js";
import { restoreModes } from "./rootfs.js";
import type { TreePrint } from "./tree-print.js";
import type { SerializedError, WorkerInit, WorkerReply, WorkerRequest } from "./unpack-worker.js";

const ERRORS: Record<string, new (message: string, options?: { hint?: string }) => OciError> = {
  UNSAFE_LAYER: UnsafeLayerError,
  INVALID_LAYER: InvalidLayerError,
  SIZE_LIMIT: SizeLimitError,
  DIGEST_MISMATCH: DigestMismatchError,
  UNPACK: UnpackError,
};

function revive(error: SerializedError): OciError {
  const ErrorClass = ERRORS[error.code] ?? UnpackError;
  return new ErrorClass(error.message, error.hint === undefined ? {} : { hint: error.hint });
}

/**
 * Layers applied on a worker thread, one after another, while the caller may still be fetching
 * later ones. The root is created 0700: an image's setuid files and devices are nobody else's.
 */
export class LayerApplication {
  private readonly pending: Array<{ resolve: (reply: WorkerReply) => void; reject: (e: Error) => void }> = [];
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (reply: WorkerReply) => {
      const waiter = this.pending.shift();
      if (reply.type === "error") {
        this.failure = revive(reply.error);
        waiter?.reject(this.failure);
        for (const other of this.pending.splice(0)) other.reject(this.failure);
        return;
      }
      waiter?.resolve(reply);
    });
    const crashed = (error: Error) => {
      this.failure ??= new UnpackError(`The unpack thread failed: ${error.message}.`);
      for (const waiter of this.pending.splice(0)) waiter.reject(this.failure);
    };
    worker.on("error", crashed);
    worker.on("exit", (code) => crashed(new Error(`it exited with code ${code}`)));
  }

  static async start(root: string, options: ChangesetOptions = {}): Promise<LayerApplication> {
    await mkdir(root, { recursive: true, mode: 0o700 });
    const init: WorkerInit = { root: resolve(root), options };
    const worker = new Worker(new URL("./unpack-worker.js", import.meta.url), {
      workerData: init,
      // Most of what it allocates dies young; a smaller nursery costs no measurable time here
      // and keeps ~30 MiB off the peak RSS.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    return new LayerApplication(worker);
  }

  private request(message: WorkerRequest): Promise<WorkerReply> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.worker.postMessage(message);
    });
  }

  async apply(layer: LayerBlob): Promise<void> {
    await this.request({ type: "layer", layer });
  }

  /**
   * Applies directory metadata, ends the thread and reports what was done. With `linkInto`, the
   * tree is also hardlinked there (see `ChangesetApplier.finish`): `print` says it was.
   */
  async finish(linkInto?: string): Promise<{ report: UnpackReport; print?: TreePrint }> {
    const reply = await this.request({ type: "finish", ...(linkInto === undefined ? {} : { linkInto }) });
    await this.close();
    if (reply.type !== "done") throw new UnpackError("The unpack thread answered out of turn.");
    return reply;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners("exit");
    await this.worker.terminate();
  }
}

/**
 * Applies layer blobs in order to `root` (created if missing). On failure the root holds a
 * partial tree: callers unpack into a directory they can discard, as `unpackImage` does.
 */
export async function applyLayers(
  root: string,
  layers: readonly LayerBlob[],
  options: ChangesetOptions = {},
): Promise<UnpackReport> {
  const application = await LayerApplication.start(root, options);
  try {
    for (const layer of layers) await application.apply(layer);
    const { report } = await application.finish();
    restoreModes(resolve(root), report.loosenedModes);
    return report;
  } finally {
    await application.close();
  }
}

/** ChainID of the layers so far (image-spec): the identity of a root filesystem. */
export function chainId(diffIds: readonly string[]): Digest {
  let chain = "";
  for (const diffId of diffIds)
    chain =
      chain === "" ? diffId : `sha256:${createHash("sha256").update(`${chain} ${diffId}`).digest("hex")}`;
  return parseDigest(chain);
}
