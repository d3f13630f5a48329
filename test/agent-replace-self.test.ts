/**
 * imgagent --replace-self end to end, all real: the tiny appliance built with imgctl build,
 * served by imgctl serve on 127.0.0.1, written by the agent binary onto a raw file and onto a
 * loop device, then booted with qemu (software emulation) to read its serial console. The
 * targets are only files and loop devices this test makes; loop devices are always detached.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { chmod, cp, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  AGENT_BIN,
  type AgentRig,
  type AgentRun,
  runAgent,
  startAgentRig,
} from './helpers/agent-rig.ts';
import {
  execImgctl,
  makeTempDir,
  startServer,
  type TempDir,
  type TestServer,
  writeRandomFile,
  MiB,
} from './helpers/index.ts';
import { applianceReport, bootAppliance } from './helpers/seed.ts';
import { startStallProxy } from './helpers/stall-proxy.ts';

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function makeFile(path: string, size: number): Promise<string> {
  await execa('truncate', ['-s', String(size), path]);
  return path;
}

describe('slow: imgagent --replace-self writes an image over a disk and makes it boot', () => {
  let rig: AgentRig;
  let store: TempDir;
  let work: TempDir;
  let server: TestServer;
  let tokenFile: string;
  let rootSha: string;
  const loops: string[] = [];
  const mounts: string[] = [];
  const servers: TestServer[] = [];

  /** The agent's arguments against a server, with this test's token, cache and log dirs. */
  function agentArgs(args: string[], url = server.url): string[] {
    return [
      '--server',
      url,
      '--token-file',
      tokenFile,
      '--cache-dir',
      rig.paths.cache,
      '--log-dir',
      rig.paths.logs,
      ...args,
    ];
  }

  /** The real agent binary, run to its end. */
  function agent(args: string[], url = server.url): Promise<AgentRun> {
    return runAgent(agentArgs(args, url));
  }

  /** The real agent binary started in the background, to act on while it runs. */
  function spawnAgent(args: string[], url = server.url) {
    const child = spawn(process.execPath, [AGENT_BIN, ...agentArgs(args, url)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number>((resolve) =>
      child.once('exit', (code) => resolve(code ?? -1)),
    );
    return { child, exited, stderr: () => stderr };
  }

  /** tiny-linux copied as `name`, with `root` as its system disk when given. */
  async function copyImage(name: string, root?: string): Promise<void> {
    const imgctl = (args: string[]) => execImgctl(['--store', store.dir, ...args]);
    const copy = await imgctl(['image', 'copy', 'tiny-linux', name]);
    expect(copy.exitCode, copy.stderr).toBe(0);
    if (root === undefined) return;
    const add = await imgctl(['disk', 'add', name, '--id', 'root', '--use', 'system', root]);
    expect(add.exitCode, add.stderr).toBe(0);
  }

  /** `imgagent --replace-self --image tiny-linux --target-disk TARGET …`, through the rig's server. */
  function replaceOnto(target: string, ...flags: string[]) {
    return agent(['--replace-self', '--image', 'tiny-linux', '--target-disk', target, ...flags]);
  }

  async function attachLoop(file: string): Promise<string> {
    const { stdout } = await execa('losetup', ['--find', '--show', file]);
    loops.push(stdout.trim());
    return stdout.trim();
  }

  async function bootReport(disk: string, name: string) {
    const serial = await bootAppliance({
      disks: [{ file: disk, format: 'raw' }],
      serialLog: join(work.dir, `${name}.serial.log`),
    });
    return applianceReport(serial);
  }

  async function writeSystem(name: string, targetDisk?: string) {
    await writeFile(
      join(store.dir, 'systems', `${name}.yaml`),
      `apiVersion: imgctl/v1\nkind: System\nname: ${name}\nhostname: ${name}\nimage: tiny-linux\nrecord: default\n${targetDisk ? `target_disk: ${targetDisk}\n` : ''}`,
    );
  }

  beforeAll(async () => {
    rig = await startAgentRig('imgagent-replace-');
    ({ store, work, server, tokenFile, rootSha } = rig);
  }, 600_000);

  afterAll(async () => {
    for (const dir of mounts) await execa('umount', [dir], { reject: false });
    for (const loop of loops) await execa('losetup', ['-d', loop], { reject: false });
    for (const s of servers) await s.stop('SIGKILL');
    await rig?.stop();
  });

  it('writes the appliance onto a raw file; qemu boots it with the hostname and instance-id of the system', async () => {
    const target = await makeFile(join(work.dir, 'file-target.raw'), 80 * MiB);
    const run = await agent([
      '--replace-self',
      '--system',
      'tiny01',
      '--target-disk',
      target,
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      instanceId: string;
      disks: Array<{ id: string; verified?: boolean; skippedZeros?: number; skipped?: string }>;
      configPartition: { table: string; number: number; start: number };
      boot: { action: string; done: boolean; message: string };
    };
    expect(result.instanceId).toMatch(/^tiny01-[0-9a-f]{8}$/);
    expect(result.disks[0]).toMatchObject({ id: 'root', verified: true });
    // The appliance's disk is mostly zeros: they were left as holes, not written.
    expect(result.disks[0]!.skippedZeros).toBeGreaterThan(16 * MiB);
    expect(result.disks[1]).toMatchObject({ id: 'data', skipped: 'no --data-disk data=DEV given' });
    expect(result.configPartition).toMatchObject({ table: 'dos', number: 2, start: 64 * MiB });
    expect(result.boot).toMatchObject({ action: 'none', done: false });
    expect(result.boot.message).toMatch(/is a file/);

    // The image region is the image, byte for byte (the config partition only changed the MBR).
    const sfdisk = JSON.parse((await execa('sfdisk', ['--json', target])).stdout) as {
      partitiontable: { partitions: Array<{ start: number }> };
    };
    expect(sfdisk.partitiontable.partitions.map((p) => p.start)).toEqual([2048, 131072]);

    const report = await bootReport(target, 'file');
    expect(report).toMatchObject({ hostname: 'tiny01', 'instance-id': result.instanceId });

    // provision.sh ran with TARGET_DISK, logged as --virt logs; the server saw every phase.
    const log = await readFile(join(work.dir, 'logs/tiny-linux/tiny-linux_tiny01.log'), 'utf8');
    expect(log).toMatch(/provisioned tiny01 \(hostname tiny01\) from tiny-linux/);
    const status = await execImgctl([
      '--store',
      store.dir,
      'status',
      '--system',
      'tiny01',
      '--json',
    ]);
    expect(status.exitCode, status.stderr).toBe(0);
    const state = (
      JSON.parse(status.stdout) as Array<{ state: string; phases: Array<{ phase: string }> }>
    )[0]!;
    expect(state.state).toBe('done');
    expect(state.phases.map((p) => p.phase).slice(-4)).toEqual([
      'started',
      'disks-ready',
      'configured',
      'done',
    ]);

    // Again without --force: the file now holds a partition table the system does not name.
    const before = await sha256File(target);
    const again = await agent(['--replace-self', '--system', 'tiny01', '--target-disk', target]);
    expect(again.exitCode, again.stderr).toBe(5);
    expect(again.stderr).toMatch(
      /error\[CONFLICT\]: target disk .* is not empty: dos partition table/,
    );
    expect(await sha256File(target)).toBe(before);
  });

  it('writes onto a loop device named by the system record, over its old partition table; qemu boots it', async () => {
    const backing = await makeFile(join(work.dir, 'loop-target.raw'), 96 * MiB);
    await execa('sfdisk', ['--quiet', backing], { input: 'label: gpt\nstart=2048, size=100000\n' });
    const loop = await attachLoop(backing);
    await writeSystem('tinyloop', loop);
    // --dry-run shows what is there and changes nothing.
    const before = await sha256File(loop);
    const dry = await agent(['--replace-self', '--system', 'tinyloop', '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`${loop}: tiny-linux`);
    expect(dry.stdout).toMatch(/would be written \(dry run: nothing was changed\)/);
    expect(dry.stdout).toMatch(/on it now: gpt partition table, 1 partition\(s\); partition 1: /);
    expect(await sha256File(loop)).toBe(before);

    const run = await agent(['--replace-self', '--system', 'tinyloop', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      instanceId: string;
      target: string;
      disks: Array<{ verified?: boolean; skippedZeros?: number; written?: number }>;
    };
    expect(result.target).toBe(loop);
    // A block device is written in full: nothing promises its discarded blocks read as zeros.
    expect(result.disks[0]).toMatchObject({ verified: true, skippedZeros: 0, written: 64 * MiB });
    const report = await bootReport(loop, 'loop');
    expect(report).toMatchObject({ hostname: 'tinyloop', 'instance-id': result.instanceId });
  });

  it('converts a qcow2 system disk onto a file, the first MiB last; qemu boots it', async () => {
    const qcow2 = join(work.dir, 'root.qcow2');
    const rootBlob = join(store.dir, '.blobs/sha256', rootSha.slice(0, 2), rootSha);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rootBlob, qcow2]);
    await copyImage('tiny-q', qcow2);
    const target = await makeFile(join(work.dir, 'qcow2-target.raw'), 80 * MiB);
    const run = await agent([
      '--replace-self',
      '--image',
      'tiny-q',
      '--target-disk',
      target,
      '--virt-name',
      'tinyq',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      instanceId: string;
      disks: Array<{ id: string; verified?: boolean; method?: string }>;
    };
    expect(result.disks[0]).toMatchObject({ id: 'root', verified: true, method: 'convert' });
    const report = await bootReport(target, 'qcow2');
    expect(report).toMatchObject({ hostname: 'tinyq', 'instance-id': result.instanceId });
  });

  it('refuses a mounted or busy loop device, a too-small target and a foreign partition table, changing nothing', async () => {
    // A mounted loop device: exit 5, even with --force.
    const fsFile = await makeFile(join(work.dir, 'mounted.raw'), 80 * MiB);
    await execa('mkfs.ext4', [
      '-q',
      '-L',
      'inuse',
      '-E',
      'lazy_itable_init=0,lazy_journal_init=0',
      fsFile,
    ]);
    const loop = await attachLoop(fsFile);
    const mnt = join(work.dir, 'mnt');
    await execa('mkdir', ['-p', mnt]);
    // Read-only, so the filesystem itself writes nothing while the hashes are taken.
    await execa('mount', ['-t', 'ext4', '-o', 'ro,noload', loop, mnt]);
    mounts.push(mnt);
    const mountedBefore = await sha256File(loop);
    const mounted = await replaceOnto(loop, '--force');
    expect(mounted.exitCode, mounted.stderr).toBe(5);
    expect(mounted.stderr).toMatch(/is in use by this machine/);
    expect(mounted.stderr).toContain(`is mounted at ${mnt}`);
    expect(await sha256File(loop)).toBe(mountedBefore);

    // A loop device a program holds open exclusively, as ZFS holds its pool's disks: no table
    // shows it, the kernel's EBUSY does. Exit 5, even with --force.
    const held = await attachLoop(await makeFile(join(work.dir, 'held.raw'), 96 * MiB));
    const holder = await open(held, constants.O_RDONLY | constants.O_EXCL);
    try {
      const heldBefore = await sha256File(held);
      const busy = await replaceOnto(held, '--force');
      expect(busy.exitCode, busy.stderr).toBe(5);
      expect(busy.stderr).toMatch(/the kernel reports it busy/);
      expect(await sha256File(held)).toBe(heldBefore);
    } finally {
      await holder.close();
    }

    // Too small for the image and its config partition: exit 6.
    const small = await makeFile(join(work.dir, 'small.raw'), 64 * MiB);
    await writeRandomFile(small, 64 * MiB);
    const smallBefore = await sha256File(small);
    const tooSmall = await replaceOnto(small);
    expect(tooSmall.exitCode, tooSmall.stderr).toBe(6);
    expect(tooSmall.stderr).toMatch(/is too small: 64MiB, .* need/);
    expect(await sha256File(small)).toBe(smallBefore);

    // A partition table, not named by any system, no --force: exit 5.
    const foreign = await makeFile(join(work.dir, 'foreign.raw'), 96 * MiB);
    await execa('sfdisk', ['--quiet', foreign], {
      input: 'label: dos\nstart=2048, size=20000, type=83\n',
    });
    const foreignBefore = await sha256File(foreign);
    const refused = await replaceOnto(foreign);
    expect(refused.exitCode, refused.stderr).toBe(5);
    expect(refused.stderr).toMatch(/is not empty: dos partition table, 1 partition/);
    expect(refused.stderr).toMatch(/give --force/);
    expect(await sha256File(foreign)).toBe(foreignBefore);
    // --dry-run shows the whole summary, then says why the run would be refused: exit 5.
    const dry = await replaceOnto(foreign, '--dry-run');
    expect(dry.exitCode, dry.stderr).toBe(5);
    expect(dry.stdout).toMatch(/would be refused \(dry run: nothing was changed\)/);
    expect(dry.stdout).toMatch(/on it now: dos partition table, 1 partition/);
    expect(dry.stderr).toMatch(/is not empty: dos partition table/);
    // With --json: one document, the error (imgctl provision reads the agent's --json).
    const dryJson = await replaceOnto(foreign, '--dry-run', '--json');
    expect(dryJson.exitCode, dryJson.stderr).toBe(5);
    expect(JSON.parse(dryJson.stdout)).toMatchObject({
      error: { code: 'CONFLICT', message: expect.stringMatching(/is not empty/) },
    });
    expect(await sha256File(foreign)).toBe(foreignBefore);

    // --kexec (or --reboot) cannot boot a file: refused before anything is written.
    const kexec = await replaceOnto(foreign, '--force', '--kexec');
    expect(kexec.exitCode, kexec.stderr).toBe(2);
    expect(kexec.stderr).toMatch(/--kexec: the target .* is a file/);
    expect(await sha256File(foreign)).toBe(foreignBefore);

    // A target that does not exist is never created (a mistyped /dev/sdX).
    const missing = await agent([
      '--replace-self',
      '--image',
      'tiny-linux',
      '--target-disk',
      join(work.dir, 'nope'),
    ]);
    expect(missing.exitCode, missing.stderr).toBe(4);
  });

  it('a target claimed between its check and the write: exit 5, not one byte changed', async () => {
    const loop = await attachLoop(await makeFile(join(work.dir, 'claimed.raw'), 96 * MiB));
    await writeRandomFile(loop, MiB); // something recognisable-looking to keep
    const before = await sha256File(loop);
    // The proxy holds the 'started' event, sent once every check has passed; meanwhile the
    // target is claimed (opened exclusively, as a mount or a ZFS pool would).
    const proxy = await startStallProxy(server.url, {
      hold: (method, url) => method === 'POST' && url.startsWith('/v1/events'),
    });
    onTestFinished(() => proxy.close());
    const run = agent(
      ['--replace-self', '--image', 'tiny-linux', '--target-disk', loop, '--force'],
      proxy.url,
    );
    await proxy.stalled;
    const holder = await open(loop, constants.O_RDONLY | constants.O_EXCL);
    try {
      proxy.release();
      const claimed = await run;
      expect(claimed.exitCode, claimed.stderr).toBe(5);
      expect(claimed.stderr).toMatch(/became busy after it was checked/);
      expect(claimed.stderr).toMatch(/nothing was written/);
      expect(claimed.stderr).not.toMatch(/incomplete/);
      expect(await sha256File(loop)).toBe(before);
    } finally {
      await holder.close();
    }
  });

  it('a corrupted blob: exit 7, the target left without a partition table, never reported done', async () => {
    const bad = await makeTempDir('imgagent-replace-bad-');
    await cp(store.dir, bad.dir, { recursive: true });
    const blob = join(bad.dir, '.blobs/sha256', rootSha.slice(0, 2), rootSha);
    await chmod(blob, 0o644);
    const handle = await open(blob, 'r+');
    await handle.write(Buffer.from('corrupted'), 0, 9, 8 * MiB);
    await handle.close();
    const badServer = await startServer({
      storeDir: bad.dir,
      args: ['--write-token-file', tokenFile],
    });
    servers.push(badServer);
    await writeSystem('tinybad');
    await cp(join(store.dir, 'systems/tinybad.yaml'), join(bad.dir, 'systems/tinybad.yaml'));
    const target = await makeFile(join(work.dir, 'bad-target.raw'), 80 * MiB);
    const run = await agent(
      ['--replace-self', '--system', 'tinybad', '--target-disk', target],
      badServer.url,
    );
    expect(run.exitCode, run.stderr).toBe(7);
    expect(run.stderr).toMatch(/error\[INTEGRITY\]/);
    expect(run.stderr).toMatch(/is incomplete/);
    const table = await execa('sfdisk', ['--json', target], { reject: false });
    expect(table.exitCode, 'no partition table on a disk that failed its check').not.toBe(0);
    const status = (await (
      await fetch(`${badServer.url}/v1/status?system=tinybad`)
    ).json()) as Array<{
      state: string;
      error: { code: string };
      phases: Array<{ phase: string }>;
    }>;
    expect(status[0]).toMatchObject({ state: 'failed', error: { code: 'INTEGRITY' } });
    expect(status[0]!.phases.map((p) => p.phase)).not.toContain('done');
  });

  it('a provisioning script failing after the write: exit 1, the disk made unbootable again', async () => {
    await copyImage('tiny-fail');
    await writeFile(
      join(store.dir, 'images/tiny-fail/provision.sh'),
      '#!/bin/sh\necho "failing on purpose" >&2\nexit 3\n',
    );
    const target = await makeFile(join(work.dir, 'fail-target.raw'), 80 * MiB);
    const run = await agent(['--replace-self', '--image', 'tiny-fail', '--target-disk', target]);
    expect(run.exitCode, run.stderr).toBe(1);
    expect(run.stderr).toMatch(/provision\.sh/);
    expect(run.stderr).toMatch(
      /the system disk was written but not configured: its first MiB was zeroed again/,
    );
    const head = Buffer.alloc(MiB);
    const handle = await open(target, 'r');
    await handle.read(head, 0, MiB, 0);
    await handle.close();
    expect(head.equals(Buffer.alloc(MiB)), 'the first MiB is zeros').toBe(true);
  });

  it('the server killed mid-write: exit 1 saying the disk is incomplete; a rerun completes and verifies', async () => {
    // A bigger system disk, so the write takes long enough to be cut: the appliance's disk
    // followed by random filler, in an image of its own.
    const big = join(work.dir, 'big-root.raw');
    await writeRandomFile(big, 384 * MiB);
    const root = join(store.dir, '.blobs/sha256', rootSha.slice(0, 2), rootSha);
    await execa('dd', [`if=${root}`, `of=${big}`, 'bs=1M', 'conv=notrunc', 'status=none']);
    await copyImage('tiny-big', big);
    const bigSha = await sha256File(big);

    const cutServer = await startServer({
      storeDir: store.dir,
      args: ['--write-token-file', tokenFile],
    });
    servers.push(cutServer);
    const target = await makeFile(join(work.dir, 'cut-target.raw'), 400 * MiB);
    // Through a proxy that holds the download still after 64 MiB: the server is killed while
    // the disk is certainly half-written.
    const proxy = await startStallProxy(cutServer.url, { stallAfter: 64 * MiB });
    onTestFinished(() => proxy.close());
    const cut = ['--replace-self', '--image', 'tiny-big', '--target-disk', target];
    const { child, exited, stderr } = spawnAgent(cut, proxy.url);
    await Promise.race([proxy.stalled, exited]);
    while (child.exitCode === null && (await stat(target)).blocks * 512 < 32 * MiB) await sleep(5);
    cutServer.proc.kill('SIGKILL');
    proxy.release();
    expect(await exited, stderr()).toBe(1);
    expect(stderr()).toMatch(/target disk .* is incomplete/);
    expect((await execa('sfdisk', ['--json', target], { reject: false })).exitCode).not.toBe(0);

    // The rerun writes it from the start (the target holds nothing recognisable now).
    const rerun = await agent([...cut, '--json']);
    expect(rerun.exitCode, rerun.stderr).toBe(0);
    expect(JSON.parse(rerun.stdout).disks[0]).toMatchObject({ verified: true, sha256: bigSha });

    // SIGTERM mid-write over that complete disk: the agent stops, says why, and leaves no
    // partition table behind (the old one was zeroed first, the new one never written).
    const again = spawnAgent([...cut, '--force']);
    while (again.child.exitCode === null && !again.stderr().includes('writing disk root'))
      await sleep(5);
    again.child.kill('SIGTERM');
    expect(await again.exited, again.stderr()).toBe(1);
    expect(again.stderr()).toMatch(/error\[FAILED\]: interrupted by SIGTERM/);
    expect((await execa('sfdisk', ['--json', target], { reject: false })).exitCode).not.toBe(0);
  });

  it('--update writes a new release over the system disk and keeps the data disk byte for byte', async () => {
    const imgctl = (args: string[]) => execImgctl(['--store', store.dir, ...args]);
    const release = async () => {
      const made = await imgctl(['release', 'create', 'tiny-linux', '--json']);
      expect(made.exitCode, made.stderr).toBe(0);
      return (JSON.parse(made.stdout) as { ref: string }).ref;
    };
    const first = await release();
    const set = await imgctl(['image', 'set', 'tiny-linux', 'parameters.greeting.default=updated']);
    expect(set.exitCode, set.stderr).toBe(0);
    const second = await release();
    const target = await makeFile(join(work.dir, 'update-root.raw'), 80 * MiB);
    const data = await makeFile(join(work.dir, 'update-data.raw'), 16 * MiB);
    const boot = async (name: string) => {
      const serial = await bootAppliance({
        disks: [
          { file: target, format: 'raw' },
          { file: data, format: 'raw' },
        ],
        serialLog: join(work.dir, `${name}.serial.log`),
      });
      return { report: applianceReport(serial), serial };
    };

    const installed = await agent([
      ...['--replace-self', '--image', first, '--virt-name', 'upd01'],
      ...['--target-disk', target, '--data-disk', `data=${data}`],
    ]);
    expect(installed.exitCode, installed.stderr).toBe(0);
    const one = await boot('update-1');
    expect(one.report).toMatchObject({ hostname: 'upd01', 'data-disk': 'ok', boots: '1' });
    expect(one.serial).toContain('hello from imgctl');

    const kept = await sha256File(data);
    const withData = await agent([
      ...['--replace-self', '--update', '--image', second, '--virt-name', 'upd01'],
      ...['--target-disk', target, '--data-disk', `data=${data}`, '--force'],
    ]);
    expect(withData.exitCode).toBe(2);
    expect(withData.stderr).toContain('--update never writes a data disk');
    const updated = await agent([
      ...['--replace-self', '--update', '--image', second, '--virt-name', 'upd01'],
      ...['--target-disk', target, '--force', '--json'],
    ]);
    expect(updated.exitCode, updated.stderr).toBe(0);
    expect((JSON.parse(updated.stdout) as { disks: unknown[] }).disks[1]).toMatchObject({
      id: 'data',
      skipped: 'kept: an update leaves data disks as they are',
    });
    expect(await sha256File(data)).toBe(kept);
    const two = await boot('update-2');
    expect(two.report).toMatchObject({ hostname: 'upd01', boots: '2' });
    expect(two.serial).toContain('updated');
    expect(two.serial).not.toContain('hello from imgctl');
  });
});
