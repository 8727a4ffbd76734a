import {
  Containers,
  clientFor,
  type Descriptor,
  defaultDataDir,
  formatReference,
  hostPlatform,
  type ImageConfig,
  type ImageManifest,
  NotFoundError,
  ociLayout,
  type PruneResult,
  parseDigest,
  parseImageConfig,
  parseManifestDocument,
  parsePlatform,
  parsePushSource,
  parseReference,
  pruneRootfsCache,
  pull,
  push,
  Store,
  selectPlatformManifest,
  unpackImage,
  verifyBytes,
  withIdentifier,
} from "@locald/oci";
import { type Command, InvalidArgumentError } from "commander";
import { clientOptions, type GlobalFlags } from "../options.js";
import { formatBytes, type Output, ProgressRenderer } from "../ui.js";

export interface CommandContext {
  output: Output;
  /** The command line as given, for commands that read `--` themselves. */
  argv: readonly string[];
  flags: () => GlobalFlags;
  /** Set by commands whose exit code is not their own (a container's). */
  exitCode?: number;
}

/** Unpacked roots that containers stand on (their overlay's lower layer): never pruned. */
const containerRoots = () => new Containers(defaultDataDir()).cacheKeysInUse();

const log = (output: Output) => (line: string) => output.stderr.write(`${line}\n`);

