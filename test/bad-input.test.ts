import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_TREE } from './helpers/base-store.ts';
import {
  type CliResult,
  copyTree,
  execImgctl,
  hashTree,
  makeStore,
  makeTempDir,
  problemLines,
  REPO_ROOT,
  runCli,
  type TempDir,
  writeTree,
} from './helpers/index.ts';

/** One broken file: where it goes in the store, and where and how validation must name it. */
interface BadCase {
  file: string;
  target: string;
  /** LINE:COL of the first problem reported in `target` */
  at: string;
  /** a word the message of that problem contains */
  contains: string;
  note: string;
}

const FIXTURES = join(REPO_ROOT, 'test/fixtures/bad');
const cases: BadCase[] = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8'));

let base: TempDir;
beforeAll(async () => {
  base = await makeStore(BASE_TREE);
});
afterAll(async () => {
  await base.cleanup();
});

/** A copy of the valid base store with one broken file placed into it. */
async function storeWith(c: BadCase): Promise<string> {
  const store = await copyTree(base.dir);
  await writeTree(store.dir, { [c.target]: await readFile(join(FIXTURES, c.file), 'utf8') });
  return store.dir;
}

function expectNamed(result: CliResult, c: BadCase): void {
  expect(result.exitCode, result.stderr).toBe(3);
  expect(result.stderr).toMatch(/^imgctl: error\[VALIDATION\]: /);
  const inTarget = problemLines(result.stderr).filter((l) => l.startsWith(`${c.target}:`));
  expect(inTarget.length, `no problem named ${c.target} in:\n${result.stderr}`).toBeGreaterThan(0);
  const location = `${c.target}:${c.at}`;
  expect(inTarget[0]!.slice(0, inTarget[0]!.indexOf(' '))).toBe(location);
  // several problems may share the first location (the YAML parser reports some twice)
  const atLocation = inTarget.filter((l) => l.startsWith(`${location} `)).join('\n');
  expect(atLocation.toLowerCase()).toContain(c.contains.toLowerCase());
}

describe('bad input: the corpus of broken files', () => {
  it('holds at least 30 cases, each a real file with a distinct name', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    expect(new Set(cases.map((c) => c.file)).size).toBe(cases.length);
    for (const c of cases)
      expect(readFileSync(join(FIXTURES, c.file), 'utf8').length).toBeGreaterThan(0);
  });

  it('starts from a base store that is valid', async () => {
    const result = await runCli(['image', 'validate', '--store', base.dir]);
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
  });

  it.each(cases)('$file ($note): exit 3 naming $target:$at, store unchanged', async (c) => {
    const store = await storeWith(c);
    const before = await hashTree(store);
    const result = await runCli(['image', 'validate', '--store', store]);
    expectNamed(result, c);
    expect(await hashTree(store)).toBe(before);
  });

  it('gives the same answer through the real binary, and as JSON', async () => {
    const picked = [
      'yaml-tab-indent.yaml',
      'size-two-dots.yaml',
      'record-noncustomizable.yaml',
      'system-bad-octet.yaml',
    ];
    await Promise.all(
      cases
        .filter((c) => picked.includes(c.file))
        .map(async (c) => {
          const store = await storeWith(c);
          const before = await hashTree(store);
          expectNamed(await execImgctl(['image', 'validate', '--store', store]), c);
          const json = await execImgctl(['image', 'validate', '--json'], { cwd: store });
          expect(json.exitCode).toBe(3);
          const body = JSON.parse(json.stdout);
          expect(body.error.code).toBe('VALIDATION');
          expect(typeof body.error.message).toBe('string');
          expect('hint' in body.error).toBe(true);
          expect(JSON.stringify(body)).toContain(`${c.target}:${c.at}`);
          expect(await hashTree(store)).toBe(before);
        }),
    );
  });

  it('reports every problem of a file at once, not only the first', async () => {
    const store = (await copyTree(base.dir)).dir;
    const broken = BASE_TREE['images/web/image.yaml']!.replace('vcpus: 1', 'vcpus: two')
      .replace('memory: 1GiB', 'memory: 12XB')
      .replace('size: 2GiB', 'size: -1GiB');
    await writeTree(store, { 'images/web/image.yaml': broken });
    const result = await runCli(['image', 'validate', 'web', '--store', store]);
    expect(result.exitCode).toBe(3);
    const paths = problemLines(result.stderr).map((l) => l.split(' ')[1]);
    expect(paths).toEqual(
      expect.arrayContaining(['devices.vcpus:', 'devices.memory:', 'disks[1].size:']),
    );
  });
});

