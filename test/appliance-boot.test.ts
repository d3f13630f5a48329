import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { copyExampleStore, hashTree, makeTempDir, type TempDir } from './helpers/index.ts';
import {
  applianceReport,
  bootAppliance,
  buildAppliance,
  makeSeedIso,
  makeSeedVfat,
} from './helpers/seed.ts';

interface BuiltDisk {
  id: string;
  sha256: string;
}

describe('slow: the tiny appliance, built by imgctl build, boots and reports its seed', () => {
  let store: TempDir;
  let disks: Record<string, BuiltDisk>;
  const blob = (id: string) =>
    join(store.dir, '.blobs/sha256', disks[id]!.sha256.slice(0, 2), disks[id]!.sha256);

  /**
   * The built disks as a VM gets them in `dir`: the system disk through a qcow2 overlay, so the
   * store's blob is never written; the data disk a copy, as the agent makes one.
   */
  async function bootDisks(dir: string) {
    const overlay = join(dir, 'root.qcow2');
    const base = blob('root');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, overlay]);
    const data = join(dir, 'data.raw');
    await copyFile(blob('data'), data);
    return [
      { file: overlay, format: 'qcow2' as const },
      { file: data, format: 'raw' as const },
    ];
  }

  beforeAll(async () => {
    store = await copyExampleStore();
    const build = await buildAppliance(store.dir);
    expect(build.exitCode, build.stderr).toBe(0);
    expect(build.stderr).toMatch(/^build: making the system disk$/m);
    const image = parse(
      await readFile(join(store.dir, 'images/tiny-linux/image.yaml'), 'utf8'),
    ) as { disks: BuiltDisk[] };
    disks = Object.fromEntries(image.disks.map((d) => [d.id, d]));
  }, 600_000);
  afterAll(() => store.cleanup());

  it('records the build in the record and adds both disks', async () => {
    const record = parse(
      await readFile(join(store.dir, 'images/tiny-linux/records/default.yaml'), 'utf8'),
    ) as { build: Record<string, Record<string, string>> };
    expect(record.build.disks).toEqual({ root: disks.root!.sha256, data: disks.data!.sha256 });
    expect(record.build.tools!.kernel).toMatch(/^linux-image-6\.\d+\.\d+-\d+-amd64 /);
    expect(record.build.tools!['qemu-img']).toMatch(/^\d+\.\d+/);
    expect(Object.keys(record.build.inputs!)).toEqual(
      expect.arrayContaining(['build.sh', 'appliance/init']),
    );
    const info = await execa('qemu-img', ['info', '--output=json', blob('root')]);
    expect(JSON.parse(info.stdout)).toMatchObject({ format: 'raw', 'virtual-size': 64 << 20 });
  });

  it('boots from its disk with a seed ISO: hostname, instance-id, data disk, boot count', async () => {
    const { dir } = await makeTempDir();
    const seed = await makeSeedIso({
      dir,
      instanceId: 'iid-web01-0001',
      hostname: 'web01',
      userData: '#cloud-config\nhostname: web01\nruncmd:\n  - echo runcmd says hi\n',
    });
    const disks = await bootDisks(dir);
    const blobsBefore = await hashTree(join(store.dir, '.blobs'));
    const boot = () =>
      bootAppliance({
        disks,
        cdrom: seed,
        serialLog: join(dir, 'serial.log'),
      });

    const first = await boot();
    expect(applianceReport(first), first).toEqual({
      hostname: 'web01',
      'instance-id': 'iid-web01-0001',
      'data-disk': 'ok',
      boots: '1',
    });
    expect(first).toContain('runcmd says hi');
    expect(first.match(/IMGCTL-APPLIANCE/g)).toHaveLength(1);

    const second = await boot();
    expect(applianceReport(second), second).toMatchObject({ 'data-disk': 'ok', boots: '2' });
    expect(await hashTree(join(store.dir, '.blobs'))).toBe(blobsBefore);
  });

  it('finds a seed on a vfat whole disk labelled CIDATA, with no cdrom', async () => {
    const { dir } = await makeTempDir();
    const seed = await makeSeedVfat({ dir, instanceId: 'iid-vfat-7', hostname: 'db02' });
    const serial = await bootAppliance({
      disks: [...(await bootDisks(dir)), { file: seed, format: 'raw' }],
      serialLog: join(dir, 'serial.log'),
    });
    expect(applianceReport(serial), serial).toEqual({
      hostname: 'db02',
      'instance-id': 'iid-vfat-7',
      'data-disk': 'ok',
      boots: '1',
    });
  });

  it('rebuilds from its cache in seconds, to the same disks, leaving the image alone', async () => {
    const imageFile = join(store.dir, 'images/tiny-linux/image.yaml');
    const before = await readFile(imageFile, 'utf8');
    const started = Date.now();
    const rebuild = await buildAppliance(store.dir);
    const seconds = (Date.now() - started) / 1000;
    expect(rebuild.exitCode, rebuild.stderr).toBe(0);
    expect(rebuild.stderr).toMatch(/^build: adding disk root/m);
    expect(rebuild.stderr).not.toMatch(/downloading/);
    expect(seconds).toBeLessThan(60);
    // same bytes, so the descriptor (revision included) is untouched
    expect(await readFile(imageFile, 'utf8')).toBe(before);
  });
});
