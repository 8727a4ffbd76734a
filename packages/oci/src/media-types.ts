/** Media types of the documents and blobs we understand. */
export const MediaType = {
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifestSchema1: "application/vnd.docker.distribution.manifest.v1+json",
  DockerManifestSchema1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export type IndexMediaType = typeof MediaType.OciIndex | typeof MediaType.DockerManifestList;
export type ManifestMediaType = typeof MediaType.OciManifest | typeof MediaType.DockerManifest;

export function isIndexMediaType(mediaType: string): mediaType is IndexMediaType {
  return mediaType === MediaType.OciIndex || mediaType === MediaType.DockerManifestList;
}

export function isManifestMediaType(mediaType: string): mediaType is ManifestMediaType {
  return mediaType === MediaType.OciManifest || mediaType === MediaType.DockerManifest;
}

/** What registries are told we accept, most specific first. */
export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
].join(", ");

export type LayerCompression = "gzip" | "zstd" | "none";

/** How a layer blob is compressed, from its media type; undefined when it is not a layer we know. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  if (mediaType.endsWith("+gzip") || mediaType.endsWith(".tar.gzip")) return "gzip";
  if (mediaType.endsWith("+zstd") || mediaType.endsWith(".tar.zstd")) return "zstd";
  if (mediaType.endsWith(".tar") || mediaType === "application/vnd.docker.image.rootfs.diff.tar")
    return "none";
  return undefined;
}
