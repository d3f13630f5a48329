import { describe, expect, it } from 'vitest';
import { buildDiskIndex, diskIndexTag, parseDiskIndex } from './oci-disk-index.ts';

const HEX = 'ab'.repeat(32);
const segments = [
  { digest: `sha256:${'01'.repeat(32)}`, size: 1024 },
  { digest: `sha256:${'02'.repeat(32)}`, size: 24 },
];

describe('the disk index of a segmented disk', () => {
  it('lists the segments in order under the tag disk-<sha256>, read back as pushed', () => {
    const index = buildDiskIndex({ sha256: HEX, size: 1048, format: 'qcow2', segments });
    expect(diskIndexTag(HEX)).toBe(`disk-${HEX}`);
    const doc = JSON.parse(index.bytes.toString()) as {
      artifactType: string;
      layers: Array<{ mediaType: string; annotations: Record<string, string> }>;
    };
    expect(doc.artifactType).toBe('application/vnd.imgctl.disk.v1');
    expect(doc.layers.map((l) => [l.mediaType, l.annotations['dev.imgctl.disk.offset']])).toEqual([
      ['application/vnd.imgctl.disk.v1.qcow2.segment', '0'],
      ['application/vnd.imgctl.disk.v1.qcow2.segment', '1024'],
    ]);
    expect(parseDiskIndex(index.bytes, HEX, 'r/x')).toEqual(segments);
  });

  it('refuses an index of another disk, sizes that do not add up, and what is not an index', () => {
    const index = (size: number, parts = segments) =>
      buildDiskIndex({ sha256: HEX, size, format: 'raw', segments: parts }).bytes;
    expect(() => parseDiskIndex(index(1048), 'cd'.repeat(32), 'r/x')).toThrow(
      /r\/x: the index of disk sha256:cdcd\w+ names another disk/,
    );
    expect(() => parseDiskIndex(index(2000), HEX, 'r/x')).toThrow(
      /has segments of 1048 bytes for a disk of 2000/,
    );
    expect(() =>
      parseDiskIndex(index(1048, [{ digest: 'md5:00', size: 1048 }]), HEX, 'r/x'),
    ).toThrow(/without a sha256 digest/);
    expect(() => parseDiskIndex(Buffer.from('{"mediaType":1}'), HEX, 'r/x')).toThrow(
      /is not a disk index \(application\/vnd.imgctl.disk.v1\)/,
    );
    expect(() => parseDiskIndex(Buffer.from('nope'), HEX, 'r/x')).toThrow(/is not JSON/);
  });
});
