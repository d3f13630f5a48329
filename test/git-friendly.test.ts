import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { execImgctl, hashTree, makeStore, runCli, writeTree } from './helpers/index.ts';

/** A descriptor as a person writes it: comments, blank lines, flow lists, quoted strings. */
const HAND_WRITTEN = `# The web appliance: nginx on a system disk, content on a data disk.
apiVersion: imgctl/v1
kind: Image
name: web
label: "Web appliance"   # shown in listings
description: 'Serves static sites.'
revision: 7

os: {family: linux, distro: debian, version: "12", arch: x86_64}

boot:
  # one platform only
  - type: hvm
    arch: x86_64
    features: [acpi, apic, pae]
    firmware: bios
    loader: hd
    drives: [{disk: root, target: vda}, {disk: data, target: vdb}]

devices:
  vcpus: 2          # two is plenty
  memory: 1GiB      # raised with imgctl image set
  nics: [{model: virtio, network: default}]
  graphics: none
  console: serial

# system disk first, then data
disks:
  - {id: root, use: system, format: qcow2, size: 4GiB}
  - id: data
    use: data       # kept across updates
    format: qcow2
    size: "2GiB"

parameters:
  http_port: {default: 80, type: integer}
  admin_user:
    default: admin
    customizable: false   # fixed by the image
`;

const SCRIPTS: Record<string, string> = {
  'images/web/provision.sh': '#!/bin/sh\n',
};

async function git(cwd: string, ...args: string[]): Promise<string> {
  const result = await execa('git', args, {
    cwd,
    env: {
      GIT_AUTHOR_NAME: 'test',
      GIT_AUTHOR_EMAIL: 'test@example.com',
      GIT_COMMITTER_NAME: 'test',
      GIT_COMMITTER_EMAIL: 'test@example.com',
      GIT_CONFIG_NOSYSTEM: '1',
      HOME: cwd,
    },
  });
  return result.stdout;
}

/** A store in a git repository with the hand-written descriptor committed. */
async function committedStore(): Promise<string> {
  const { dir } = await makeStore({ 'images/web/image.yaml': HAND_WRITTEN, ...SCRIPTS });
  await git(dir, 'init', '-q');
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', 'hand-written');
  return dir;
}

const FILE = 'images/web/image.yaml';

describe('git-friendly: imgctl image set on a hand-written descriptor', () => {
  it('starts from a descriptor that is valid', async () => {
    const dir = await committedStore();
    const result = await runCli(['image', 'validate', 'web', '--store', dir]);
    expect(result.exitCode, result.stderr).toBe(0);
  });

  it('changing one value changes its line and the revision line, keeping comments and formatting', async () => {
    const dir = await committedStore();
    const result = await execImgctl(['image', 'set', 'web', 'devices.memory=2GiB'], { cwd: dir });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(await git(dir, 'diff', '--numstat')).toBe(`2\t2\t${FILE}`);
    const diff = (await git(dir, 'diff', '-U0', '--', FILE)).split('\n');
    expect(diff).toContain('-  memory: 1GiB      # raised with imgctl image set');
    expect(diff).toContain('+  memory: 2GiB      # raised with imgctl image set');
    // every content change bumps the revision (design.md §3)
    expect(diff).toContain('-revision: 7');
    expect(diff).toContain('+revision: 8');
  });

  it('keeps the quoting style of a string it replaces', async () => {
    const dir = await committedStore();
    const result = await runCli(['image', 'set', 'web', 'label=Web appliance v2', '--store', dir]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(await git(dir, 'diff', '--numstat')).toBe(`2\t2\t${FILE}`); // and the revision
    const text = await readFile(join(dir, FILE), 'utf8');
    expect(text).toContain('label: "Web appliance v2"   # shown in listings\n');
  });

  it('changing several values in one command changes only their lines', async () => {
    const dir = await committedStore();
    const result = await runCli(
      [
        'image',
        'set',
        'web',
        'devices.vcpus=4',
        'disks[1].size=3GiB',
        'revision=20', // given: not bumped on top
        '--store',
        dir,
      ],
      {},
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(await git(dir, 'diff', '--numstat')).toBe(`3\t3\t${FILE}`);
    const text = await readFile(join(dir, FILE), 'utf8');
    expect(text).toContain('  vcpus: 4          # two is plenty\n');
    expect(text).toMatch(/^revision: 20\b/m);
    expect(text).toContain('    size: "3GiB"\n');
  });

  it('setting a new key only adds lines (and bumps the revision); every comment and flow list stays as written', async () => {
    const dir = await committedStore();
    const result = await runCli(['image', 'set', 'web', 'labels.tier=frontend', '--store', dir]);
    expect(result.exitCode, result.stderr).toBe(0);
    const [added, deleted] = (await git(dir, 'diff', '--numstat')).split('\t');
    expect(Number(added)).toBeGreaterThan(1);
    expect(deleted).toBe('1');
    const text = await readFile(join(dir, FILE), 'utf8');
    for (const line of HAND_WRITTEN.split('\n'))
      expect(text).toContain(line === 'revision: 7' ? 'revision: 8' : line);
  });

  it('an invalid set leaves the file byte-identical and the tree unchanged', async () => {
    const dir = await committedStore();
    const before = await hashTree(dir);
    const result = await execImgctl(
      ['image', 'set', 'web', 'devices.memory=lots', 'devices.vcpus=3'],
      {
        cwd: dir,
      },
    );
    expect(result.exitCode).toBe(3);
    expect(result.stderr).toMatch(/images\/web\/image\.yaml:\d+:\d+ devices\.memory: /);
    expect(await readFile(join(dir, FILE), 'utf8')).toBe(HAND_WRITTEN);
    expect(await hashTree(dir)).toBe(before);
    expect(await git(dir, 'status', '--porcelain')).toBe('');
  });

  it('writes atomically: no temp files are left next to the descriptor', async () => {
    const dir = await committedStore();
    for (const assignment of ['devices.memory=2GiB', 'devices.memory=bad', 'labels.a=b']) {
      await runCli(['image', 'set', 'web', assignment, '--store', dir]);
    }
    expect((await readdir(join(dir, 'images/web'))).sort()).toEqual(['image.yaml', 'provision.sh']);
    expect(await readdir(join(dir, '.state'))).toEqual([]);
    expect(await git(dir, 'status', '--porcelain')).toBe(` M ${FILE}`);
  });

  it('a set that changes nothing does not rewrite the file', async () => {
    const dir = await committedStore();
    await writeTree(dir, {});
    const result = await runCli(['image', 'set', 'web', 'devices.memory=1GiB', '--store', dir]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(await git(dir, 'status', '--porcelain')).toBe('');
  });
});
