/**
 * The provisioning ramdisk end to end, all real: `imgctl ramdisk build` in a copy of the example
 * store (the recipe image-store/ramdisk/build.sh, with the shared build's self-contained
 * agent), the tiny appliance built and served by `imgctl serve`, and a blank disk provisioned
 * by booting the ramdisk's kernel and initramfs with qemu (software emulation, user-mode
 * networking: the host is 10.0.2.2 from the guest), then the written disk booted on its own.
 *
 * Slow: the ramdisk's first build takes ~1.5 min (most of it compressing the initramfs); the
 * finished pair is kept under the hash of all its inputs in $IMGCTL_TEST_CACHE/ramdisk (default
 * /var/cache/imgctl-test), outside the clone, so a run with the same recipe and agent copies
 * it. Each ramdisk boot takes ~20-60 s.
 */
import { createReadStream } from 'node:fs';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { stageIntoInitrd } from '../packages/core/src/agent/initrd-stage.ts';
import { INSTRUCTIONS_PATH } from '../packages/core/src/agent/via-ramdisk.ts';
import { type AgentRig, startAgentRig } from './helpers/agent-rig.ts';
import { execImgctl, MiB, startServer } from './helpers/index.ts';
import { applianceReport, bootAppliance } from './helpers/seed.ts';

const CACHE = process.env.IMGCTL_TEST_CACHE ?? '/var/cache/imgctl-test';
const DISK_BYTES = 256 * MiB;

interface Ramdisk {
  kernel: { sha256: string };
  initrd: { sha256: string };
  cmdline: string;
}

interface Boot {
  exitCode: number | undefined;
  serial: string;
}