export function registerImageCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const image = program
    .command("image")
    .description("Pull, push, inspect and manage images in the local store");

  image
    .command("pull")
    .description("Pull an image into the local store, or into an OCI layout with --layout")
    .argument("<ref>", "image reference, e.g. ubuntu:24.04 or 127.0.0.1:5000/app:1")
    .option(
      "--platform <os/arch[/variant]>",
      "platform to pull from a multi-platform image (default: this machine's)",
    )
    .option("--layout <dir>", "write an OCI image layout to this directory instead of the store")
    .option("--concurrency <n>", "blobs downloaded at once", positiveInteger, 4)
    .option("-q, --quiet", "print only the digest")
    .option("--json", "print the result as JSON")
    .action(
      async (
        ref: string,
        opts: { platform?: string; layout?: string; concurrency: number; quiet?: boolean; json?: boolean },
      ) => {
        const renderer = opts.quiet || opts.json ? undefined : new ProgressRenderer(output.stderr, "Pulling");
        const result = await pull(ref, {
          ...clientOptions(context.flags(), log(output)),
          ...(opts.platform ? { platform: opts.platform } : {}),
          ...(opts.layout ? { to: ociLayout(opts.layout) } : {}),
          concurrency: opts.concurrency,
          ...(renderer ? { onEvent: renderer.onEvent } : {}),
        });
        renderer?.finish();
        const name = formatReference(result.reference);
        if (opts.json) {
          output.stdout.write(
            `${JSON.stringify({ reference: name, digest: result.digest, sourceDigest: result.sourceDigest, mediaType: result.descriptor.mediaType, platform: result.platform ?? null, upToDate: result.upToDate, bytesTransferred: result.bytesTransferred, layout: opts.layout ?? null })}\n`,
          );
        } else if (opts.quiet) {
          output.stdout.write(`${result.digest}\n`);
        } else {
          output.stdout.write(
            `Digest: ${result.digest}\n${result.upToDate ? "Up to date" : "Pulled"}: ${name}${opts.layout ? ` → ${opts.layout}` : ""}\n`,
          );
        }
      },
    );

  image
    .command("unpack")
    .description("Write an image's root filesystem into a directory (pulling the image if needed)")
    .argument("<ref>", "image reference")
    .argument("<dir>", "target directory; created, or empty")
    .option(
      "--path <path>",
      "only this subtree of the image, e.g. /cnb (repeatable)",
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option("--platform <os/arch[/variant]>", "platform to unpack from a multi-platform image")
    .option("--max-bytes <n>", "refuse images that unpack to more bytes than this", positiveInteger)
    .option("--max-entries <n>", "refuse images with more archive entries than this", positiveInteger)
    .option("--no-cache", "extract again even if this image was unpacked before")
    .option(
      "--pull <when>",
      "missing (default): use the stored image if there is one; always: ask the registry",
      pullPolicy,
      "missing" as const,
    )
    .option("-q, --quiet", "print only the target directory")
    .option("--json", "print the result as JSON")
    .action(
      async (
        ref: string,
        dir: string,
        opts: {
          path: string[];
          platform?: string;
          maxBytes?: number;
          maxEntries?: number;
          cache: boolean;
          pull: "missing" | "always";
          quiet?: boolean;
          json?: boolean;
        },
      ) => {
        const renderer = opts.quiet || opts.json ? undefined : new ProgressRenderer(output.stderr, "Pulling");
        const result = await unpackImage(ref, dir, {
          ...clientOptions(context.flags(), log(output)),
          ...(opts.platform ? { platform: opts.platform } : {}),
          pull: opts.pull,
          ...(opts.path.length > 0 ? { paths: opts.path } : {}),
          unpackLimits: {
            ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}),
            ...(opts.maxEntries ? { maxEntries: opts.maxEntries } : {}),
          },
          ...(opts.cache ? {} : { cacheDir: false as const }),
          ...(renderer ? { onEvent: renderer.onEvent } : {}),
        });
        renderer?.finish();
        const { report } = result;
        if (opts.json) {
          output.stdout.write(
            `${JSON.stringify({ reference: formatReference(result.reference), digest: result.digest, dir: result.dir, cached: result.cached, entries: report.entries, bytes: report.bytes, ownershipSkipped: report.ownershipSkipped, skipped: report.skipped })}\n`,
          );
          return;
        }
        if (opts.quiet) {
          output.stdout.write(`${result.dir}\n`);
          return;
        }
        for (const skipped of report.skipped)
          output.stderr.write(`Skipped ${skipped.path}: ${skipped.reason}\n`);
        output.stdout.write(
          `Unpacked ${formatReference(result.reference)} (${result.digest}) into ${result.dir}: ${report.entries} entries, ${formatBytes(report.bytes)}${result.cached ? ", from the cache" : ""}\n`,
        );
        if (report.ownershipSkipped)
          output.stderr.write("Not running as root: file ownership from the image was not applied.\n");
      },
    );

  image
    .command("push")
    .description("Push an image from the local store or an OCI layout directory to a registry")
    .argument("<source>", "image in the store, or an OCI layout directory (DIR or DIR:name)")
    .argument("<ref>", "destination reference")
    .option("--chunk-size <bytes>", "upload in chunks of this many bytes", positiveInteger)
    .option("-q, --quiet", "print only the digest")
    .option("--json", "print the result as JSON")
    .action(
      async (source: string, ref: string, opts: { chunkSize?: number; quiet?: boolean; json?: boolean }) => {
        const renderer = opts.quiet || opts.json ? undefined : new ProgressRenderer(output.stderr, "Pushing");
        const result = await push(await parsePushSource(source), ref, {
          ...clientOptions(context.flags(), log(output)),
          ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
          ...(renderer ? { onEvent: renderer.onEvent } : {}),
        });
        renderer?.finish();
        const name = formatReference(result.reference);
        if (opts.json) output.stdout.write(`${JSON.stringify({ reference: name, digest: result.digest })}\n`);
        else if (opts.quiet) output.stdout.write(`${result.digest}\n`);
        else output.stdout.write(`Pushed ${name}\nDigest: ${result.digest}\n`);
      },
    );

  image
    .command("inspect")
    .description("Show an image's manifest and config (from the store, else from its registry)")
    .argument("<ref>", "image reference")
    .option("--platform <os/arch[/variant]>", "platform to show for a multi-platform image")
    .option("--json", "print as JSON")
    .option("--raw <what>", "print the exact bytes of the manifest or config", (v) => {
      if (v !== "manifest" && v !== "config")
        throw new InvalidArgumentError('must be "manifest" or "config".');
      return v;
    })
    .action(async (ref: string, opts: { platform?: string; json?: boolean; raw?: "manifest" | "config" }) => {
      const inspected = await inspectImage(ref, opts.platform, context);
      if (opts.raw === "manifest") {
        output.stdout.write(inspected.manifestBytes);
        return;
      }
      if (opts.raw === "config") {
        output.stdout.write(inspected.configBytes);
        return;
      }
      const { manifest, config } = inspected;
      const summary = {
        reference: inspected.name,
        digest: inspected.descriptor.digest,
        mediaType: inspected.descriptor.mediaType,
        source: inspected.source,
        platform: [config.os, config.architecture, config.variant].filter(Boolean).join("/"),
        created: config.created ?? null,
        size: manifest.layers.reduce((sum, layer) => sum + layer.size, 0),
        config: config.config ?? {},
        layers: manifest.layers.map((layer, i) => ({
          digest: layer.digest,
          size: layer.size,
          mediaType: layer.mediaType,
          diffId: config.rootfs.diff_ids[i] ?? null,
        })),
      };
      if (opts.json) {
        output.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const c = config.config ?? {};
      const lines = [
        `Reference:  ${summary.reference}`,
        `Digest:     ${summary.digest}`,
        `Media type: ${summary.mediaType}`,
        `Platform:   ${summary.platform}`,
        `Created:    ${summary.created ?? "-"}`,
        `Size:       ${formatBytes(summary.size)} in ${manifest.layers.length} layer(s)`,
        `Entrypoint: ${JSON.stringify(c.Entrypoint ?? null)}`,
        `Cmd:        ${JSON.stringify(c.Cmd ?? null)}`,
        `WorkingDir: ${c.WorkingDir || "/"}`,
        `User:       ${c.User || "-"}`,
        `Env:        ${(c.Env ?? []).join(" ") || "-"}`,
        `Labels:     ${Object.keys(c.Labels ?? {}).length}`,
        ...manifest.layers.map((layer) => `  ${layer.digest}  ${formatBytes(layer.size)}`),
      ];
      output.stdout.write(`${lines.join("\n")}\n`);
    });

  image
    .command("ls")
    .alias("list")
    .description("List images in the local store")
    .option("--json", "print as JSON")
    .option("-q, --quiet", "print only names")
    .action(async (opts: { json?: boolean; quiet?: boolean }) => {
      const store = await Store.open();
      const images = await store.list();
      const rows = await Promise.all(
        images.map(async (img) => ({
          name: img.name,
          digest: img.descriptor.digest,
          platform: img.platform ?? null,
          size: await store.imageSize(img.descriptor).catch(() => -1),
          pulled: img.pulledAt ?? null,
        })),
      );
      if (opts.json) {
        output.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (opts.quiet) {
        for (const row of rows) output.stdout.write(`${row.name}\n`);
        return;
      }
      const width = Math.max(10, ...rows.map((r) => r.name.length));
      output.stdout.write(`${"REFERENCE".padEnd(width)}  DIGEST        PLATFORM       SIZE\n`);
      for (const row of rows) {
        output.stdout.write(
          `${row.name.padEnd(width)}  ${row.digest.slice(7, 19)}  ${(row.platform ?? "-").padEnd(13)}  ${row.size < 0 ? "?" : formatBytes(row.size)}\n`,
        );
      }
    });

  image
    .command("rm")
    .alias("remove")
    .description("Remove images from the local store (blobs are freed by prune)")
    .argument("<refs...>", "image references")
    .action(async (refs: string[]) => {
      const store = await Store.open();
      const missing: string[] = [];
      for (const ref of refs) {
        const name = formatReference(parseReference(ref));
        if (await store.remove(name)) output.stdout.write(`Untagged: ${name}\n`);
        else missing.push(name);
      }
      if (missing.length > 0)
        throw new NotFoundError(`No such image in the local store: ${missing.join(", ")}.`, {
          hint: "`locald image ls` lists the images there.",
        });
      const pruned = await store.prune();
      if (pruned.removed > 0)
        output.stdout.write(`Deleted ${pruned.removed} blob(s), ${formatBytes(pruned.bytes)}\n`);
      reportLeftovers(output, pruned);
      await pruneCaches(store, output);
    });

  image
    .command("prune")
    .description("Delete blobs no image in the store references, and unpacked roots of removed images")
    .action(async () => {
      const store = await Store.open();
      const pruned = await store.prune();
      output.stdout.write(`Deleted ${pruned.removed} blob(s), reclaimed ${formatBytes(pruned.bytes)}\n`);
      reportLeftovers(output, pruned);
      await pruneCaches(store, output);
    });
}

/** What removed images left in the cache of unpacked roots. */
async function pruneCaches(store: Store, output: Output): Promise<void> {
  const roots = await pruneRootfsCache(store, undefined, { keep: await containerRoots() });
  if (roots.removed > 0) output.stdout.write(`Deleted ${roots.removed} unpacked root(s) from the cache\n`);
}

/** What dead pulls left (partial downloads, locks, leases), when prune removed any. */
function reportLeftovers(output: Output, pruned: PruneResult): void {
  if (pruned.temp.removed > 0)
    output.stdout.write(
      `Deleted ${pruned.temp.removed} partial download(s) and lock(s) of pulls that died, ${formatBytes(pruned.temp.bytes)}\n`,
    );
  if (pruned.leases.removed > 0)
    output.stdout.write(
      `Deleted ${pruned.leases.removed} lease(s) of pulls that died, ${formatBytes(pruned.leases.bytes)}\n`,
    );
}

interface Inspected {
  name: string;
  source: "store" | "registry";
  descriptor: Descriptor;
  manifestBytes: Buffer;
  manifest: ImageManifest;
  configBytes: Buffer;
  config: ImageConfig;
}

async function inspectImage(
  refText: string,
  platformText: string | undefined,
  context: CommandContext,
): Promise<Inspected> {
  const ref = parseReference(refText);
  const name = formatReference(ref);
  const store = await Store.open();
  const local = await store.find(name, platformText);
  if (local !== undefined) {
    const manifestBytes = await store.layout.readBlob(local.descriptor, 4 * 1024 * 1024);
    const document = parseManifestDocument(
      manifestBytes,
      local.descriptor.mediaType,
      `The manifest of ${name}`,
    );
    if (document.kind === "manifest") {
      const configBytes = await store.layout.readBlob(document.manifest.config, 8 * 1024 * 1024);
      const { annotations: _a, ...descriptor } = local.descriptor;
      return {
        name,
        source: "store",
        descriptor,
        manifestBytes,
        manifest: document.manifest,
        configBytes,
        config: parseImageConfig(configBytes, `The config of ${name}`),
      };
    }
  }
  const { client, owned } = clientFor(clientOptions(context.flags(), log(context.output)));
  try {
    let fetched = await client.getManifest(ref);
    if (fetched.document.kind === "index") {
      const platform = platformText ? parsePlatform(platformText) : hostPlatform();
      const child = selectPlatformManifest(fetched.document.index, platform, name);
      fetched = await client.getManifest(withIdentifier(ref, { digest: parseDigest(child.digest) }), child);
    }
    if (fetched.document.kind !== "manifest")
      throw new NotFoundError(`${name} is a nested index; inspect its children by digest.`);
    const manifest = fetched.document.manifest;
    const chunks: Buffer[] = [];
    for await (const chunk of client.blobChunks(ref, manifest.config)) chunks.push(chunk);
    const configBytes = Buffer.concat(chunks);
    verifyBytes(
      configBytes,
      parseDigest(manifest.config.digest),
      manifest.config.size,
      `The config of ${name}`,
    );
    return {
      name,
      source: "registry",
      descriptor: fetched.descriptor,
      manifestBytes: fetched.bytes,
      manifest,
      configBytes,
      config: parseImageConfig(configBytes, `The config of ${name}`),
    };
  } finally {
    if (owned) await client.transport.close();
  }
}

function positiveInteger(value: string): number {
  const number = Number(value);
  if (!Number.isSafeInteger(number) || number <= 0)
    throw new InvalidArgumentError("expected a positive whole number");
  return number;
}

/** `--pull`'s value: when to ask the registry for an image the store may already hold. */
function pullPolicy(value: string): "missing" | "always" {
  if (value === "missing" || value === "always") return value;
  throw new InvalidArgumentError('must be "missing" or "always".');
}
