import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { allCommands } from '../packages/cli/src/commands/index.ts';
import { BASE_TREE } from './helpers/base-store.ts';
import { execImgctl, makeStore, makeTempDir, runCli } from './helpers/index.ts';

/** Runs a command with --json against `store` and returns its parsed stdout. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the tests read whatever JSON a command printed
async function json(store: string, args: string[], exit = 0): Promise<any> {
  const result = await runCli([...args, '--json', '--store', store]);
  expect(result.exitCode, `${args.join(' ')}\n${result.stderr}${result.stdout}`).toBe(exit);
  return JSON.parse(result.stdout);
}

/** A store made by `imgctl init`, as a user starts one. */
async function initStore(): Promise<string> {
  const { dir } = await makeTempDir();
  const init = await runCli(['init', 'store', '--json'], { cwd: dir });
  expect(init.exitCode, init.stderr).toBe(0);
  return join(dir, 'store');
}

/** A store made by `imgctl init` holding the image `web` that `imgctl image create` makes. */
async function storeWithNewImage(): Promise<string> {
  const storeDir = await initStore();
  await json(storeDir, ['image', 'create', 'web']);
  return storeDir;
}

const ADD_BIG_RECORD = [
  'record',
  'add',
  'web',
  'big',
  '--vcpus',
  '8',
  '--memory',
  '8GiB',
  '--disk-size',
  'data=50GiB',
];

const ADD_DB01_SYSTEM = [
  'system',
  'add',
  'db01',
  '--image',
  'web',
  '--record',
  'large',
  '--hostname',
  'db01.example.com',
  '--interface',
  'eth0,mac=52:54:00:AA:00:01,ip=192.0.2.30/24,gateway=192.0.2.1,dns=192.0.2.53;192.0.2.54',
  '--ssh-key',
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host',
];

/** The base store after `imgctl ARGS` succeeded in it. */
async function baseStoreAfter(args: string[]): Promise<string> {
  const { dir } = await makeStore(BASE_TREE);
  await json(dir, args);
  return dir;
}

describe('commands: init', () => {
  it('init --json names the store it made, and the scaffold files exist', async () => {
    const { dir } = await makeTempDir();
    const storeDir = join(dir, 'store');
    const init = await runCli(['init', 'store', '--json'], { cwd: dir });
    expect(init.exitCode, init.stderr).toBe(0);
    expect(JSON.parse(init.stdout)).toMatchObject({
      storeDir,
      created: expect.arrayContaining(['store.yaml']),
    });
    for (const path of ['store.yaml', 'common/functions.sh', 'common/defs.sh', '.gitignore']) {
      await expect(readFile(join(storeDir, path), 'utf8')).resolves.toBeTypeOf('string');
    }
  });

  it('init --store DIR creates the store there, not in the working directory', async () => {
    const { dir } = await makeTempDir();
    const init = await runCli(['--store', 'elsewhere', 'init', '--json'], { cwd: dir });
    expect(init.exitCode, init.stderr).toBe(0);
    expect(JSON.parse(init.stdout).storeDir).toBe(join(dir, 'elsewhere'));
    expect(await readdir(dir)).toEqual(['elsewhere']);
    const both = await runCli(['--store', 'a', 'init', 'b'], { cwd: dir });
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(/init was given two places: b and --store a/);
    expect(await readdir(dir)).toEqual(['elsewhere']);
  });

  it('init writes a .gitignore that keeps blobs and state out of git', async () => {
    const storeDir = await initStore();
    expect(await readFile(join(storeDir, '.gitignore'), 'utf8')).toMatch(
      /\.blobs\/[\s\S]*\.state\//,
    );
  });
});

