import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImage, initStore } from '@imgctl/core/store/images';
import { parseYamlValue } from '@imgctl/core/yaml/quick-yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Context, Result } from '../command.ts';
import { run as setImage } from './image-set.ts';
import { run as addRecord } from './record-add.ts';
import { run as addSystem } from './system-add.ts';

// The handlers called directly with typed options, as main calls them after commander.

let store: string;
beforeEach(async () => {
  store = await mkdtemp(join(tmpdir(), 'imgctl-cli-'));
  await initStore(store, { name: 'test' });
  await createImage(store, 'web');
});
afterEach(() => rm(store, { recursive: true, force: true }));

function context(): Context {
  const ignore = { write: () => true };
  return {
    io: { stdout: ignore, stderr: ignore, env: {}, cwd: store, isTTY: false },
    json: false,
    storeDir: async () => store,
    log: () => {},
  };
}

/** The handler said it added `rel`, and the file holds (at least) `doc`. */
async function expectAdded(result: Result, rel: string, doc: object): Promise<void> {
  expect(result.text).toBe(`added ${rel}`);
  expect(parseYamlValue(await readFile(join(store, rel), 'utf8'))).toMatchObject(doc);
}

const exists = (rel: string) =>
  readFile(join(store, rel)).then(
    () => true,
    () => false,
  );

describe('record add', () => {
  it('writes the record from its options: vcpus as a number, memory, disk sizes', async () => {
    const result = await addRecord(
      ['web', 'large'],
      { vcpus: '4', memory: '4GiB', diskSize: ['root=8GiB'], description: 'big' },
      context(),
    );
    await expectAdded(result, 'images/web/records/large.yaml', {
      kind: 'ImageRecord',
      name: 'large',
      description: 'big',
      provision: { vcpus: 4, memory: '4GiB', disks: { root: { size: '8GiB' } } },
    });
  });

  it.each(['two', '0', '1.5'])(
    'refuses --vcpus %s as a usage error and writes nothing',
    async (vcpus) => {
      await expect(addRecord(['web', 'large'], { vcpus }, context())).rejects.toMatchObject({
        code: 'USAGE',
        message: `--vcpus takes a positive whole number, got '${vcpus}'`,
      });
      expect(await exists('images/web/records/large.yaml')).toBe(false);
    },
  );
});

describe('system add', () => {
  it('needs --image, and says how to give it', async () => {
    await expect(addSystem(['web01'], {}, context())).rejects.toMatchObject({
      code: 'USAGE',
      message: '--image is required',
      hint: 'imgctl system add web01 --image IMAGE',
    });
    expect(await exists('systems/web01.yaml')).toBe(false);
  });

  it('writes the system with its repeatable options', async () => {
    const result = await addSystem(
      ['web01'],
      {
        image: 'web',
        interface: ['eth0,mac=52:54:00:AA:BB:CC,dhcp'],
        sshKey: ['ssh-ed25519 AAAA one', 'ssh-ed25519 AAAA two'],
      },
      context(),
    );
    await expectAdded(result, 'systems/web01.yaml', {
      name: 'web01',
      hostname: 'web01',
      image: 'web',
      record: 'default',
      interfaces: [{ name: 'eth0', mac: '52:54:00:aa:bb:cc', dhcp: true }],
      ssh_authorized_keys: ['ssh-ed25519 AAAA one', 'ssh-ed25519 AAAA two'],
    });
  });
});

describe('image set', () => {
  it('edits image.yaml in place, keeping its comments, and says when nothing changed', async () => {
    const file = 'images/web/image.yaml';
    const first = await setImage(['web', 'devices.memory=1GiB'], {}, context());
    expect(first.text).toBe(`updated ${file}`);
    const text = await readFile(join(store, file), 'utf8');
    expect(text).toContain('  memory: 1GiB\n');
    expect(text).toContain('# add the content with: imgctl disk add web');
    const again = await setImage(['web', 'devices.memory=1GiB'], {}, context());
    expect(again).toMatchObject({
      text: `${file} already had those values`,
      data: { file, changed: false },
    });
  });

  it('refuses a value that makes the image invalid and leaves the file as it was', async () => {
    const file = join(store, 'images/web/image.yaml');
    const before = await readFile(file, 'utf8');
    await expect(setImage(['web', 'devices.vcpus=0'], {}, context())).rejects.toMatchObject({
      code: 'VALIDATION',
      message: 'images/web/image.yaml: 1 problem; nothing was written',
      details: ['images/web/image.yaml:20:10 devices.vcpus: must be >= 1'],
    });
    expect(await readFile(file, 'utf8')).toBe(before);
  });
});
