/**
 * `imgctl import oci://HOST/REPO[:TAG|@DIGEST]`: an image pushed by `imgctl push`, staged for
 * import.ts as an archive would be — `image/` from the config's files, `blobs/<hex>` from the
 * layers. The manifest and the config are checked (oci-artifact.ts) before a layer is fetched;
 * each layer is streamed into its disk's file (all-zero blocks left as holes), hashed on the way
 * and checked against its digest, and a segmented disk against its whole sha256 too. Disks the
 * store already holds are not fetched.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { exists, storePaths } from '../store/store.ts';
import { manifestReference, parseOciReference } from '../registry/reference.ts';
import { openRegistry } from '../registry/registry.ts';
import type { OciDescriptor, Registry, RegistryOptions } from '../registry/types.ts';
import { writeNonZero } from './blobs.ts';
import { checkSpace, type ExtractOptions, imageExists } from './import-extract.ts';
import {
  diskLayers,
  OCI_MANIFEST,
  type OpenRegistry,
  parseImageConfig,
  parseImageManifest,
} from './oci-artifact.ts';
import { type Manifest, PACK_FORMAT } from './pack.ts';

export interface OciImportOptions {
  /** how to reach the registry: credentials file, CA, plain http, log */
  registry?: Omit<RegistryOptions, 'onProgress'>;
  /** the registry client (default registry/registry.ts's; tests pass a fake) */
  openRegistry?: OpenRegistry;
  /** import under this name (checked early: a taken name fails before any layer is fetched) */
  as?: string;
  force?: boolean;
}

/** broken layer downloads in a row (no byte gained) before the import gives up */
const MAX_STALLED = 3;
const WRITE_CHUNK = 1024 * 1024;

/**
 * Fetches the image `source` names into `stage` (`image/…`, `blobs/<hex>`); returns what an
 * archive's manifest would say, and the manifest's digest.
 */
export async function stageOciImage(
  storeDir: string,
  source: string,
  stage: string,
  options: OciImportOptions & ExtractOptions,
): Promise<{ manifest: Manifest; digest: string }> {
  const ref = parseOciReference(source);
  const registry = (options.openRegistry ?? openRegistry)(ref, options.registry ?? {});
  const fetched = await registry.getManifest(ref.repository, manifestReference(ref), [
    OCI_MANIFEST,
  ]);
  const manifest = parseImageManifest(fetched.bytes);
  const configFile = join(stage, 'config.json');
  await registry.pullBlob(ref.repository, manifest.config.digest, manifest.config.size, configFile);
  const { config, contents, blobs } = parseImageConfig(await readFile(configFile), manifest);
  const name = options.as ?? config.image;
  if (!options.force && (await exists(storePaths.imageDir(storeDir, name))))
    throw imageExists(name);

  const missing: typeof blobs = [];
  for (const blob of blobs)
    if (!(await exists(storePaths.blobFile(storeDir, blob.sha256)))) missing.push(blob);
  const fileBytes = config.files.reduce((n, f) => n + f.size, 0);
  const total = fileBytes + missing.reduce((n, b) => n + b.size, 0);
  await checkSpace(stage, total);

  for (const dir of config.dirs) await mkdir(join(stage, 'image', dir), { recursive: true });
  for (const file of config.files) {
    const path = join(stage, 'image', file.path);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, contents.get(file.path)!, { mode: file.mode, flag: 'wx' });
  }
  let done = fileBytes;
  options.onProgress?.({ done, total });

  for (const blob of missing) {
    const disk = config.disks.find((d) => d.sha256 === blob.sha256)!;
    const base = done;
    await fetchDisk(registry, ref.repository, {
      layers: diskLayers(manifest, disk),
      sha256: blob.sha256,
      dest: join(stage, 'blobs', blob.sha256),
      onBytes: (n) => options.onProgress?.({ done: base + n, total }),
      log: options.registry?.log,
    });
    done += blob.size;
  }
  return {
    manifest: {
      format: PACK_FORMAT,
      image: config.image,
      revision: config.revision,
      dirs: config.dirs,
      files: config.files.map(({ path, size, sha256, mode }) => ({ path, size, sha256, mode })),
      blobs,
    },
    digest: fetched.digest,
  };
}

