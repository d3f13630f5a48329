import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readTargetsFile, resolveServerUrl, resolveTargets } from './targets.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A temp directory from a map of relative paths to file contents. */
function makeTree(tree: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgctl-targets-'));
  dirs.push(dir);
  for (const [path, text] of Object.entries(tree)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const storeYaml = (extra = '') => `apiVersion: imgctl/v1\nkind: ImageStore\nname: test\n${extra}`;
const systemYaml = (name: string, extra = '') =>
  `apiVersion: imgctl/v1\nkind: System\nname: ${name}\nhostname: ${name}\nimage: web\n${extra}`;

describe('resolveTargets', () => {
  it("takes a bare word naming a system as that system's address, with --system", async () => {
    const store = makeTree({
      'store.yaml': storeYaml(),
      'systems/web01.yaml': systemYaml('web01', 'address: admin@[2001:db8::5]:2222\n'),
    });
    expect(await resolveTargets(['web01', 'hv1', 'root@web01', 'hv1'], store)).toEqual([
      {
        label: 'web01',
        ssh: { user: 'admin', host: '2001:db8::5', port: 2222 },
        system: 'web01',
      },
      { label: 'hv1', ssh: { user: 'root', host: 'hv1', port: 22 } },
      { label: 'root@web01', ssh: { user: 'root', host: 'web01', port: 22 } },
    ]);
    // Outside a store every bare word is a host name.
    expect(await resolveTargets(['web01'], undefined)).toEqual([
      { label: 'web01', ssh: { user: 'root', host: 'web01', port: 22 } },
    ]);
  });

  it('refuses a system without an address, and one that is not valid', async () => {
    const store = makeTree({
      'store.yaml': storeYaml(),
      'systems/db01.yaml': systemYaml('db01'),
      'systems/bad01.yaml': systemYaml('bad01', 'address: [1, 2]\n'),
    });
    await expect(resolveTargets(['db01'], store)).rejects.toMatchObject({
      code: 'USAGE',
      message: "system 'db01' has no address to reach it over SSH",
    });
    await expect(resolveTargets(['bad01'], store)).rejects.toMatchObject({ code: 'VALIDATION' });
  });
});

describe('readTargetsFile', () => {
  it('reads one target per line, skipping blank lines and comments', async () => {
    const dir = makeTree({ targets: '# hypervisors\nroot@hv1\n\n  hv2:2222  # rack 2\nweb01\n' });
    expect(await readTargetsFile(join(dir, 'targets'))).toEqual(['root@hv1', 'hv2:2222', 'web01']);
    await expect(readTargetsFile(join(dir, 'nope'))).rejects.toMatchObject({
      code: 'USAGE',
      message: `--targets: cannot read ${join(dir, 'nope')}: ENOENT`,
    });
  });
});

describe('resolveServerUrl', () => {
  it("is --server, else $IMGCTL_SERVER, else store.yaml's server.url", async () => {
    const store = makeTree({ 'store.yaml': storeYaml('server:\n  url: http://imgsrv:8460\n') });
    expect(
      await resolveServerUrl({ given: 'http://a', fromEnv: 'http://b', storeDir: store }),
    ).toBe('http://a');
    expect(await resolveServerUrl({ fromEnv: 'http://b', storeDir: store })).toBe('http://b');
    expect(await resolveServerUrl({ storeDir: store })).toBe('http://imgsrv:8460');
  });

  it('refuses no server, a URL that is not http(s), and an invalid store.yaml', async () => {
    await expect(resolveServerUrl({})).rejects.toMatchObject({
      code: 'USAGE',
      message: 'no server: give --server URL (as the targets reach it)',
    });
    const bare = makeTree({ 'store.yaml': storeYaml() });
    await expect(resolveServerUrl({ storeDir: bare })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(resolveServerUrl({ given: 'ssh://imgsrv' })).rejects.toMatchObject({
      code: 'USAGE',
      message: '--server: only http:// and https:// URLs are supported',
    });
    const invalid = makeTree({ 'store.yaml': storeYaml('server:\n  url: [1, 2]\n') });
    await expect(resolveServerUrl({ storeDir: invalid })).rejects.toMatchObject({
      code: 'VALIDATION',
    });
  });
});