describe('bad input: failing commands leave the store byte-for-byte unchanged', () => {
  const commands: Array<{ args: string[]; exit: number; says: string }> = [
    {
      args: ['record', 'add', 'web', 'x', '--param', 'admin_user=root'],
      exit: 3,
      says: 'admin_user',
    },
    { args: ['record', 'add', 'web', 'x', '--param', 'nosuch=1'], exit: 3, says: 'nosuch' },
    { args: ['record', 'add', 'web', 'x', '--disk-size', 'root=1GiB'], exit: 3, says: 'root' },
    { args: ['record', 'add', 'web', 'large'], exit: 5, says: 'large' },
    { args: ['record', 'add', 'nope', 'x'], exit: 4, says: 'nope' },
    {
      args: ['record', 'set', 'web', 'large', 'provision.parameters.admin_user=root'],
      exit: 3,
      says: 'admin_user',
    },
    {
      args: [
        'system',
        'add',
        'web03',
        '--image',
        'web',
        '--interface',
        'eth0,mac=52:54:00:zz:00:01',
      ],
      exit: 3,
      says: 'mac',
    },
    {
      args: ['system', 'add', 'web03', '--image', 'web', '--interface', 'eth0,ip=300.1.1.1/24'],
      exit: 3,
      says: 'ip',
    },
    { args: ['system', 'add', 'web03', '--image', 'nope'], exit: 3, says: 'nope' },
    {
      args: ['system', 'add', 'web03', '--image', 'web', '--param', 'admin_user=root'],
      exit: 3,
      says: 'admin_user',
    },
    { args: ['system', 'set', 'web01', 'interfaces[0].mac=not-a-mac'], exit: 3, says: 'mac' },
    { args: ['image', 'set', 'web', 'devices.memory=lots'], exit: 3, says: 'devices.memory' },
    { args: ['image', 'set', 'web', 'disks[0].id=../x'], exit: 3, says: 'disks[0].id' },
    { args: ['image', 'set', 'web', 'name=other'], exit: 2, says: 'name' },
    { args: ['image', 'create', '../x'], exit: 2, says: '../x' },
    { args: ['image', 'create', 'a/b'], exit: 2, says: 'a/b' },
    { args: ['image', 'create', 'web'], exit: 5, says: 'web' },
    { args: ['image', 'copy', 'web', '..'], exit: 2, says: '..' },
    { args: ['image', 'remove', 'web'], exit: 5, says: 'web01' },
    { args: ['record', 'remove', 'web', 'default'], exit: 5, says: 'web01' },
    { args: ['plan', 'web', '--set', 'admin_user=root'], exit: 3, says: 'admin_user' },
    { args: ['plan', 'web', '--system', 'web01', '--set', 'nosuch=1'], exit: 3, says: 'nosuch' },
    { args: ['image', 'show', 'nope'], exit: 4, says: 'nope' },
    { args: ['system', 'show', '52:54:00:00:00:99'], exit: 4, says: '52:54:00:00:00:99' },
    { args: ['image', 'frobnicate'], exit: 2, says: 'frobnicate' },
  ];

  it.each(commands)('imgctl $args.0 $args.1 … → exit $exit', async ({ args, exit, says }) => {
    const store = (await copyTree(base.dir)).dir;
    const before = await hashTree(store);
    const result = await runCli([...args, '--store', store]);
    expect(result.exitCode, result.stderr).toBe(exit);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(says);
    expect(await hashTree(store)).toBe(before);
  });

  it('a plan refusing a fixed parameter names the parameter and the layer that tried', async () => {
    const result = await runCli(['plan', 'web', '--set', 'admin_user=root', '--store', base.dir]);
    expect(result.exitCode).toBe(3);
    expect(result.stderr).toContain('admin_user');
    expect(result.stderr).toMatch(/command.line|--set/);
  });

  it('the real binary leaves the store unchanged on the same refusals', async () => {
    const picked = [
      ['record', 'add', 'web', 'x', '--param', 'admin_user=root'],
      ['system', 'add', 'web03', '--image', 'web', '--interface', 'eth0,mac=52:54:00:zz:00:01'],
      ['image', 'set', 'web', 'devices.memory=lots'],
      ['image', 'create', '../x'],
    ];
    const store = (await copyTree(base.dir)).dir;
    const before = await hashTree(store);
    const results = await Promise.all(
      picked.map((args) => execImgctl([...args, '--store', store])),
    );
    expect(results.map((r) => r.exitCode)).toEqual([3, 3, 3, 2]);
    for (const r of results) {
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^imgctl: error\[[A-Z_]+\]: /);
    }
    expect(await hashTree(store)).toBe(before);
  });
});

