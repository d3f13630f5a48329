/**
 * imgctl serve keeps resolved plans while the store is unchanged (docs/server.md): an edit made
 * in any way — rename over a file, write in place, git checkout, a new or removed file or
 * directory, a new signing key — must be served by the very next request. The real server
 * process, real files, real git.
 */
import { cp, open, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  copyExampleStore,
  makeTempDir,
  rawRequest,
  runCli,
  startServer,
  type TempDir,
  type TestServer,
} from './helpers/index.ts';

interface Plan {
  image: { name: string; label?: string };
  record: string;
  hostname: string;
  devices: { vcpus: number };
}

let store: TempDir;
let server: TestServer;

beforeAll(async () => {
  store = await copyExampleStore();
  const keygen = await runCli(['keygen', '--store', store.dir]);
  if (keygen.exitCode !== 0) throw new Error(keygen.stderr);
  server = await startServer({ storeDir: store.dir });
});

afterAll(async () => {
  await server?.stop();
  await store?.cleanup();
});

const path = (...segments: string[]) => join(store.dir, ...segments);

async function get(target: string) {
  return rawRequest(server.url, target);
}

async function plan(target: string): Promise<Plan> {
  const r = await get(target);
  expect(r.status, r.body.toString()).toBe(200);
  return r.json<Plan>();
}

/** Writes `file` as an editor or git does: a new file renamed over the old one. */
async function renameOver(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

async function git(...args: string[]): Promise<void> {
  await execa('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], {
    cwd: store.dir,
  });
}