interface DiskFetch {
  layers: OciDescriptor[];
  sha256: string;
  dest: string;
  /** bytes of this disk written so far */
  onBytes: (done: number) => void;
  log?: (line: string) => void;
}

/**
 * Streams a disk's layers into `dest`, one after the other, all-zero blocks left as holes. Each
 * layer is hashed as it arrives and must match its digest, and the whole disk its sha256
 * (INTEGRITY otherwise; a disk of one layer has that layer's digest, and is hashed once); a
 * download broken off resumes from the byte it reached. One buffer is written while the next
 * fills.
 */
async function fetchDisk(registry: Registry, repository: string, disk: DiskFetch): Promise<void> {
  const handle = await open(disk.dest, 'wx', 0o644);
  const single = disk.layers.length === 1 && disk.layers[0]!.digest === `sha256:${disk.sha256}`;
  const whole = single ? undefined : createHash('sha256');
  const buffers = [Buffer.allocUnsafe(WRITE_CHUNK), Buffer.allocUnsafe(WRITE_CHUNK)];
  let buffer = buffers[0]!;
  let writing: Promise<unknown> = Promise.resolve();
  let position = 0;
  try {
    for (const layer of disk.layers) {
      const hash = createHash('sha256');
      let done = 0;
      let filled = 0;
      /** writes what the buffer holds at the layer's offset `done - filled`, from the other one next */
      const flush = async () => {
        await writing;
        writing = writeNonZero(handle, buffer, filled, position + done - filled);
        buffer = buffer === buffers[0] ? buffers[1]! : buffers[0]!;
        filled = 0;
      };
      for (let stalled = 0; done < layer.size;) {
        const from = done;
        try {
          const stream = await registry.openBlob(repository, layer.digest, done);
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            if (done + chunk.length > layer.size)
              throw new ImgctlError(
                'INTEGRITY',
                `refused the artifact: layer ${layer.digest} is longer than the ${layer.size} bytes its manifest declares`,
              );
            hash.update(chunk);
            whole?.update(chunk);
            for (let at = 0; at < chunk.length;) {
              const n = chunk.copy(buffer, filled, at);
              filled += n;
              at += n;
              done += n;
              if (filled === buffer.length) await flush();
            }
            disk.onBytes(position + done);
          }
          await flush();
          if (done < layer.size) throw new Error(`the body ended at byte ${done} of ${layer.size}`);
        } catch (error) {
          if (error instanceof ImgctlError) throw error;
          await flush();
          stalled = done > from ? 0 : stalled + 1;
          if (stalled >= MAX_STALLED)
            throw new ImgctlError(
              'FAILED',
              `fetching layer ${layer.digest} from ${repository} broke off: ${(error as Error).message}`,
              { cause: error, hint: 'nothing was imported; run the same import again' },
            );
          disk.log?.(
            `layer ${layer.digest.slice(0, 19)}: ${(error as Error).message}; resuming at byte ${done}`,
          );
        }
      }
      await writing;
      const digest = `sha256:${hash.digest('hex')}`;
      if (digest !== layer.digest) throw mismatch(`layer ${layer.digest}`, digest);
      position += layer.size;
    }
    await handle.truncate(position);
    await handle.sync();
  } finally {
    await writing.catch(() => undefined);
    await handle.close();
  }
  const digest = whole ? `sha256:${whole.digest('hex')}` : `sha256:${disk.sha256}`;
  if (digest !== `sha256:${disk.sha256}`) throw mismatch(`disk ${disk.sha256}`, digest);
}

function mismatch(what: string, digest: string): ImgctlError {
  return new ImgctlError(
    'INTEGRITY',
    `refused the artifact: the content of ${what} hashes to ${digest}`,
    { hint: "the registry's copy is damaged or was altered; nothing was changed" },
  );
}
