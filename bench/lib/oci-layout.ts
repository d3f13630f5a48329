/**
 * An OCI image layout (image-spec's layout: `oci-layout`, `index.json`, `blobs/sha256/…`) holding
 * one manifest whose only layer is a given file — hard-linked, so a tool copying the layout
 * reads the very bytes (and page cache) imgctl reads from the store.
 */
import { createHash } from 'node:crypto';
import { link, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Writes the layout at `dir` with `file` (of `size` bytes, sha256 `hex`) as its layer, tagged `tag`. */
export async function writeOciLayout(
  dir: string,
  layer: { file: string; hex: string; size: number },
  tag: string,
): Promise<void> {
  const blobs = join(dir, 'blobs/sha256');
  await mkdir(blobs, { recursive: true });
  await link(layer.file, join(blobs, layer.hex));
  const put = async (value: unknown) => {
    const bytes = Buffer.from(JSON.stringify(value));
    await writeFile(join(blobs, sha256(bytes)), bytes);
    return { digest: `sha256:${sha256(bytes)}`, size: bytes.length };
  };
  const config = await put({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [`sha256:${layer.hex}`] },
  });
  const manifestType = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = await put({
    schemaVersion: 2,
    mediaType: manifestType,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: `sha256:${layer.hex}`,
        size: layer.size,
      },
    ],
  });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: manifestType,
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}