describe('imgctl serve: edits are served by the next request', () => {
  it('sees each edit of a system file at once: renamed over, rewritten, changed in place', async () => {
    const file = path('systems/web01.yaml');
    const original = await readFile(file, 'utf8');
    try {
      for (let i = 0; i < 24; i++) {
        // Same length every time, so only the content (and for rename-over the inode) changes.
        const hostname = `h${String(i).padStart(2, '0')}.example.com`;
        const text = original.replace('web01.example.com', hostname);
        if (i % 3 === 0) await renameOver(file, text);
        else if (i % 3 === 1) await writeFile(file, text);
        else {
          // The digits changed in place: same size, same inode, maybe the same mtime tick.
          const at = text.indexOf(hostname) + 1;
          const handle = await open(file, 'r+');
          await handle.write(hostname.slice(1, 3), at);
          await handle.close();
        }
        // By name and by MAC address (which reads every system file), back to back.
        expect((await plan('/v1/plan?system=web01')).hostname).toBe(hostname);
        expect((await plan('/v1/plan?system=52:54:00:12:34:56')).hostname).toBe(hostname);
      }
    } finally {
      await renameOver(file, original);
    }
    expect((await plan('/v1/plan?system=web01')).hostname).toBe('web01.example.com');
  });

  it('sees what git checkout puts in place: changed, new and removed files', async () => {
    await git('init', '-q', '-b', 'main');
    await git('add', '-A');
    await git('commit', '-q', '-m', 'example store');
    await git('checkout', '-q', '-b', 'other');
    const record = path('images/web/records/default.yaml');
    await writeFile(
      record,
      (await readFile(record, 'utf8')).replace('provision: {}', 'provision:\n  vcpus: 7'),
    );
    const web01 = await readFile(path('systems/web01.yaml'), 'utf8');
    await writeFile(
      path('systems/web02.yaml'),
      web01
        .replace('name: web01', 'name: web02')
        .replace('web01.example.com', 'web02.example.com')
        .replace('52:54:00:12:34:56', '52:54:00:12:34:57'),
    );
    const large = await readFile(path('images/web/records/large.yaml'), 'utf8');
    await writeFile(
      path('images/web/records/fast.yaml'),
      large.replace('name: large', 'name: fast'),
    );
    await rm(path('systems/tiny01.yaml'));
    await git('add', '-A');
    await git('commit', '-q', '-m', 'other');
    await git('checkout', '-q', 'main');

    const before = await plan('/v1/plan?image=web');
    expect((await get('/v1/plan?system=web02')).status).toBe(404);
    expect((await get('/v1/plan?image=web&record=fast')).status).toBe(404);
    expect((await plan('/v1/plan?system=tiny01')).image.name).toBe('tiny-linux');

    await git('checkout', '-q', 'other');
    expect((await plan('/v1/plan?image=web')).devices.vcpus).toBe(7);
    expect((await plan('/v1/plan?system=52:54:00:12:34:57')).hostname).toBe('web02.example.com');
    expect((await plan('/v1/plan?image=web&record=fast')).record).toBe('fast');
    expect((await get('/v1/plan?system=tiny01')).status).toBe(404);

    await git('checkout', '-q', 'main');
    expect((await plan('/v1/plan?image=web')).devices.vcpus).toBe(before.devices.vcpus);
    expect((await get('/v1/plan?system=web02')).status).toBe(404);
    expect((await get('/v1/plan?image=web&record=fast')).status).toBe(404);
    expect((await plan('/v1/plan?system=tiny01')).image.name).toBe('tiny-linux');
  });

  it('sees a new image directory, edits inside it, and an image directory replaced', async () => {
    const image = await readFile(path('images/web/image.yaml'), 'utf8');
    const copy = path('images/web2');
    await cp(path('images/web'), copy, { recursive: true });
    for (const name of ['default.yaml', 'large.yaml']) {
      const file = join(copy, 'records', name);
      await writeFile(file, (await readFile(file, 'utf8')).replace('image: web', 'image: web2'));
    }
    await writeFile(join(copy, 'image.yaml'), image.replace('name: web', 'name: web2'));
    try {
      expect((await plan('/v1/plan?image=web2')).image.name).toBe('web2');
      // The new directory and its records/ are watched from now on.
      const record = join(copy, 'records/default.yaml');
      await renameOver(
        record,
        (await readFile(record, 'utf8')).replace('provision: {}', 'provision:\n  vcpus: 5'),
      );
      expect((await plan('/v1/plan?image=web2')).devices.vcpus).toBe(5);

      // The whole directory swapped for another (as `mv` or a checkout of a renamed tree does).
      await rename(copy, `${copy}.old`);
      await cp(`${copy}.old`, copy, { recursive: true });
      await writeFile(
        join(copy, 'image.yaml'),
        image.replace('name: web', 'name: web2').replace(/^label: .*$/m, 'label: Swapped'),
      );
      expect((await plan('/v1/plan?image=web2')).image.label).toBe('Swapped');
      await renameOver(record, (await readFile(record, 'utf8')).replace('vcpus: 5', 'vcpus: 6'));
      expect((await plan('/v1/plan?image=web2')).devices.vcpus).toBe(6);
    } finally {
      await rm(copy, { recursive: true, force: true });
      await rm(`${copy}.old`, { recursive: true, force: true });
    }
    expect((await get('/v1/plan?image=web2')).status).toBe(404);
  });

  it('refuses at once a symlink put in place of a file a kept plan was read from', async () => {
    const file = path('systems/web01.yaml');
    const original = await readFile(file, 'utf8');
    const outside = await makeTempDir();
    await writeFile(join(outside.dir, 'web01.yaml'), original);
    expect((await plan('/v1/plan?system=web01')).hostname).toBe('web01.example.com');
    try {
      await symlink(join(outside.dir, 'web01.yaml'), `${file}.tmp`);
      await rename(`${file}.tmp`, file);
      expect((await get('/v1/plan?system=web01')).status).toBe(403);
      expect((await get('/v1/plan?system=52:54:00:12:34:56')).status).toBe(403);
    } finally {
      await renameOver(file, original);
    }
    expect((await plan('/v1/plan?system=web01')).hostname).toBe('web01.example.com');
  });

  it('signs with a new key at once after imgctl keygen --force', async () => {
    const keyId = (r: { headers: Record<string, string | string[] | undefined> }) =>
      /key_id=([0-9a-f]{16})/.exec(String(r.headers['imgctl-signature']))?.[1];
    const before = keyId(await get('/v1/plan?image=web'));
    expect(before).toMatch(/^[0-9a-f]{16}$/);
    const keygen = await runCli(['keygen', '--force', '--store', store.dir]);
    expect(keygen.exitCode, keygen.stderr).toBe(0);
    const after = keyId(await get('/v1/plan?image=web'));
    expect(after).toMatch(/^[0-9a-f]{16}$/);
    expect(after).not.toBe(before);
    const info = (await get('/v1')).json<{ signing: { key_id: string } }>();
    expect(info.signing.key_id).toBe(after);
  });
});
