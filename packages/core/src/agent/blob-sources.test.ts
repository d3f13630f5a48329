import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { PlanDoc } from '../store/types.ts';
import { ImgctlError } from '../util/errors.ts';
import { buildDiskIndex } from '../disks/oci-disk-index.ts';
import { mirroredDownloader, mirrorRepository } from './blob-sources.ts';

const HEX = 'ab'.repeat(32);
const plan = (mirrors?: string[]) =>
  ({ image: { name: 'tiny-linux' }, blob_mirrors: mirrors }) as unknown as PlanDoc;

describe('mirroredDownloader', () => {
  const pulls: string[] = [];
  const log: string[] = [];
  /** registries that have the blob: by HOST/REPO */
  const access = (have: string[]) => ({
    first: ['oci://fast.example/cache'],
    parse: (text: string) => {
      const [registry, ...path] = text.slice('oci://'.length).split('/');
      return { registry: registry!, repository: path.join('/') };
    },
    open: (ref: { registry: string }) =>
      ({
        async pullBlob(repository: string, digest: string, size: number | undefined, dest: string) {
          pulls.push(`${ref.registry}/${repository} ${digest} ${size} ${dest}`);
          if (!have.includes(`${ref.registry}/${repository}`))
            throw new ImgctlError('NOT_FOUND', `${digest} is not in ${repository}`);
          return { size: 42, resumedBytes: 0 };
        },
        async getManifest(repository: string, reference: string) {
          throw new ImgctlError('NOT_FOUND', `${reference} is not in ${repository}`);
        },
      }) as never,
  });
  const server = {
    async downloadBlob(hex: string, dest: string) {
      pulls.push(`server ${hex} ${dest}`);
      return { path: dest, size: 42, sha256: hex, resumedBytes: 0, requests: 1 };
    },
  };

  /** a sink that records each write, and a server that records it was asked to stream */
  const recorder = (size: number) => {
    const written: string[] = [];
    const sink = {
      async write(data: Buffer, offset: number) {
        written.push(`${offset}:${data.toString()}`);
      },
    };
    const streaming = {
      ...server,
      async streamBlob(h: string, _sink?: unknown) {
        written.push('server');
        return { size, sha256: h, requests: 1 };
      },
    };
    return { written, sink, streaming };
  };

  it('names the repository of an image under a mirror', () => {
    expect(mirrorRepository('oci://r.example:5000/imgctl/', 'web')).toBe(
      'oci://r.example:5000/imgctl/web',
    );
    expect(mirrorRepository('oci://r.example/{image}/disks', 'web')).toBe(
      'oci://r.example/web/disks',
    );
  });

  it("tries --blob-mirror, then the plan's mirrors, then the server, saying why it moved on", async () => {
    pulls.length = 0;
    log.length = 0;
    const found = await mirroredDownloader(
      plan(['oci://site.example/images']),
      server,
      access(['site.example/images/tiny-linux']),
      (l) => log.push(l),
    ).downloadBlob(HEX, '/cache/blob');
    expect(found).toEqual({
      path: '/cache/blob',
      sha256: HEX,
      size: 42,
      resumedBytes: 0,
      requests: 1,
    });
    expect(pulls).toEqual([
      `fast.example/cache/tiny-linux sha256:${HEX} undefined /cache/blob`,
      `site.example/images/tiny-linux sha256:${HEX} undefined /cache/blob`,
    ]);
    expect(log[0]).toMatch(
      /^warning: sha256:abab.* from oci:\/\/fast.example\/cache\/tiny-linux: .*has neither the blob sha256:abab.* nor its disk index; trying oci:\/\/site.example\/images\/tiny-linux$/,
    );

    pulls.length = 0;
    await mirroredDownloader(plan(), server, access([]), () => undefined).downloadBlob(HEX, '/c/b');
    expect(pulls.at(-1)).toBe(`server ${HEX} /c/b`);
    expect(mirroredDownloader(plan(['oci://x/y']), server, undefined, () => undefined)).toBe(
      server,
    );
  });

  it('streams a raw disk from a registry, hashed on the way; a bad blob falls back to the server', async () => {
    const good = Buffer.from('disk bytes');
    const hex = createHash('sha256').update(good).digest('hex');
    const registry = (body: Buffer) => ({
      first: ['oci://r.example/imgctl'],
      parse: (text: string) => ({
        registry: 'r.example',
        repository: text.split('/').slice(3).join('/'),
      }),
      open: () =>
        ({
          hasBlob: async () => true,
          openBlob: async () => Readable.from([body.subarray(0, 4), body.subarray(4)]),
        }) as never,
    });
    const { written, sink, streaming } = recorder(good.length);
    const mirrored = mirroredDownloader(plan(), streaming, registry(good), () => undefined);
    expect(await mirrored.streamBlob(hex, sink)).toEqual({
      size: good.length,
      sha256: hex,
      requests: 1,
    });
    expect(written).toEqual(['0:disk', '4: bytes']);
    // other bytes, once written, are final: the server must not write over them (zero blocks
    // skipped would keep the registry's bytes)
    written.length = 0;
    const bad = mirroredDownloader(
      plan(),
      streaming,
      registry(Buffer.from('evil bytes')),
      () => undefined,
    );
    await expect(bad.streamBlob(hex, sink)).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect(written).toEqual(['0:evil', '4: bytes']);
    // a registry without the blob: the server writes it
    written.length = 0;
    const lacking = {
      ...registry(good),
      open: () =>
        ({
          hasBlob: async () => false,
          getManifest: async () => {
            throw new ImgctlError('NOT_FOUND', 'manifest unknown');
          },
        }) as never,
    };
    await mirroredDownloader(plan(), streaming, lacking, () => undefined).streamBlob(hex, sink);
    expect(written).toEqual(['server']);
  });

  describe('a disk pushed in segments', () => {
    const disk = Buffer.from('0123456789abcdefghij');
    const hex = createHash('sha256').update(disk).digest('hex');
    const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    const pieces = [disk.subarray(0, 8), disk.subarray(8, 16), disk.subarray(16)];
    const segments = pieces.map((b) => ({ digest: digest(b), size: b.length }));
    /** a registry holding the segments (maybe other bytes under one) and the disk index */
    const segmented = (
      blobs: Map<string, Buffer>,
      index = buildDiskIndex({ sha256: hex, size: disk.length, format: 'raw', segments }),
    ) => ({
      first: ['oci://r.example/imgctl'],
      parse: (text: string) => ({
        registry: 'r.example',
        repository: text.split('/').slice(3).join('/'),
      }),
      open: () =>
        ({
          hasBlob: async (_: string, d: string) => blobs.has(d),
          pullBlob: async (_: string, d: string) => {
            throw new ImgctlError('NOT_FOUND', `${d} unknown`);
          },
          getManifest: async (_: string, reference: string) => {
            expect(reference).toBe(`disk-${hex}`);
            return { mediaType: index.mediaType, bytes: index.bytes, digest: index.digest };
          },
          openBlob: async (_: string, d: string) => Readable.from([blobs.get(d)!]),
        }) as never,
    });
    const all = () => new Map(pieces.map((b) => [digest(b), b]));

    it('pulls the segments its disk index lists into the cache file, checked whole', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'blob-sources-'));
      try {
        const dest = join(dir, 'blob');
        const log: string[] = [];
        const got = await mirroredDownloader(plan(), server, segmented(all()), (l) =>
          log.push(l),
        ).downloadBlob(hex, dest);
        expect(got).toMatchObject({ path: dest, sha256: hex, size: disk.length, requests: 3 });
        expect(await readFile(dest)).toEqual(disk);
        expect(log).toEqual([
          `sha256:${hex.slice(0, 12)} is in 3 segments in imgctl/tiny-linux`,
          `sha256:${hex.slice(0, 12)} pulled from oci://r.example/imgctl/tiny-linux`,
        ]);

        // a segment with other bytes: nothing left behind, the server is asked
        const bad = all();
        bad.set(segments[1]!.digest, Buffer.from('XXXXXXXX'));
        pulls.length = 0;
        await mirroredDownloader(plan(), server, segmented(bad), () => undefined).downloadBlob(
          hex,
          dest + '2',
        );
        expect(pulls).toEqual([`server ${hex} ${dest}2`]);
        expect((await readdir(dir)).sort()).toEqual(['blob']);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('streams the segments in order; an index of another disk is refused', async () => {
      const { written, sink, streaming } = recorder(disk.length);
      await mirroredDownloader(plan(), streaming, segmented(all()), () => undefined).streamBlob(
        hex,
        sink,
      );
      expect(written).toEqual(['0:01234567', '8:89abcdef', '16:ghij']);

      // a segment longer than its index says: nothing past its end is written, and once the
      // first segment is written the failure is final (the server does not write over it)
      written.length = 0;
      const long = all();
      long.set(segments[1]!.digest, Buffer.alloc(100, 'X'));
      await expect(
        mirroredDownloader(plan(), streaming, segmented(long), () => undefined).streamBlob(
          hex,
          sink,
        ),
      ).rejects.toMatchObject({
        code: 'INTEGRITY',
        message: expect.stringMatching(/holds other bytes \(more than its 8\)/),
      });
      expect(written).toEqual(['0:01234567']);
      // the first segment too long: nothing written, the server writes the disk
      written.length = 0;
      long.set(segments[0]!.digest, Buffer.alloc(100, 'X'));
      await mirroredDownloader(plan(), streaming, segmented(long), () => undefined).streamBlob(
        hex,
        sink,
      );
      expect(written).toEqual(['server']);

      // a later segment missing: found before anything is written, the server writes the disk
      written.length = 0;
      const lacking = all();
      lacking.delete(segments[2]!.digest);
      const said: string[] = [];
      await mirroredDownloader(plan(), streaming, segmented(lacking), (l) =>
        said.push(l),
      ).streamBlob(hex, sink);
      expect(written).toEqual(['server']);
      expect(said.at(-1)).toMatch(/segment 3\/3 \(sha256:\w+\) of disk sha256:\w+ is not there/);

      written.length = 0;
      const other = buildDiskIndex({
        sha256: 'cd'.repeat(32),
        size: disk.length,
        format: 'raw',
        segments,
      });
      const log: string[] = [];
      await mirroredDownloader(plan(), streaming, segmented(all(), other), (l) =>
        log.push(l),
      ).streamBlob(hex, sink);
      expect(written).toEqual(['server']);
      expect(log[0]).toMatch(/the index of disk sha256:\w+ names another disk; trying the server/);
    });
  });
});
