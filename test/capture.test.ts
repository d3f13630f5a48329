/**
 * `imgctl capture`: from disk files made with qemu-img, and from a libvirt domain defined in a
 * test-driver node file (`virsh -c test:///path/node.xml`, no daemon) whose disks are real
 * files. The new image must validate, carry the disks' content as blobs, and report what the
 * domain had that an image cannot hold.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { execImgctl, hashTree, makeStore, makeTempDir, runCli } from './helpers/index.ts';

async function disks(dir: string) {
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'root.qcow2'), '32M']);
  await execa('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'data.raw'), '8M']);
  await writeFile(join(dir, 'data.raw'), Buffer.alloc(8 * 1024 * 1024, 5));
}

const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

/** `imgctl capture ARGS --store STORE`, in-process (`capture`) or as the binary (`execCapture`). */
const capture = (store: string, ...args: string[]) =>
  runCli(['capture', ...args, '--store', store]);
const execCapture = (store: string, ...args: string[]) =>
  execImgctl(['capture', ...args, '--store', store]);

function nodeXml(dir: string, runstate: number): string {
  return `<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>web</name>
    <memory unit='MiB'>768</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
    <features><acpi/><apic/></features>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${dir}/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${dir}/data.raw'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><source file='${dir}/install.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
      <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/><model type='virtio'/></interface>
      <interface type='bridge'><source bridge='br0'/><model type='e1000'/></interface>
      <graphics type='vnc'/>
    </devices>
    <test:runstate>${runstate}</test:runstate>
  </domain>
</node>
`;
}

describe('capture', () => {
  it('--from-disk: format and size from qemu-img, content as blobs, first disk system unless --use says', async () => {
    const { dir } = await makeTempDir();
    await disks(dir);
    const { dir: store } = await makeStore();
    const result = await execCapture(
      store,
      'web',
      '--from-disk',
      join(dir, 'root.qcow2'),
      join(dir, 'data.raw'),
      '--json',
    );
    expect(result.exitCode, result.stderr).toBe(0);
    const doc = parse(await readFile(join(store, 'images/web/image.yaml'), 'utf8'));
    expect(doc.disks).toEqual([
      {
        id: 'vda',
        use: 'system',
        format: 'qcow2',
        size: '32MiB',
        sha256: await sha256(join(dir, 'root.qcow2')),
        blob: true,
      },
      {
        id: 'vdb',
        use: 'data',
        format: 'raw',
        size: '8MiB',
        sha256: await sha256(join(dir, 'data.raw')),
        blob: true,
      },
    ]);
    expect(doc.boot[0].drives).toEqual([
      { disk: 'vda', target: 'vda' },
      { disk: 'vdb', target: 'vdb' },
    ]);
    expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);
    expect((await runCli(['record', 'show', 'web', 'default', '--store', store])).exitCode).toBe(0);

    const uses = await capture(
      store,
      'db',
      '--from-disk',
      join(dir, 'data.raw'),
      join(dir, 'root.qcow2'),
      '--use',
      'data,scratch',
      '--json',
    );
    expect(uses.exitCode, uses.stderr).toBe(0);
    const db = parse(await readFile(join(store, 'images/db/image.yaml'), 'utf8'));
    expect(db.disks.map((d: { use: string }) => d.use)).toEqual(['data', 'scratch']);
    expect(db.disks[1].sha256).toBeUndefined();

    const before = await hashTree(join(store, 'images'));
    const again = await capture(store, 'web', '--from-disk', join(dir, 'data.raw'));
    expect(again.exitCode).toBe(5);
    const badUse = await capture(store, 'x', '--from-disk', join(dir, 'data.raw'), '--use', 'boot');
    expect(badUse.exitCode).toBe(2);
    await execa('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      join(dir, 'root.qcow2'),
      '-F',
      'qcow2',
      join(dir, 'overlay.qcow2'),
    ]);
    const backing = await capture(store, 'x', '--from-disk', join(dir, 'overlay.qcow2'));
    expect(backing.exitCode).toBe(3);
    expect(backing.stderr).toContain('backing file');
    expect(await hashTree(join(store, 'images'))).toBe(before);
  });

  it('--from-domain reads disks, memory, vcpus, nics and features through virsh; a running domain needs --force', async () => {
    const { dir } = await makeTempDir();
    await disks(dir);
    await writeFile(join(dir, 'node.xml'), nodeXml(dir, 5));
    const { dir: store } = await makeStore();
    const uri = `test://${join(dir, 'node.xml')}`;
    const result = await execCapture(
      store,
      'web',
      '--from-domain',
      'web',
      '--connect',
      uri,
      '--json',
    );
    expect(result.exitCode, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    const doc = parse(await readFile(join(store, 'images/web/image.yaml'), 'utf8'));
    expect(doc.devices).toEqual({
      vcpus: 2,
      memory: '768MiB',
      nics: [
        { model: 'virtio', network: 'default' },
        { model: 'e1000', bridge: 'br0' },
      ],
      graphics: 'vnc',
      console: 'serial',
    });
    expect(doc.boot).toEqual([
      {
        type: 'hvm',
        arch: 'x86_64',
        features: ['acpi', 'apic'],
        firmware: 'bios',
        loader: 'hd',
        drives: [
          { disk: 'vda', target: 'vda' },
          { disk: 'vdb', target: 'vdb' },
        ],
      },
    ]);
    expect(
      doc.disks.map(
        (d: { id: string; use: string; format: string }) => `${d.id} ${d.use} ${d.format}`,
      ),
    ).toEqual(['vda system qcow2', 'vdb data raw']);
    expect(out.notReplicated).toEqual(
      expect.arrayContaining([
        expect.stringContaining('cdrom hdc'),
        expect.stringContaining('MAC 52:54:00:aa:bb:cc is not kept'),
      ]),
    );
    expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);

    await writeFile(join(dir, 'node.xml'), nodeXml(dir, 1));
    const running = await capture(store, 'web2', '--from-domain', 'web', '--connect', uri);
    expect(running.exitCode).toBe(5);
    expect(running.stderr).toContain('is running');
    const forced = await capture(
      store,
      'web2',
      '--from-domain',
      'web',
      '--connect',
      uri,
      '--force',
    );
    expect(forced.exitCode, forced.stderr).toBe(0);
    const missing = await capture(store, 'web3', '--from-domain', 'nope', '--connect', uri);
    expect(missing.exitCode).toBe(4);
  });
});
