/**
 * `imgctl import --from virt-image`: the fixtures in fixtures/virt-image/ are copied next to disk
 * files made here, imported with the real binary, and the resulting image.yaml is checked field
 * by field; whatever cannot be represented must be reported, a wrong checksum is exit 7, and a
 * file outside the descriptor's directory is refused. The store is unchanged on every refusal.
 */
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  execImgctl,
  hashTree,
  makeStore,
  makeTempDir,
  REPO_ROOT,
  runCli,
  MiB,
} from './helpers/index.ts';

const FIXTURES = join(REPO_ROOT, 'test/fixtures/virt-image');

/** The fixture in a temp dir with the files it names: zero-filled raw disks (known checksums). */
async function appliance(fixture: string, files: Record<string, number | string>) {
  const { dir } = await makeTempDir();
  await cp(join(FIXTURES, fixture), join(dir, 'image.xml'));
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(join(dir, rel, '..'), { recursive: true });
    await writeFile(join(dir, rel), typeof content === 'number' ? Buffer.alloc(content) : content);
  }
  return dir;
}

/** The store as its users see it: images/ and the blobs (not .state/ or the blob writer's .blobs/tmp/). */
async function storeContent(store: string): Promise<string> {
  const blobs = await readdir(join(store, '.blobs'), { recursive: true }).catch(() => []);
  return `${await hashTree(join(store, 'images'))} ${blobs
    .filter((b) => !String(b).startsWith('tmp'))
    .sort()
    .join(',')}`;
}

async function imageYaml(store: string, name: string) {
  return parse(await readFile(join(store, 'images', name, 'image.yaml'), 'utf8'));
}

/** The arguments of `imgctl import --from virt-image DIR/image.xml ARGS --store STORE`. */
function importArgs(dir: string, store: string, args: string[]): string[] {
  return ['import', '--from', 'virt-image', join(dir, 'image.xml'), ...args, '--store', store];
}
const runImport = (dir: string, store: string, ...args: string[]) =>
  runCli(importArgs(dir, store, args));
const execImport = (dir: string, store: string, ...args: string[]) =>
  execImgctl(importArgs(dir, store, args));