describe('commands: image', () => {
  it('image create --json lists the files it wrote', async () => {
    const storeDir = await initStore();
    expect(await json(storeDir, ['image', 'create', 'web'])).toEqual({
      image: 'web',
      files: expect.arrayContaining([
        'image.yaml',
        'description.md',
        'provision.sh',
        'kickstart.ks',
        'records/default.yaml',
      ]),
    });
  });

  it('image list --json gives each image with exactly these keys', async () => {
    const storeDir = await storeWithNewImage();
    const list = await json(storeDir, ['image', 'list']);
    expect(list).toEqual([
      expect.objectContaining({ name: 'web', revision: 1, records: ['default'] }),
    ]);
    expect(Object.keys(list[0]).sort()).toEqual([
      'disks',
      'label',
      'name',
      'os',
      'parent',
      'records',
      'revision',
    ]);
  });

  it('image show --json gives the descriptor, its records, systems and files', async () => {
    const storeDir = await storeWithNewImage();
    const show = await json(storeDir, ['image', 'show', 'web']);
    expect(show).toMatchObject({
      image: { apiVersion: 'imgctl/v1', kind: 'Image', name: 'web', revision: 1 },
      records: ['default'],
      systems: [],
    });
    expect(show.files).toContain('image.yaml');
  });

  it('image set --json names the file it changed, and image show shows the new value', async () => {
    const storeDir = await storeWithNewImage();
    expect(await json(storeDir, ['image', 'set', 'web', 'devices.memory=2GiB'])).toMatchObject({
      file: 'images/web/image.yaml',
      changed: true,
    });
    expect((await json(storeDir, ['image', 'show', 'web'])).image.devices.memory).toBe('2GiB');
  });

  it('image validate --json counts what it found valid in the whole store', async () => {
    const storeDir = await storeWithNewImage();
    expect(await json(storeDir, ['image', 'validate'])).toMatchObject({
      valid: true,
      images: 1,
      records: 1,
    });
  });

  it('image validate NAME --json gives that image valid with no problems', async () => {
    const storeDir = await storeWithNewImage();
    expect(await json(storeDir, ['image', 'validate', 'web'])).toMatchObject({
      valid: true,
      problems: [],
    });
  });

  it("image show gives a secret parameter's default as <redacted> in JSON", async () => {
    const { dir } = await makeStore(BASE_TREE);
    const shown = await json(dir, ['image', 'show', 'web']);
    expect(shown.image.parameters.db_password).toMatchObject({
      default: '<redacted>',
      secret: true,
    });
    expect(shown.image.parameters.http_port.default).toBe(80);
  });

  it("image show does not print a secret parameter's default in text", async () => {
    const { dir } = await makeStore(BASE_TREE);
    const text = await runCli(['image', 'show', 'web', '--store', dir]);
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).not.toContain('changeme');
  });

  it('image set checks computed templates before writing', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const before = await readFile(join(dir, 'images/web/image.yaml'), 'utf8');
    const r = await runCli([
      'image',
      'set',
      'web',
      'parameters.x.computed="{% include \'/etc/passwd\' %}"',
      '--store',
      dir,
    ]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/parameters\.x\.computed: template error: .*include/);
    expect(await readFile(join(dir, 'images/web/image.yaml'), 'utf8')).toBe(before);
  });

  it('image copy makes revision 1 with parent SRC@REV and re-points the records', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const copy = await json(dir, ['image', 'copy', 'web', 'web-staging']);
    expect(copy).toMatchObject({ image: 'web-staging', parent: 'web@3' });
    const image = parse(await readFile(join(dir, 'images/web-staging/image.yaml'), 'utf8'));
    expect(image).toMatchObject({
      name: 'web-staging',
      revision: 1,
      parent: 'web@3',
      label: 'Web appliance',
    });
    for (const record of ['default', 'large']) {
      const doc = parse(
        await readFile(join(dir, `images/web-staging/records/${record}.yaml`), 'utf8'),
      );
      expect(doc).toMatchObject({ name: record, image: 'web-staging' });
    }
  });

  it("image copy copies the image's files and leaves the source untouched", async () => {
    const { dir } = await makeStore(BASE_TREE);
    await json(dir, ['image', 'copy', 'web', 'web-staging']);
    expect(
      await readFile(join(dir, 'images/web-staging/custom_scripts/hardening/10-ssh.sh'), 'utf8'),
    ).toBe(BASE_TREE['images/web/custom_scripts/hardening/10-ssh.sh']);
    expect(await readFile(join(dir, 'images/web/image.yaml'), 'utf8')).toBe(
      BASE_TREE['images/web/image.yaml'],
    );
  });

  it('image copy leaves a valid store that lists the copy with its parent', async () => {
    const { dir } = await makeStore(BASE_TREE);
    await json(dir, ['image', 'copy', 'web', 'web-staging']);
    expect(await json(dir, ['image', 'validate'])).toMatchObject({
      valid: true,
      images: 2,
      records: 4,
    });
    const list = await json(dir, ['image', 'list']);
    expect(list.find((i: { name: string }) => i.name === 'web-staging')).toMatchObject({
      revision: 1,
      parent: 'web@3',
    });
  });

  it('image remove is refused while a system uses the image, naming it and --force', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const refused = await runCli(['image', 'remove', 'web', '--store', dir]);
    expect(refused.exitCode).toBe(5);
    expect(refused.stderr).toContain('web01');
    expect(refused.stderr).toContain('--force');
    await expect(readFile(join(dir, 'images/web/image.yaml'), 'utf8')).resolves.toBeTypeOf(
      'string',
    );
  });

  it('image remove --force removes an image in use', async () => {
    const { dir } = await makeStore(BASE_TREE);
    expect(await json(dir, ['image', 'remove', 'web', '--force'])).toMatchObject({
      image: 'web',
      removed: true,
    });
    expect(await json(dir, ['image', 'list'])).toEqual([]);
    await json(dir, ['image', 'show', 'web'], 4);
  });
});

