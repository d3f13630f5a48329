/**
 * The Debian packages of `npm run package`, installed on this machine as a sysadmin would:
 * dpkg -i, the programs from /usr/bin, the service's unit and the command it runs, the bash
 * completion, the man pages; then dpkg -r and dpkg -P, after which nothing of them is left.
 * This changes the machine (/usr, /etc, a system user): it refuses to start where an imgctl or
 * imgagent package, the imgctl user or their directories are already there, and afterAll
 * purges what it installed even when a test failed. An agent cache or log directory of an
 * earlier run (npm run demo) is moved aside and put back.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { VERSION } from '../packages/core/src/util/version.ts';
import { REPO_ROOT } from './helpers/index.ts';

const PACKAGES = ['imgctl', 'imgagent'];
const DEBS = [`imgctl_${VERSION}_all.deb`, `imgagent_${VERSION}_amd64.deb`];
const UNIT = '/usr/lib/systemd/system/imgctl-serve.service';
const STORE = '/var/lib/imgctl/store';
/** Where the packages put what the machine must not already have. */
const OURS = [
  '/etc/imgctl',
  '/usr/lib/imgctl',
  STORE,
  UNIT,
  '/usr/bin/imgctl',
  '/usr/bin/imgagent',
];
/** The agent's default directories, which an earlier demo may have made: kept aside. */
const ASIDE = ['/var/lib/imgctl', '/var/log/imgctl'];

/** npm run package, from the shared build of the e2e run, into `outdir`. */
async function buildPackages(outdir: string): Promise<void> {
  const args = ['--dist', inject('distDir'), '--outdir', outdir, '--compress', 'zstd'];
  // one date for every build (a commit made while the test runs would change git's)
  await execa(process.execPath, ['--import', 'tsx', 'scripts/package.ts', ...args], {
    cwd: REPO_ROOT,
    env: { SOURCE_DATE_EPOCH: '1767225600' },
  });
}