describe("bad input: an operator's path mistakes are errors with a code and a hint, not bugs", () => {
  const noTrace = (r: CliResult) => {
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(r.stderr).toMatch(/\nhint: /);
  };

  it('pack into a directory that does not exist, init over a file (4) or inside a store (5)', async () => {
    const store = await copyTree(base.dir);
    const pack = await runCli(['--store', store.dir, 'pack', 'web', '-o', '/nonexistent/x.tar']);
    expect(pack.exitCode, pack.stderr).toBe(4);
    expect(pack.stderr).toMatch(/error\[NOT_FOUND\]: \/nonexistent\/.*no such file or directory/);
    noTrace(pack);
    const outside = await makeTempDir();
    await writeFile(join(outside.dir, 'plain'), 'a file\n');
    const overFile = await runCli(['init', join(outside.dir, 'plain')]);
    expect(overFile.exitCode, overFile.stderr).toBe(4);
    expect(overFile.stderr).toMatch(/not a directory \(mkdir\)/);
    noTrace(overFile);
    // A store inside a store would be packed and exported with it: refused, nothing made.
    const before = await hashTree(store.dir);
    const nested = await runCli(['init', join(store.dir, 'images/web')]);
    expect(nested.exitCode, nested.stderr).toBe(5);
    expect(nested.stderr).toMatch(/is inside the image store/);
    expect(await hashTree(store.dir)).toBe(before);
  });

  it('disk add and capture of a file that does not exist: exit 4, the store unchanged', async () => {
    const store = await copyTree(base.dir);
    const before = await hashTree(store.dir);
    for (const args of [
      ['disk', 'add', 'web', '--id', 'extra', '--use', 'data', '/nonexistent/disk.raw'],
      ['capture', 'newimg', '--from-disk', '/nonexistent/disk.raw'],
    ]) {
      const r = await runCli(['--store', store.dir, ...args]);
      expect(r.exitCode, r.stderr).toBe(4);
      expect(r.stderr).toMatch(/error\[NOT_FOUND\]: \/nonexistent\/disk\.raw does not exist/);
      noTrace(r);
    }
    expect(await hashTree(store.dir)).toBe(before);
  });

  it('init where the kernel refuses a directory (/proc) fails at once instead of spinning', async () => {
    const r = await execImgctl(['init', '/proc/imgctl-test-store'], { timeoutMs: 20_000 });
    expect(r.exitCode, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/\/proc\/imgctl-test-store: no such file or directory \(mkdir\)/);
    noTrace(r);
  });

  it('serve with a certificate that is not PEM: exit 3', async () => {
    const r = await runCli([
      '--store',
      base.dir,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--tls-cert',
      join(base.dir, 'store.yaml'),
      '--tls-key',
      join(base.dir, 'store.yaml'),
    ]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/cannot serve HTTPS with this certificate and key/);
    noTrace(r);
  });
});
