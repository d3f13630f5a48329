import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { PlanDoc } from '../store/types.ts';
import { ImgctlError } from '../util/errors.ts';
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
      }) as never,
  });
  const server = {
    async downloadBlob(hex: string, dest: string) {
      pulls.push(`server ${hex} ${dest}`);
      return { path: dest, size: 42, sha256: hex, resumedBytes: 0, requests: 1 };
    },
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
      /^warning: sha256:abab.* from oci:\/\/fast.example\/cache\/tiny-linux: .*is not in.*; trying oci:\/\/site.example\/images\/tiny-linux$/,
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
        ({ openBlob: async () => Readable.from([body.subarray(0, 4), body.subarray(4)]) }) as never,
    });
    const written: string[] = [];
    const sink = {
      async write(data: Buffer, offset: number) {
        written.push(`${offset}:${data.toString()}`);
      },
    };
    const streaming = {
      ...server,
      async streamBlob(h: string, _sink: unknown) {
        written.push('server');
        return { size: good.length, sha256: h, requests: 1 };
      },
    };
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
          openBlob: async () => {
            throw new ImgctlError('NOT_FOUND', 'blob unknown');
          },
        }) as never,
    };
    await mirroredDownloader(plan(), streaming, lacking, () => undefined).streamBlob(hex, sink);
    expect(written).toEqual(['server']);
  });
});