describe('commands: record', () => {
  it('record add --json names the record and its file', async () => {
    const { dir } = await makeStore(BASE_TREE);
    expect(await json(dir, ADD_BIG_RECORD)).toEqual({
      image: 'web',
      record: 'big',
      file: 'images/web/records/big.yaml',
    });
  });

  it('record list --json lists the records by name, with vcpus and memory', async () => {
    const dir = await baseStoreAfter(ADD_BIG_RECORD);
    const list = await json(dir, ['record', 'list', 'web']);
    expect(list.map((r: { name: string }) => r.name)).toEqual(['big', 'default', 'large']);
    expect(list[0]).toMatchObject({ name: 'big', vcpus: 8, memory: '8GiB' });
  });

  it('record show --json gives the record as record add wrote it', async () => {
    const dir = await baseStoreAfter(ADD_BIG_RECORD);
    expect(await json(dir, ['record', 'show', 'web', 'big'])).toMatchObject({
      kind: 'ImageRecord',
      name: 'big',
      image: 'web',
      provision: { vcpus: 8, memory: '8GiB', disks: { data: { size: '50GiB' } } },
    });
  });

  it('record set --json names the file it changed, and record show shows the new value', async () => {
    const dir = await baseStoreAfter(ADD_BIG_RECORD);
    expect(
      await json(dir, ['record', 'set', 'web', 'big', 'provision.parameters.http_port=8443']),
    ).toMatchObject({
      file: 'images/web/records/big.yaml',
      changed: true,
    });
    expect((await json(dir, ['record', 'show', 'web', 'big'])).provision.parameters).toEqual({
      http_port: 8443,
    });
  });

  it('record remove --json reports it removed, and record show then exits 4', async () => {
    const dir = await baseStoreAfter(ADD_BIG_RECORD);
    expect(await json(dir, ['record', 'remove', 'web', 'big'])).toMatchObject({
      image: 'web',
      record: 'big',
      removed: true,
    });
    await json(dir, ['record', 'show', 'web', 'big'], 4);
  });
});