/** dpkg's state of a package: 'installed', 'config-files', or undefined when unknown to it. */
function packageState(name: string): string | undefined {
  try {
    const out = execFileSync('dpkg-query', ['-W', '-f', '${db:Status-Status}', name], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out === 'not-installed' || out === '' ? undefined : out;
  } catch {
    return undefined;
  }
}

function hasUser(name: string, database = 'passwd'): boolean {
  try {
    execFileSync('getent', [database, name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The value of NAME in a systemd EnvironmentFile (NAME=value, the value maybe "quoted"). */
function environmentValue(file: string, name: string): string {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}=`));
  if (line === undefined) throw new Error(`${file} sets no ${name}`);
  return line.slice(name.length + 1).replace(/^"(.*)"$/, '$1');
}

/** The words the installed bash completion offers for the last of `words`. */
async function complete(...words: string[]): Promise<string[]> {
  const program = words[0]!;
  const { stdout } = await execa(
    'bash',
    [
      '-c',
      `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _${program}; printf '%s\\n' "\${COMPREPLY[@]}"`,
      'bash',
      `/usr/share/bash-completion/completions/${program}`,
      ...words,
    ],
    { stdin: 'ignore', env: { PATH: process.env.PATH }, extendEnv: false },
  );
  return stdout.split('\n').filter((w) => w !== '');
}

describe('the Debian packages', () => {
  const out = mkdtempSync(join(tmpdir(), 'imgctl-deb-'));
  const aside = new Map<string, string>();
  let installedFiles: string[] = [];
  /** set once the machine was found clean: only then does afterAll remove anything */
  let ours = false;

  beforeAll(async () => {
    const present = PACKAGES.filter((p) => packageState(p) !== undefined);
    const there = OURS.filter((p) => existsSync(p));
    if (present.length > 0 || there.length > 0 || hasUser('imgctl') || hasUser('imgctl', 'group'))
      throw new Error(
        `refusing to install over what is here (packages: ${present.join(' ') || 'none'}; ` +
          `files: ${there.join(' ') || 'none'}; user imgctl: ${hasUser('imgctl')}): ` +
          'remove them first, this test purges what it installs',
      );
    ours = true;
    const node = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'nodejs'], {
      encoding: 'utf8',
    });
    // the Depends of imgctl: Debian 12's own nodejs (18) does not satisfy it, NodeSource's does
    execFileSync('dpkg', ['--compare-versions', node, 'ge', '20.19']);
    for (const dir of ASIDE) {
      if (!existsSync(dir)) continue;
      const to = `${dir}.package-deb-test-${process.pid}`;
      renameSync(dir, to);
      aside.set(dir, to);
    }
    await buildPackages(out);
  });

  afterAll(() => {
    rmSync(out, { recursive: true, force: true });
    if (!ours) return;
    const installed = PACKAGES.filter((p) => packageState(p) !== undefined);
    if (installed.length > 0) execFileSync('dpkg', ['--purge', ...installed], { stdio: 'ignore' });
    // what a failed purge or a kept store left: this test made all of it
    rmSync('/var/lib/imgctl', { recursive: true, force: true });
    rmSync('/var/log/imgctl', { recursive: true, force: true });
    rmSync('/etc/imgctl', { recursive: true, force: true });
    if (hasUser('imgctl')) execFileSync('userdel', ['imgctl']);
    if (hasUser('imgctl', 'group')) execFileSync('groupdel', ['imgctl']);
    for (const [dir, to] of aside) renameSync(to, dir);
  });

  it('are named by version and architecture, owned by root, 0644 or 0755, reproducible', async () => {
    for (const deb of DEBS) {
      const { stdout } = await execa('dpkg-deb', ['--contents', join(out, deb)]);
      const entries = stdout.split('\n');
      expect(entries.length).toBeGreaterThan(2);
      for (const entry of entries) expect(entry).toMatch(/^[-dl]rw[-x]r-[-x]r-[-x] root\/root /);
    }
    // built again from the same binaries and commit: the same bytes
    const again = join(out, 'again');
    await buildPackages(again);
    for (const deb of DEBS)
      expect(readFileSync(join(again, deb)).equals(readFileSync(join(out, deb))), deb).toBe(true);
    const { stdout: control } = await execa('dpkg-deb', ['--field', join(out, DEBS[1]!)]);
    expect(control).toMatch(/^Depends: .*libc6 \(>= 2\.\d+\).*, qemu-utils$/m);
    expect(control).toMatch(/^Recommends: .*libvirt-clients.*genisoimage/m);
  });

  it('install with dpkg -i, and run from /usr/bin', async () => {
    await execa('dpkg', ['--install', ...DEBS.map((deb) => join(out, deb))]);
    for (const p of PACKAGES) expect(packageState(p)).toBe('installed');
    installedFiles = (await execa('dpkg', ['--listfiles', ...PACKAGES])).stdout.split('\n');
    expect((await execa('/usr/bin/imgctl', ['--version'])).stdout).toBe(VERSION);
    expect((await execa('/usr/bin/imgagent', ['--version'])).stdout).toBe(VERSION);
    // the agent imgctl provision copies to targets without Node, beside the bundle
    expect((await execa('/usr/lib/imgctl/imgagent-linux-x64', ['--version'])).stdout).toBe(VERSION);
    expect(hasUser('imgctl')).toBe(true);
    expect(readFileSync(`${STORE}/store.yaml`, 'utf8')).toContain('kind: ImageStore');
  });

  it('give a unit systemd-analyze verifies, sandboxed to an exposure of at most 2', async () => {
    const verify = await execa('systemd-analyze', ['verify', UNIT], { reject: false });
    expect(verify.stderr).toBe('');
    expect(verify.exitCode).toBe(0);
    const security = await execa('systemd-analyze', ['security', '--offline=yes', UNIT]);
    const exposure = /Overall exposure level for imgctl-serve\.service: ([\d.]+)/.exec(
      security.stdout,
    );
    expect(Number(exposure?.[1])).toBeLessThanOrEqual(2);
  });

  it('serve the store postinst made, as the unit runs it: as imgctl, with the token', async () => {
    const env = '/etc/imgctl/serve.env';
    const options = environmentValue(env, 'IMGCTL_SERVE_OPTIONS').split(/\s+/);
    const token = readFileSync('/etc/imgctl/write.token', 'utf8').trim();
    const server = execa(
      'runuser',
      ['-u', 'imgctl', '--', '/usr/bin/imgctl', 'serve', ...options, '--listen', '127.0.0.1:0'],
      { env: { IMGCTL_STORE: environmentValue(env, 'IMGCTL_STORE') }, reject: false },
    );
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let text = '';
        server.stderr!.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          const m = /listening on (\S+) \(store \/var\/lib\/imgctl\/store; accepting events\)/.exec(
            text,
          );
          if (m) resolve(m[1]!);
        });
        server.once('exit', () => reject(new Error(`imgctl serve ended: ${text}`)));
      });
      expect((await fetch(`${url}/v1/images`)).status).toBe(200);
      const post = (headers: Record<string, string>) =>
        fetch(`${url}/v1/events`, { method: 'POST', headers, body: '{}' });
      expect((await post({})).status).toBe(401);
      // the token is accepted: the empty event is refused for what it says
      const withToken = await post({
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
      });
      expect(withToken.status).toBe(400);
    } finally {
      server.kill('SIGTERM');
      await server;
    }
  });

  it('complete commands, subcommands, options, choices and images in bash', async () => {
    await execa('runuser', ['-u', 'imgctl', '--', '/usr/bin/imgctl', 'image', 'create', 'web'], {
      env: { IMGCTL_STORE: STORE },
    });
    expect(await complete('imgctl', 'im')).toEqual(['import', 'image']);
    expect(await complete('imgctl', 'image', 'cr')).toEqual(['create']);
    expect(await complete('imgctl', 'serve', '--write-')).toEqual(['--write-token-file']);
    expect(await complete('imgctl', '--store', STORE, 'plan', 'w')).toEqual(['web']);
    expect(await complete('imgagent', '--virt-type', '')).toEqual(['kvm', 'qemu', 'auto']);
  });

  it('give man pages that man finds by name and groff renders without a warning', async () => {
    const pages = installedFiles.filter((f) => /^\/usr\/share\/man\/man1\/.*\.1\.gz$/.test(f));
    expect(pages).toEqual(
      expect.arrayContaining(
        ['imgctl.1.gz', 'imgctl-serve.1.gz', 'imgagent.1.gz'].map(
          (p) => `/usr/share/man/man1/${p}`,
        ),
      ),
    );
    for (const page of pages) {
      const text = gunzipSync(readFileSync(page));
      const groff = await execa('groff', ['-man', '-Tutf8', '-ww', '-z'], { input: text });
      expect(groff.stderr, page).toBe('');
    }
    expect((await execa('man', ['-w', 'imgctl-image-create'])).stdout).toBe(
      '/usr/share/man/man1/imgctl-image-create.1.gz',
    );
    const shown = await execa('man', ['imgctl-serve'], { env: { MANWIDTH: '80' } });
    expect(shown.stdout).toMatch(/^SYNOPSIS\n\s+imgctl serve \[options\]$/m);
    expect(shown.stdout).toContain('--write-token-file <file>');
  });

  it('leave the configuration, the store and the user on dpkg -r', async () => {
    await execa('dpkg', ['--remove', ...PACKAGES]);
    for (const p of PACKAGES) expect(packageState(p)).toBe('config-files');
    for (const path of ['/usr/bin/imgctl', '/usr/bin/imgagent', '/usr/lib/imgctl', UNIT])
      expect(existsSync(path), path).toBe(false);
    expect(existsSync('/etc/imgctl/serve.env')).toBe(true);
    expect(existsSync(`${STORE}/images/web/image.yaml`)).toBe(true);
    expect(hasUser('imgctl')).toBe(true);
  });

  it('on dpkg -P, keep a store that holds an image, and its user; remove the rest', async () => {
    const purge = await execa('dpkg', ['--purge', ...PACKAGES]);
    expect(purge.stderr).toContain(`imgctl: kept ${STORE} and the imgctl user`);
    for (const p of PACKAGES) expect(packageState(p)).toBeUndefined();
    expect(existsSync('/etc/imgctl')).toBe(false);
    expect(existsSync(`${STORE}/images/web/image.yaml`)).toBe(true);
    expect(hasUser('imgctl')).toBe(true);
  });

  it('install again over the kept store, and on dpkg -P leave nothing once it is empty', async () => {
    await execa('dpkg', ['--install', join(out, DEBS[0]!)]);
    expect(existsSync(`${STORE}/images/web/image.yaml`)).toBe(true);
    await execa('runuser', ['-u', 'imgctl', '--', '/usr/bin/imgctl', 'image', 'remove', 'web'], {
      env: { IMGCTL_STORE: STORE },
    });
    await execa('dpkg', ['--purge', 'imgctl']);
    expect(packageState('imgctl')).toBeUndefined();
    const left = [...installedFiles, '/var/lib/imgctl', '/etc/imgctl']
      .filter((f) => /imgctl|imgagent/.test(f))
      .filter((f) => existsSync(f));
    expect(left).toEqual([]);
    expect(hasUser('imgctl')).toBe(false);
    expect(hasUser('imgctl', 'group')).toBe(false);
  });
});
