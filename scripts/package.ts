#!/usr/bin/env -S node --import tsx
// npm run package: the Debian packages of imgctl and imgagent, built with dpkg-deb alone.
//   imgctl_VERSION_all.deb      the CLI bundle (with the agents it copies to targets), the
//                               imgctl-serve service, /etc/imgctl, bash completion, man pages
//   imgagent_VERSION_amd64.deb  the self-contained agent as /usr/bin/imgagent, its man page
// Options: --dist DIR (take the binaries npm run build wrote there, rather than building them
// into dist/), --outdir DIR (where the .debs go; default dist/), --compress xz|zstd (xz, the
// default, makes the smallest; zstd is 20 times as fast, for tests; dpkg >= 1.21.18 reads it). The man pages and completion
// are generated from the commander programs whose --help the binaries print
// (packages/cli/src/docs). Reproducible: file times and the man pages' date come from
// SOURCE_DATE_EPOCH (default: the last commit), owners are root:root.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { agentProgram } from '../packages/agent/src/main.ts';
import { bashCompletion } from '../packages/cli/src/docs/completion.ts';
import { manPages } from '../packages/cli/src/docs/man.ts';
import { describeProgram } from '../packages/cli/src/docs/tree.ts';
import { imgctlProgram } from '../packages/cli/src/main.ts';
import { VERSION } from '../packages/core/src/util/version.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PACKAGING = join(ROOT, 'packaging');

/** A file of a package: where it goes, and its content or the file it is copied from. */
interface Entry {
  path: string;
  mode: number;
  from?: string;
  content?: string | Buffer;
}

interface Package {
  name: string;
  architecture: 'all' | 'amd64';
  /** control fields after Architecture, in order; Installed-Size is added */
  fields: Record<string, string>;
  files: Entry[];
  /** DEBIAN/ files: maintainer scripts (0755) */
  scripts: Record<string, string>;
  conffiles?: string[];
}

const MAINTAINER =
  process.env.DEBFULLNAME && process.env.DEBEMAIL
    ? `${process.env.DEBFULLNAME} <${process.env.DEBEMAIL}>`
    : 'imgctl developers <imgctl@localhost>';

/** The programs core runs for imgctl's commands (test/external-programs.test.ts finds them). */
const IMGCTL_FIELDS = {
  Section: 'admin',
  Priority: 'optional',
  Maintainer: MAINTAINER,
  // Node >= 20.19 (the bundles' engines): Debian 13's nodejs, or NodeSource's on Debian 12,
  // whose own is 18. qemu-img: build, capture, pack, import, disk add, verify. adduser: the
  // service's user.
  Depends: 'nodejs (>= 20.19), qemu-utils, adduser',
  // zstd: .tar.zst archives (pack, import); without it, .tar.gz works.
  Recommends: 'zstd',
  // virsh: capture --from-domain; bash-completion loads the completion.
  Suggests: 'libvirt-clients, bash-completion',
  Description: [
    'provision machines from a git-friendly library of VM images',
    'imgctl keeps virtual-machine images, their records and the target systems in a',
    'store of plain files under git, builds and verifies their disks, and serves the',
    'store to agents over HTTP (the imgctl-serve service, not enabled on install).',
    'imgctl provision runs the agent on targets over SSH; the agent built with Node',
    'inside (for x86-64 glibc targets without Node) comes with this package.',
  ].join('\n '),
};

/** The programs core/agent runs for imgagent's actions. */
const IMGAGENT_FIELDS = {
  Section: 'admin',
  Priority: 'optional',
  Maintainer: MAINTAINER,
  // the libraries the embedded Node links (dpkg-shlibdeps) and qemu-img, which both --virt
  // (per-VM disks) and --replace-self (writing the image) run
  Depends: 'SHLIBS, qemu-utils',
  // each needed by one action only, so a host that uses the other can go without:
  // --virt: virsh (libvirt-clients), the NoCloud seed (genisoimage);
  // --replace-self: sfdisk (fdisk), the config partition (dosfstools, mtools)
  Recommends: 'libvirt-clients, genisoimage, fdisk, dosfstools, mtools',
  // the libvirt daemon may be on another host (--connect); --replace-self --kexec
  Suggests: 'libvirt-daemon-system, kexec-tools',
  Description: [
    'imgctl agent: provisions this host from an imgctl server',
    'imgagent asks an imgctl server for an image and its record, checks that this host',
    'can run it, pulls and verifies its disks, then creates a configured VM through',
    'libvirt (--virt) or writes the image over a disk of this machine',
    '(--replace-self). A single executable with Node inside: no Node needed.',
  ].join('\n '),
};