describe('commands: system', () => {
  it('system add --json names the system and its file', async () => {
    const { dir } = await makeStore(BASE_TREE);
    expect(await json(dir, ADD_DB01_SYSTEM)).toEqual({
      system: 'db01',
      file: 'systems/db01.yaml',
    });
  });

  it('system list --json lists the systems by name, MACs in lower case', async () => {
    const dir = await baseStoreAfter(ADD_DB01_SYSTEM);
    const list = await json(dir, ['system', 'list']);
    expect(list.map((s: { name: string }) => s.name)).toEqual(['db01', 'web01', 'web02']);
    expect(list[0]).toEqual({
      name: 'db01',
      hostname: 'db01.example.com',
      image: 'web',
      record: 'large',
      macs: ['52:54:00:aa:00:01'],
    });
  });

  it('system show --json gives the system as system add wrote it from its flags', async () => {
    const dir = await baseStoreAfter(ADD_DB01_SYSTEM);
    const show = await json(dir, ['system', 'show', 'db01']);
    expect(show).toMatchObject({
      kind: 'System',
      name: 'db01',
      image: 'web',
      record: 'large',
      interfaces: [
        {
          name: 'eth0',
          mac: '52:54:00:aa:00:01',
          ip: '192.0.2.30/24',
          dns: ['192.0.2.53', '192.0.2.54'],
        },
      ],
      ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host'],
    });
  });

  it('system set --json reports a change, and system show shows the new value', async () => {
    const dir = await baseStoreAfter(ADD_DB01_SYSTEM);
    expect(await json(dir, ['system', 'set', 'db01', 'record=default'])).toMatchObject({
      changed: true,
    });
    expect((await json(dir, ['system', 'show', 'db01'])).record).toBe('default');
  });

  it('system remove --json reports it removed, and system show then exits 4', async () => {
    const dir = await baseStoreAfter(ADD_DB01_SYSTEM);
    expect(await json(dir, ['system', 'remove', 'db01'])).toMatchObject({
      system: 'db01',
      removed: true,
    });
    await json(dir, ['system', 'show', 'db01'], 4);
  });

  it('system show finds a system by name, MAC address (any case) and hostname', async () => {
    const { dir } = await makeStore(BASE_TREE);
    for (const key of [
      'web01',
      '52:54:00:12:34:56',
      '52:54:00:12:34:56'.toUpperCase(),
      'web01.example.com',
    ]) {
      expect((await json(dir, ['system', 'show', key])).name, key).toBe('web01');
    }
    expect((await json(dir, ['system', 'show', '52:54:00:12:34:57'])).name).toBe('web02');
    await json(dir, ['system', 'show', 'nothing.example.com'], 4);
  });
});

describe('commands: plan', () => {
  const WEB02_PLAN = ['plan', 'web', '--system', 'web02', '--set', 'http_port=9000'];

  it('plan --json gives the resolved document, each layer over the one before', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const plan = await json(dir, WEB02_PLAN);
    expect(plan).toMatchObject({
      apiVersion: 'imgctl/v1',
      kind: 'Plan',
      image: { name: 'web', revision: 3 },
      record: 'large',
      system: 'web02',
      hostname: 'web02.example.com',
      devices: { vcpus: 4, memory: 4 * 1024 ** 3 },
      parameters: { http_port: 9000, admin_user: 'admin' },
      parameter_sources: { http_port: 'command line', admin_user: 'image' },
    });
    expect(plan.disks.find((d: { id: string }) => d.id === 'data')).toMatchObject({
      size: 20 * 1024 ** 3,
    });
    expect(plan.parameters.server_name).toBe('web02.example.com:9000');
  });

  it('plan names the secret parameters and prints none of their values, in JSON or text', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const plan = await json(dir, WEB02_PLAN);
    expect(plan.secrets).toContain('db_password');
    const text = await runCli(['plan', 'web', '--system', 'web02', '--store', dir]);
    for (const out of [JSON.stringify(plan), text.stdout, text.stderr])
      expect(out).not.toContain('changeme');
  });

  it('plan --render kickstart --json gives the kickstart rendered for the system', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const rendered = await json(dir, ['plan', 'web', '--system', 'web01', '--render', 'kickstart']);
    expect(rendered).toEqual({
      file: 'kickstart',
      content: expect.stringContaining('--hostname=web01.example.com'),
    });
  });
});

describe('commands: --help', () => {
  it.each(allCommands.map((c) => ({ path: c.path.join(' '), words: c.path })))(
    'imgctl $path --help shows examples',
    async ({ words }) => {
      const result = await runCli([...words, '--help']);
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toContain('Examples:');
      expect(result.stdout).toContain(`imgctl ${words.join(' ')}`);
    },
  );

  it('imgctl --help lists the nouns and shows examples, through the real binary', async () => {
    const result = await execImgctl(['--help']);
    expect(result.exitCode).toBe(0);
    for (const word of ['init', 'image', 'record', 'system', 'plan', 'Examples:'])
      expect(result.stdout).toContain(word);
    expect(result.stderr).toBe('');
  });
});