describe('import --from virt-image', () => {
  it('maps names, boot entries (xen and hvm), devices and disks; reports what does not fit', async () => {
    const dir = await appliance('hvm-xen.xml', {
      'root.raw': MiB,
      'disks/data.raw': MiB,
      'scratch.img': 0,
    });
    const { dir: store } = await makeStore();
    const result = await execImport(dir, store, '--json');
    expect(result.exitCode, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.image).toBe('web-appliance');
    const doc = await imageYaml(store, 'web-appliance');
    expect(doc).toMatchObject({
      name: 'web-appliance',
      label: 'Web appliance',
      description: 'A small web server appliance & its data disk.',
      revision: 1,
      labels: { 'virt-image/version': '1.2', 'virt-image/release': '3' },
      devices: { vcpus: 2, memory: '256MiB', graphics: 'vnc', nics: [{ model: 'virtio' }] },
    });
    expect(doc.boot).toEqual([
      {
        type: 'xen',
        arch: 'i686',
        features: ['pae'],
        loader: 'hd',
        drives: [
          { disk: 'root.raw', target: 'xvda' },
          { disk: 'data', target: 'xvdb' },
        ],
      },
      {
        type: 'hvm',
        arch: 'x86_64',
        features: ['acpi', 'apic', 'pae'],
        loader: 'hd',
        drives: [
          { disk: 'root.raw', target: 'hda' },
          { disk: 'data', target: 'hdb' },
          { disk: 'scratch', target: 'hdc' },
        ],
      },
    ]);
    expect(doc.disks).toEqual([
      {
        id: 'root.raw',
        use: 'system',
        format: 'raw',
        size: '1MiB',
        sha256: '30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58',
        blob: true,
      },
      {
        id: 'data',
        use: 'data',
        format: 'raw',
        size: '1MiB',
        sha256: '30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58',
        blob: true,
      },
      { id: 'scratch', use: 'scratch', format: 'raw', size: '64MiB' },
    ]);
    // pygrub has no place in image.yaml; the size the XML states differs from the content's
    expect(out.notReplicated).toEqual(
      expect.arrayContaining([
        expect.stringContaining("loader 'pygrub'"),
        expect.stringContaining("disk 'data': the descriptor says 2MiB, the content is 1MiB"),
        expect.stringContaining("scratch disk 'scratch': its file is not imported"),
      ]),
    );
    expect((await runCli(['image', 'validate', '--store', store])).exitCode).toBe(0);
    // warnings go to stderr without --json
    const { dir: other } = await makeStore();
    const plain = await execImport(dir, other);
    expect(plain.stderr).toContain("warning: boot 1 (xen): loader 'pygrub'");
  });

  it('kernel, initrd and cmdline: the files are copied into the image under boot/', async () => {
    const dir = await appliance('kernel.xml', {
      'root.raw': MiB,
      'boot/vmlinuz': 'not really a kernel\n',
      'boot/initrd.img': 'not really an initrd\n',
    });
    const { dir: store } = await makeStore();
    const result = await runImport(dir, store);
    expect(result.exitCode, result.stderr).toBe(0);
    const doc = await imageYaml(store, 'tiny-kernel');
    expect(doc.boot).toEqual([
      {
        type: 'hvm',
        arch: 'x86_64',
        features: ['acpi'],
        kernel: 'boot/boot/vmlinuz',
        initrd: 'boot/boot/initrd.img',
        cmdline: 'console=ttyS0 root=/dev/vda quiet',
        drives: [{ disk: 'root', target: 'vda' }],
      },
    ]);
    expect(doc.devices).toMatchObject({ vcpus: 1, memory: '128MiB' });
    expect(await readFile(join(store, 'images/tiny-kernel/boot/boot/vmlinuz'), 'utf8')).toBe(
      'not really a kernel\n',
    );
    expect(
      await readFile(join(store, 'images/tiny-kernel/records/default.yaml'), 'utf8'),
    ).toContain('image: tiny-kernel');
  });

  it('everything not representable is reported, never dropped silently', async () => {
    const dir = await appliance('unsupported.xml', { 'root.raw': MiB, 'cd.iso': MiB });
    const { dir: store } = await makeStore();
    const unnamed = await runImport(dir, store);
    expect(unnamed.exitCode).toBe(2);
    expect(unnamed.stderr).toContain('--as');
    const result = await runImport(dir, store, '--as', 'odd', '--json');
    expect(result.exitCode, result.stderr).toBe(0);
    const { notReplicated } = JSON.parse(result.stdout) as { notReplicated: string[] };
    const expected = [
      "architecture 'ia64' is not representable",
      'feature acpi state="off"',
      "drive cd.iso target 'fda' is not representable",
      "graphics type 'sdl' is not representable",
      'devices/sound: unknown element',
      "checksum type 'crc32' cannot be verified",
      'format iso is kept as a raw disk',
    ];
    for (const text of expected)
      expect(
        notReplicated.some((n) => n.includes(text)),
        `${text} in ${notReplicated.join('\n')}`,
      ).toBe(true);
    const doc = await imageYaml(store, 'odd');
    expect(doc.labels).toEqual({ 'virt-image/name': 'Odd_Appliance' });
    expect(doc.boot).toHaveLength(1);
    expect(doc.boot[0]).toMatchObject({ arch: 'x86_64', features: ['apic'], loader: 'cdrom' });
    // the description carries the report too, so it stays with the image
    expect(await readFile(join(store, 'images/odd/description.md'), 'utf8')).toContain(
      "architecture 'ia64' is not representable",
    );
  });

  it('a wrong checksum is exit 7 and a path leaving the directory is refused; the store is unchanged', async () => {
    const { dir: store } = await makeStore();
    const before = await storeContent(store);
    const damaged = await appliance('hvm-xen.xml', {
      'root.raw': MiB,
      'disks/data.raw': Buffer.alloc(MiB, 1).toString(),
      'scratch.img': 0,
    });
    const mismatch = await runImport(damaged, store);
    expect(mismatch.exitCode, mismatch.stderr).toBe(7);
    expect(mismatch.stderr).toContain('sha1 checksum');
    const badSha256 = await appliance('kernel.xml', {
      'root.raw': Buffer.alloc(MiB, 2).toString(),
      'boot/vmlinuz': 'k',
      'boot/initrd.img': 'i',
    });
    const mismatch256 = await runImport(badSha256, store);
    expect(mismatch256.exitCode, mismatch256.stderr).toBe(7);
    // The file the descriptor reaches for sits beside its directory, inside a temp dir of ours.
    const { dir: parent } = await makeTempDir();
    const escape = join(parent, 'appliance');
    await mkdir(escape);
    await cp(join(FIXTURES, 'escape.xml'), join(escape, 'image.xml'));
    await writeFile(join(parent, 'outside.raw'), Buffer.alloc(MiB));
    const refused = await runImport(escape, store);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toContain("leaves the descriptor's directory");
    const { dir } = await makeTempDir();
    await writeFile(
      join(dir, 'image.xml'),
      '<?xml version="1.0"?><!DOCTYPE image [<!ENTITY x SYSTEM "file:///etc/passwd">]><image><name>&x;</name></image>',
    );
    const xxe = await runImport(dir, store);
    expect(xxe.exitCode).toBe(3);
    expect(xxe.stderr).toContain('DOCTYPE');
    expect(await storeContent(store)).toBe(before);
  });
});