describe('slow: the provisioning ramdisk provisions an empty machine', () => {
  let rig: AgentRig;
  let ramdisk: Ramdisk;
  let token: string;

  const blob = (sha256: string) => join(rig.store.dir, '.blobs/sha256', sha256.slice(0, 2), sha256);
  const imgctl = (args: string[], env: Record<string, string> = {}) =>
    execImgctl(['--store', rig.store.dir, ...args], { env, timeoutMs: 600_000 });

  beforeAll(async () => {
    rig = await startAgentRig('imgctl-ramdisk-');
    const built = await imgctl(['ramdisk', 'build'], {
      IMGCTL_BUILD_CACHE: CACHE,
      IMGCTL_AGENT_EXECUTABLE: join(inject('distDir'), 'imgagent-linux-x64'),
    });
    if (built.exitCode !== 0) throw new Error(`imgctl ramdisk build failed:\n${built.stderr}`);
    ramdisk = parse(await readFile(join(rig.store.dir, 'ramdisk/ramdisk.yaml'), 'utf8')) as Ramdisk;
    token = (await readFile(rig.tokenFile, 'utf8')).trim();
  }, 900_000);

  afterAll(async () => {
    await rig?.stop();
  });

  /** systems/NAME.yaml: the tiny appliance (or `image`) written to /dev/vda. */
  async function addSystem(
    name: string,
    hostname: string,
    image = 'tiny-linux',
    targetDisk: string | undefined = '/dev/vda',
  ): Promise<void> {
    await writeFile(
      join(rig.store.dir, 'systems', `${name}.yaml`),
      [
        'apiVersion: imgctl/v1',
        'kind: System',
        `name: ${name}`,
        `hostname: ${hostname}`,
        `image: ${image}`,
        ...(targetDisk === undefined ? [] : [`target_disk: ${targetDisk}`]),
        '',
      ].join('\n'),
    );
  }

  /**
   * Boots the ramdisk over a new blank disk (raw, virtio) with one virtio nic on user-mode
   * networking, `args` after the ramdisk's own command line. Waits for qemu to exit (the ramdisk
   * reboots, and -no-reboot ends qemu), or, with `until`, for the serial console to match it
   * and then stops qemu.
   */
  async function bootRamdisk(
    name: string,
    args: string[],
    until?: RegExp,
    initrd = blob(ramdisk.initrd.sha256),
  ): Promise<Boot & { disk: string }> {
    const disk = join(rig.work.dir, `${name}.raw`);
    const serialLog = join(rig.work.dir, `${name}.serial.log`);
    await execa('truncate', ['-s', String(DISK_BYTES), disk]);
    const qemu: ResultPromise = execa(
      'qemu-system-x86_64',
      [
        ...['-accel', 'tcg', '-m', '1024', '-nographic', '-no-reboot', '-monitor', 'none'],
        ...['-kernel', blob(ramdisk.kernel.sha256), '-initrd', initrd],
        ...['-append', [ramdisk.cmdline, ...args].join(' ')],
        ...['-drive', `file=${disk},format=raw,if=virtio`],
        ...['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0'],
        ...['-serial', `file:${serialLog}`],
      ],
      { reject: false, timeout: 280_000, stdin: 'ignore' },
    );
    const serial = () => readFile(serialLog, 'utf8').catch(() => '');
    if (until) {
      let exited = false;
      void qemu.finally(() => (exited = true));
      while (!exited && !until.test(await serial())) await sleep(250);
      qemu.kill('SIGTERM');
    }
    const run = await qemu;
    return { exitCode: run.timedOut ? undefined : run.exitCode, serial: await serial(), disk };
  }

  async function isAllZeros(file: string): Promise<boolean> {
    for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB }))
      if ((chunk as Buffer).some((byte) => byte !== 0)) return false;
    return true;
  }

  interface Status {
    state: string;
    phases: Array<{ phase: string }>;
    error: { code: string; message: string } | null;
  }

  async function statusOf(system: string): Promise<Status[]> {
    const status = await imgctl(['status', '--system', system, '--json']);
    expect(status.exitCode, status.stderr).toBe(0);
    return JSON.parse(status.stdout) as Status[];
  }

  const serverArgs = (system: string, withToken = token) => [
    `imgctl.server=http://10.0.2.2:${rig.server.port}`,
    `imgctl.system=${system}`,
    `imgctl.token=${withToken}`,
  ];

  it('boots the ramdisk, writes the system, reports every phase and reboots into the appliance', async () => {
    await addSystem('metal01', 'metal-e2e');
    const boot = await bootRamdisk('metal01', serverArgs('metal01'));
    // the ramdisk rebooted (qemu exits with -no-reboot) after the agent was done
    expect(boot.exitCode, boot.serial).toBe(0);
    expect(boot.serial).toContain('IMGCTL-RAMDISK provisioning system metal01');
    expect(boot.serial).toMatch(/imgagent: disk root written onto \/dev\/vda and verified/);
    expect(boot.serial).not.toContain('IMGCTL-RAMDISK FAILED');

    const [entry] = await statusOf('metal01');
    expect(entry!.state).toBe('done');
    expect(entry!.phases.map((p) => p.phase)).toEqual([
      'started',
      'disks-ready',
      'configured',
      'done',
    ]);

    const serial = await bootAppliance({
      disks: [{ file: boot.disk, format: 'raw' }],
      serialLog: join(rig.work.dir, 'metal01.appliance.log'),
      timeoutMs: 240_000,
    });
    expect(applianceReport(serial)?.hostname, serial).toBe('metal-e2e');
  }, 600_000);

  it('takes its instructions from a file staged into the initrd, as imgagent --via-ramdisk stages them', async () => {
    // no target_disk in the system: the instructions name it; no token on the command line
    await addSystem('metal04', 'metal-staged', 'tiny-linux', undefined);
    const staged = join(rig.work.dir, 'initrd-metal04.img');
    const instructions = [
      `server=http://10.0.2.2:${rig.server.port}`,
      'system=metal04',
      'image=tiny-linux',
      'record=default',
      'target_disk=/dev/vda',
      `token=${token}`,
    ];
    await stageIntoInitrd(
      await readFile(blob(ramdisk.initrd.sha256)),
      [{ path: INSTRUCTIONS_PATH, content: `${instructions.join('\n')}\n`, mode: 0o600 }],
      staged,
    );
    const boot = await bootRamdisk(
      'metal04',
      [`imgctl.instructions=/${INSTRUCTIONS_PATH}`],
      undefined,
      staged,
    );
    expect(boot.exitCode, boot.serial).toBe(0);
    expect(boot.serial).toMatch(/imgagent: disk root written onto \/dev\/vda and verified/);
    expect(boot.serial).not.toContain(token);
    expect((await statusOf('metal04'))[0]!.state).toBe('done');
  }, 300_000);

  it('a revoked release: says why on the console, posts failed, writes nothing', async () => {
    const created = await imgctl(['release', 'create', 'tiny-linux', '--json']);
    expect(created.exitCode, created.stderr).toBe(0);
    const { release } = JSON.parse(created.stdout) as { release: { revision: number } };
    const ref = `tiny-linux@${release.revision}`;
    await addSystem('metal02', 'metal-revoked', ref);
    const revoked = await imgctl(['release', 'revoke', ref, '--reason', 'bad greeting']);
    expect(revoked.exitCode, revoked.stderr).toBe(0);

    const boot = await bootRamdisk('metal02', serverArgs('metal02'), /dropping to a shell/);
    expect(boot.serial).toMatch(/IMGCTL-RAMDISK FAILED: .*revoked.*bad greeting/);
    expect(boot.serial).toContain('imgagent exited with status 7; nothing was written');
    expect(boot.serial).toContain("IMGCTL-RAMDISK posted 'failed' to http://10.0.2.2:");
    expect(await isAllZeros(boot.disk)).toBe(true);

    const [entry] = await statusOf('metal02');
    expect(entry!.state).toBe('failed');
    expect(entry!.error?.message).toMatch(/revoked.*bad greeting/);
  }, 300_000);

  it('a wrong token: the server refuses it, the console says so, nothing is written', async () => {
    // a server that needs a token for every read: the ramdisk's own is wrong
    const readTokenFile = join(rig.work.dir, 'read-token');
    await writeFile(readTokenFile, `${'r3ad'.repeat(8)}\n`, { mode: 0o600 });
    const strict = await startServer({
      storeDir: rig.store.dir,
      args: ['--read-token-file', readTokenFile, '--write-token-file', rig.tokenFile],
    });
    try {
      await addSystem('metal03', 'metal-wrong-token');
      const args = serverArgs('metal03', 'not-the-token-0123456789');
      args[0] = `imgctl.server=http://10.0.2.2:${strict.port}`;
      const boot = await bootRamdisk('metal03', args, /dropping to a shell/);
      expect(boot.serial).toMatch(/IMGCTL-RAMDISK FAILED: .*(403|token)/i);
      expect(boot.serial).toContain('nothing was written');
      expect(boot.serial).toMatch(/IMGCTL-RAMDISK could not post 'failed' to .*403/);
      expect(await isAllZeros(boot.disk)).toBe(true);
      expect((await statusOf('metal03'))[0]!.state).toBe('pending');
    } finally {
      await strict.stop();
    }
  }, 300_000);

  it('is made again, from the same downloads but nothing else cached, with the same bytes', async () => {
    // a cache of its own holding only the downloaded packages: the initramfs is made afresh
    const cache = join(rig.work.dir, 'build-cache');
    await cp(join(CACHE, 'ramdisk', 'debs'), join(cache, 'ramdisk', 'debs'), { recursive: true });
    const file = join(rig.store.dir, 'ramdisk/ramdisk.yaml');
    const before = await readFile(file, 'utf8');
    const again = await imgctl(['ramdisk', 'build', '--json'], {
      IMGCTL_BUILD_CACHE: cache,
      IMGCTL_AGENT_EXECUTABLE: join(inject('distDir'), 'imgagent-linux-x64'),
    });
    expect(again.exitCode, again.stderr).toBe(0);
    const log = await readFile((JSON.parse(again.stdout) as { log: string }).log, 'utf8');
    expect(log).toContain('making the initramfs');
    expect((JSON.parse(again.stdout) as { changed: boolean }).changed).toBe(false);
    expect(await readFile(file, 'utf8')).toBe(before);
  }, 600_000);
});