describe('commands: store discovery', () => {
  const names = (r: { stdout: string }) =>
    JSON.parse(r.stdout).map((i: { name: string }) => i.name);

  it('uses --store', async () => {
    const a = await makeStore(BASE_TREE);
    expect(names(await runCli(['image', 'list', '--json', '--store', a.dir]))).toEqual(['web']);
  });

  it('uses $IMGCTL_STORE without --store', async () => {
    const a = await makeStore(BASE_TREE);
    expect(
      names(await runCli(['image', 'list', '--json'], { env: { IMGCTL_STORE: a.dir } })),
    ).toEqual(['web']);
  });

  it('takes --store over $IMGCTL_STORE', async () => {
    const a = await makeStore(BASE_TREE);
    const b = await makeStore();
    expect(
      names(
        await runCli(['image', 'list', '--json', '--store', b.dir], {
          env: { IMGCTL_STORE: a.dir },
        }),
      ),
    ).toEqual([]);
  });

  it('takes $IMGCTL_STORE over the working directory', async () => {
    const a = await makeStore(BASE_TREE);
    const b = await makeStore();
    expect(
      names(
        await runCli(['image', 'list', '--json'], { env: { IMGCTL_STORE: b.dir }, cwd: a.dir }),
      ),
    ).toEqual([]);
  });

  it('finds the nearest store.yaml above the working directory', async () => {
    const a = await makeStore(BASE_TREE);
    const deep = join(a.dir, 'images/web/records');
    const found = await execImgctl(['image', 'list', '--json'], { cwd: deep });
    expect(found.exitCode, found.stderr).toBe(0);
    expect(names(found)).toEqual(['web']);
  });

  it('a relative --store is taken from the working directory', async () => {
    const a = await makeStore(BASE_TREE);
    const result = await runCli(['image', 'list', '--json', '--store', '.'], { cwd: a.dir });
    expect(result.exitCode).toBe(0);
    expect(JSON.parse(result.stdout)).toHaveLength(1);
  });

  it('exits 4 with a clear message and a hint when there is no store', async () => {
    const { dir } = await makeTempDir();
    const sub = join(dir, 'a/b');
    await mkdir(sub, { recursive: true });
    const result = await execImgctl(['image', 'list'], { cwd: sub });
    expect(result.exitCode).toBe(4);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^imgctl: error\[NOT_FOUND\]: .*store/);
    expect(result.stderr).toMatch(/imgctl init|--store/);
  });

  it('exits 4 naming the directory when --store leads nowhere', async () => {
    const { dir } = await makeTempDir();
    const missing = await runCli(['image', 'list', '--store', join(dir, 'nowhere')]);
    expect(missing.exitCode).toBe(4);
    expect(missing.stderr).toContain('nowhere');
  });
});

describe('commands: errors', () => {
  it.each([
    { args: ['image', 'show', 'nope'], exit: 4, code: 'NOT_FOUND' },
    { args: ['image', 'create', 'web'], exit: 5, code: 'CONFLICT' },
    { args: ['image', 'set', 'web', 'devices.memory=lots'], exit: 3, code: 'VALIDATION' },
    { args: ['image', 'create', '../x'], exit: 2, code: 'USAGE' },
  ])(
    '--json errors are {"error":{"code","message","hint"}} on stdout: $code exits $exit',
    async ({ args, exit, code }) => {
      const { dir } = await makeStore(BASE_TREE);
      const result = await runCli([...args, '--json', '--store', dir]);
      expect(result.exitCode, args.join(' ')).toBe(exit);
      const body = JSON.parse(result.stdout);
      expect(body.error).toMatchObject({ code, message: expect.any(String) });
      expect('hint' in body.error).toBe(true);
    },
  );

  it('a usage error with --json is JSON on stdout too', async () => {
    const result = await runCli(['image', 'show', '--json']);
    expect(result.exitCode).toBe(2);
    expect(JSON.parse(result.stdout).error).toMatchObject({
      code: 'USAGE',
      message: expect.any(String),
    });
  });

  it('without --json an error is one line plus a hint on stderr, and stdout stays empty', async () => {
    const { dir } = await makeStore(BASE_TREE);
    const result = await execImgctl(['image', 'show', 'nope', '--store', dir]);
    expect(result.exitCode).toBe(4);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^imgctl: error\[NOT_FOUND\]: .*nope.*\nhint: /);
  });
});
