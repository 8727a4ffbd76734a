import { parentPort, workerData } from "node:worker_threads";
import { OciError } from "../errors.js";
import type { LayerBlob } from "./archive.js";
import { ChangesetApplier, type ChangesetOptions, type UnpackReport } from "./changeset.js";
import type { TreePrint } from "./tree-print.js";

/**
 * The unpack thread: applies layers with synchronous filesystem calls while the main thread
 * keeps downloading later layers. Messages: `layer` (apply one, in order) and `finish`.
 */

export interface WorkerInit {
  root: string;
  options: ChangesetOptions;
}

export type WorkerRequest = { type: "layer"; layer: LayerBlob } | { type: "finish"; linkInto?: string };

export type SerializedError = { code: string; message: string; hint?: string };

export type WorkerReply =
  | { type: "layer-done" }
  | { type: "done"; report: UnpackReport; print?: TreePrint }
  | { type: "error"; error: SerializedError };

function serialize(error: unknown): SerializedError {
  if (error instanceof OciError)
    return { code: error.code, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  return { code: "UNPACK", message: (error as Error).message ?? String(error) };
}

const port = parentPort;
if (port !== null) {
  const init = workerData as WorkerInit;
  const applier = new ChangesetApplier(init.root, init.options);
  let queue = Promise.resolve();
  port.on("message", (request: WorkerRequest) => {
    queue = queue.then(async () => {
      try {
        if (request.type === "layer") {
          await applier.apply(request.layer);
          port.postMessage({ type: "layer-done" } satisfies WorkerReply);
        } else {
          port.postMessage({
            type: "done",
            ...(await applier.finish(request.linkInto)),
          } satisfies WorkerReply);
        }
      } catch (error) {
        port.postMessage({ type: "error", error: serialize(error) } satisfies WorkerReply);
      }
    });
  });
}