interface Args {
  dist?: string;
  outdir?: string;
  compress: 'xz' | 'zstd';
}

function parseArgs(argv: string[]): Args {
  const out: Args = { compress: 'xz' };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--dist' && value !== undefined) out.dist = resolve(value);
    else if (flag === '--outdir' && value !== undefined) out.outdir = resolve(value);
    else if (flag === '--compress' && (value === 'xz' || value === 'zstd')) out.compress = value;
    else
      throw new Error(
        `package: unexpected ${flag} ${value ?? ''} (takes --dist DIR, --outdir DIR, --compress xz|zstd)`,
      );
  }
  return out;
}

function sourceDateEpoch(): number {
  const fromEnv = process.env.SOURCE_DATE_EPOCH;
  if (fromEnv !== undefined && /^\d+$/.test(fromEnv)) return Number(fromEnv);
  try {
    const text = execFileSync('git', ['log', '-1', '--format=%ct'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    return Number(text.trim());
  } catch {
    return Math.floor(Date.now() / 1000);
  }
}

/** The man pages (gzipped, as Debian installs them) and bash completion of a program. */
function docsOf(root: ReturnType<typeof describeProgram>, epoch: number): Entry[] {
  const date = new Date(epoch * 1000).toISOString().slice(0, 10);
  const program = root.path[0]!;
  return [
    ...manPages(root, { version: VERSION, date }).map((page) => ({
      path: `usr/share/man/man1/${page.name}.1.gz`,
      mode: 0o644,
      // zlib writes no name and a zero time into the gzip header: the same page, the same bytes
      content: gzipSync(page.text, { level: 9 }),
    })),
    {
      path: `usr/share/bash-completion/completions/${program}`,
      mode: 0o644,
      content: bashCompletion(root),
    },
  ];
}

function packages(dist: string, epoch: number): Package[] {
  const quiet = { stdout: new PassThrough(), stderr: new PassThrough() };
  const imgctl = describeProgram(imgctlProgram(quiet, async () => {}));
  const imgagent = describeProgram(agentProgram(quiet, async () => {}));
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => ({ path: `usr/share/doc/imgctl/${f}`, mode: 0o644, from: join(ROOT, 'docs', f) }));
  return [
    {
      name: 'imgctl',
      // The bundles are JavaScript for any Node; imgagent-linux-x64 beside them is not run
      // here but copied to x86-64 targets (as syslinux-common ships x86 boot code), so an arm64
      // server provisions x86-64 hosts with the same package.
      architecture: 'all',
      fields: IMGCTL_FIELDS,
      files: [
        { path: 'usr/bin/imgctl', mode: 0o755, from: join(PACKAGING, 'imgctl/imgctl') },
        { path: 'usr/lib/imgctl/imgctl.mjs', mode: 0o755, from: join(dist, 'imgctl.mjs') },
        { path: 'usr/lib/imgctl/imgagent.mjs', mode: 0o755, from: join(dist, 'imgagent.mjs') },
        {
          path: 'usr/lib/imgctl/imgagent-linux-x64',
          mode: 0o755,
          from: join(dist, 'imgagent-linux-x64'),
        },
        {
          path: 'usr/lib/systemd/system/imgctl-serve.service',
          mode: 0o644,
          from: join(PACKAGING, 'imgctl/imgctl-serve.service'),
        },
        { path: 'etc/imgctl/serve.env', mode: 0o644, from: join(PACKAGING, 'imgctl/serve.env') },
        { path: 'usr/share/doc/imgctl/README.md', mode: 0o644, from: join(ROOT, 'README.md') },
        ...docs,
        ...docsOf(imgctl, epoch),
      ],
      scripts: {
        postinst: join(PACKAGING, 'imgctl/postinst'),
        prerm: join(PACKAGING, 'imgctl/prerm'),
        postrm: join(PACKAGING, 'imgctl/postrm'),
      },
      conffiles: ['/etc/imgctl/serve.env'],
    },
    {
      name: 'imgagent',
      architecture: 'amd64',
      fields: IMGAGENT_FIELDS,
      files: [
        { path: 'usr/bin/imgagent', mode: 0o755, from: join(dist, 'imgagent-linux-x64') },
        ...docsOf(imgagent, epoch),
      ],
      scripts: { postrm: join(PACKAGING, 'imgagent/postrm') },
    },
  ];
}

/** The shared-library dependencies of the executables of a staged package, by dpkg-shlibdeps. */
function shlibsDepends(work: string, pkg: Package, stage: string): string {
  const executables = pkg.files
    .filter((f) => f.path.startsWith('usr/bin/') && f.from?.endsWith('-x64'))
    .map((f) => join(stage, f.path));
  // dpkg-shlibdeps reads the package's name from debian/control and wants the files staged
  // under debian/PACKAGE
  writeFileSync(
    join(work, 'debian/control'),
    `Source: imgctl\n\nPackage: ${pkg.name}\nArchitecture: ${pkg.architecture}\n`,
  );
  const out = execFileSync('dpkg-shlibdeps', ['-O', ...executables], {
    cwd: work,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const deps = /^shlibs:Depends=(.*)$/m.exec(out)?.[1];
  if (!deps) throw new Error(`dpkg-shlibdeps found no dependency of ${executables.join(' ')}`);
  return deps;
}

function build(pkg: Package, work: string, args: Args & { outdir: string }, epoch: number): string {
  const stage = join(work, 'debian', pkg.name);
  for (const file of pkg.files) {
    const target = join(stage, file.path);
    mkdirSync(dirname(target), { recursive: true });
    if (file.from !== undefined) copyFileSync(file.from, target);
    else writeFileSync(target, file.content ?? '');
    chmodSync(target, file.mode);
  }
  const control = join(stage, 'DEBIAN');
  mkdirSync(control, { recursive: true });
  for (const [name, from] of Object.entries(pkg.scripts)) {
    copyFileSync(from, join(control, name));
    chmodSync(join(control, name), 0o755);
  }
  if (pkg.conffiles) writeFileSync(join(control, 'conffiles'), `${pkg.conffiles.join('\n')}\n`);
  const md5sums = pkg.files
    .filter((f) => !pkg.conffiles?.includes(`/${f.path}`))
    .map((f) => `${md5(join(stage, f.path))}  ${f.path}`)
    .sort();
  writeFileSync(join(control, 'md5sums'), `${md5sums.join('\n')}\n`);
  const fields = Object.entries(pkg.fields).map(([key, value]) =>
    value.includes('SHLIBS')
      ? [key, value.replace('SHLIBS', shlibsDepends(work, pkg, stage))]
      : [key, value],
  );
  const installedKiB = pkg.files.reduce(
    (sum, f) => sum + Math.ceil(statSync(join(stage, f.path)).size / 1024),
    0,
  );
  const text = [
    ['Package', pkg.name],
    ['Version', VERSION],
    ['Architecture', pkg.architecture],
    ['Installed-Size', String(installedKiB)],
    ...fields,
  ]
    .map(([key, value]) => `${key}: ${value}`)
    .join('\n');
  writeFileSync(join(control, 'control'), `${text}\n`);
  touchTree(stage, epoch);
  const deb = join(args.outdir, `${pkg.name}_${VERSION}_${pkg.architecture}.deb`);
  const tmp = `${deb}.tmp-${process.pid}`;
  execFileSync('dpkg-deb', ['--root-owner-group', `-Z${args.compress}`, '--build', stage, tmp], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  renameSync(tmp, deb);
  return deb;
}

/** Sets the time of every file and directory of a tree (dpkg-deb's tar keeps it). */
function touchTree(dir: string, epoch: number): void {
  for (const entry of readdirSync(dir, { recursive: true }))
    utimesSync(join(dir, String(entry)), epoch, epoch);
  utimesSync(dir, epoch, epoch);
}

function md5(file: string): string {
  return createHash('md5').update(readFileSync(file)).digest('hex');
}

const args = parseArgs(process.argv.slice(2));
// the staged tree's modes are the packages' modes: the builder's umask must not decide them
// (0700 directories under 077; a package differing by builder under 002)
process.umask(0o022);
let dist = args.dist;
if (dist === undefined) {
  execFileSync(process.execPath, [join(ROOT, 'scripts/build.mjs')], { stdio: 'inherit' });
  dist = join(ROOT, 'dist');
}
const outdir = args.outdir ?? join(ROOT, 'dist');
mkdirSync(outdir, { recursive: true });
const epoch = sourceDateEpoch();
const work = mkdtempSync(join(tmpdir(), 'imgctl-package-'));
try {
  mkdirSync(join(work, 'debian'));
  for (const pkg of packages(dist, epoch)) {
    const deb = build(pkg, work, { ...args, outdir }, epoch);
    console.error(`built ${relative(process.cwd(), deb) || deb}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
