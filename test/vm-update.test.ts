/**
 * Updating a VM end to end, all real: the tiny appliance released twice on channel `stable`,
 * provisioned by the real agent into a libvirt VM, updated with `imgagent --update` (new overlay,
 * new seed, the same data disk: boots=2 with release 2's greeting), then given a release 3 whose
 * system disk does not boot: the health check fails and the agent rolls back by itself (boots=3
 * with release 2's greeting). `--rollback` by hand, and an update killed with SIGKILL at several
 * points, which always leaves a bootable VM and is completed by the next --update.
 */
import { access, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_BIN,
  type AgentRig,
  runAgent,
  startAgentRig,
  virtFlags,
} from './helpers/agent-rig.ts';
import { execImgctl } from './helpers/index.ts';
import {
  makeBridge,
  removeDomain,
  startLibvirt,
  virsh,
  waitForShutoff,
} from './helpers/libvirt.ts';
import { applianceReport } from './helpers/seed.ts';

const BRIDGE = `imgup${process.pid % 100000}`;
const VM = 'updtiny';
const GREETING = { 1: 'hello from imgctl', 2: 'hello from release 2' } as const;

interface UpdateJson {
  action: string;
  from: { generation: number; release?: string };
  to: { generation: number; release?: string };
  health?: { ok: boolean; check: string };
  failedHealth?: { ok: boolean; reason: string };
  keptDataDisks: string[];
  failedSerialLog?: string;
}

describe('slow: updating a VM to a new release, with a health check and rollback', () => {
  let rig: AgentRig;
  let removeBridge: () => Promise<void>;
  const revs: number[] = [];
  const imgctl = async (args: string[]) => {
    const out = await execImgctl(['--store', rig.store.dir, ...args]);
    expect(out.exitCode, `imgctl ${args.join(' ')}: ${out.stderr}`).toBe(0);
    return out;
  };
  const agentArgs = (args: string[]) => [
    ...['--server', rig.server.url, '--token-file', rig.tokenFile],
    ...virtFlags(rig.paths, BRIDGE),
    ...['--shutdown-timeout', '5s'],
    ...args,
  ];
  const agent = (args: string[]) => runAgent(agentArgs(args));
  const update = async (extra: string[] = []) => {
    const run = await agent(['--update', '--virt-name', VM, '--json', '--progress', ...extra]);
    return { ...run, json: run.stdout ? (JSON.parse(run.stdout) as UpdateJson) : undefined };
  };
  /** the report and greeting of the boot the serial log holds, once the appliance powered off */
  const lastBoot = async () => {
    await waitForShutoff(VM, 240_000);
    const text = await readFile(join(rig.paths.virt, `${VM}.serial.log`), 'utf8');
    return { report: applianceReport(text), text };
  };
  const release = async (channel = true) => {
    const out = await imgctl(['release', 'create', 'tiny-linux', '--json']);
    const rev = Number((JSON.parse(out.stdout) as { ref: string }).ref.split('@')[1]);
    revs.push(rev);
    if (channel) await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(rev)]);
    return rev;
  };
  const generation = async () => {
    const xml = (await virsh(['dumpxml', '--inactive', VM])).stdout;
    return Number(/generation=["'](\d+)["']/.exec(xml)?.[1]);
  };
  /** every file the defined domain uses exists: it can boot */
  const assertBootable = async () => {
    const xml = (await virsh(['dumpxml', '--inactive', VM])).stdout;
    const files = [...xml.matchAll(/<source file=["']([^"']+)["']/g)].map((m) => m[1]!);
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const file of files) await access(file);
  };

  beforeAll(async () => {
    await startLibvirt();
    await removeDomain(VM);
    rig = await startAgentRig('imgctl-update-');
    removeBridge = await makeBridge(BRIDGE);
    await writeFile(
      join(rig.store.dir, 'systems/updsys.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: updsys\nhostname: updsys\nimage: tiny-linux@stable\n',
    );
    await release();
    await imgctl(['image', 'set', 'tiny-linux', `parameters.greeting.default=${GREETING[2]}`]);
    await release(false);
  }, 600_000);

  afterAll(async () => {
    await removeDomain(VM);
    await removeBridge?.();
    await rig?.stop();
  });

  it('updates the VM to what stable points at: new greeting, boots=2, the data disk kept', async () => {
    const made = await agent(['--virt', '--system', 'updsys', '--virt-name', VM]);
    expect(made.exitCode, made.stderr).toBe(0);
    const first = await lastBoot();
    expect(first.report).toMatchObject({ hostname: 'updsys', boots: '1' });
    expect(first.text).toContain(GREETING[1]);

    // nothing to do while stable has not moved
    const same = await update();
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.json).toMatchObject({ action: 'up-to-date', to: { generation: 1 } });

    await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(revs[1])]);
    const dataDisk = join(rig.paths.virt, `${VM}-data.raw`);
    const run = await update();
    expect(run.exitCode, run.stderr + run.stdout).toBe(0);
    expect(run.json).toMatchObject({
      action: 'updated',
      from: { generation: 1, release: `tiny-linux@${revs[0]}` },
      to: { generation: 2, release: `tiny-linux@${revs[1]}` },
      health: { ok: true, check: "serial 'IMGCTL-APPLIANCE'" },
      keptDataDisks: [dataDisk],
    });
    const second = await lastBoot();
    expect(second.report).toMatchObject({ hostname: 'updsys', boots: '2', 'data-disk': 'ok' });
    expect(second.text).toContain(GREETING[2]);
    expect(second.report!['instance-id']).not.toBe(first.report!['instance-id']);
    // the first generation is kept for a rollback; the new system disk is an overlay
    const files = await readdir(rig.paths.virt);
    expect(files).toEqual(
      expect.arrayContaining([`${VM}-root.qcow2`, `${VM}-root.g2.qcow2`, `${VM}.g1.xml`]),
    );
    const info = await execa('qemu-img', [
      'info',
      '--output=json',
      join(rig.paths.virt, `${VM}-root.g2.qcow2`),
    ]);
    expect(JSON.parse(info.stdout)).toMatchObject({
      'backing-filename': expect.stringContaining('/sha256/'),
    });
    // the events say the VM runs release 2 now
    const status = JSON.parse((await imgctl(['status', '--json'])).stdout) as Array<{
      system: string;
      release: string;
    }>;
    expect(status.find((s) => s.system === 'updsys')).toMatchObject({
      release: `tiny-linux@${revs[1]}`,
    });
  });

  it('a release whose system disk does not boot fails its check and rolls back: boots=3', async () => {
    const broken = join(rig.work.dir, 'broken.raw');
    await writeFile(broken, '');
    await truncate(broken, 64 * 1024 * 1024);
    await imgctl(['disk', 'add', 'tiny-linux', '--id', 'root', '--use', 'system', broken]);
    await imgctl(['image', 'set', 'tiny-linux', 'health.timeout=25s']);
    await release();

    const run = await update();
    expect(run.exitCode, run.stderr).toBe(1);
    const message = (run.json as unknown as { error: { message: string } }).error.message;
    expect(message).toContain(
      `tiny-linux@${revs[2]} via tiny-linux@stable failed its health check (serial 'IMGCTL-APPLIANCE')`,
    );
    expect(message).toContain('did not appear on the serial console within 25s');
    expect(message).toContain(`rolled back to generation 2 (tiny-linux@${revs[1]}`);
    expect(run.json).toMatchObject({
      action: 'rolled-back',
      from: { generation: 3, release: `tiny-linux@${revs[2]}` },
      to: { generation: 2, release: `tiny-linux@${revs[1]}` },
      health: { ok: true },
      failedHealth: { ok: false },
    });
    const back = await lastBoot();
    expect(back.report).toMatchObject({ hostname: 'updsys', boots: '3' });
    expect(back.text).toContain(GREETING[2]);
    expect(await generation()).toBe(2);
    // the failed generation is gone; its boot's console was kept
    expect((await readdir(rig.paths.virt)).filter((f) => f.includes('.g3.'))).toEqual([]);
    expect(await readFile(run.json!.failedSerialLog!, 'utf8')).not.toContain('IMGCTL-APPLIANCE');
    const events = JSON.parse(
      (await imgctl(['status', '--system', 'updsys', '--json'])).stdout,
    ) as Array<{
      state: string;
      phases: Array<{ phase: string }>;
    }>;
    expect(events[0]!.state).toBe('failed');
    expect(events[0]!.phases.map((p) => p.phase)).toContain('rolled-back');
  });

  it('--rollback by hand goes back one generation, and says when there is none', async () => {
    const run = await agent(['--rollback', '--virt-name', VM, '--json']);
    expect(run.exitCode, run.stderr + run.stdout).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      action: 'rolled-back',
      from: { generation: 2 },
      to: { generation: 1, release: `tiny-linux@${revs[0]}` },
    });
    const back = await lastBoot();
    expect(back.report).toMatchObject({ boots: '4' });
    expect(back.text).toContain(GREETING[1]);
    const again = await agent(['--rollback', '--virt-name', VM]);
    expect(again.exitCode).toBe(4);
    expect(again.stderr).toContain('has no previous generation to go back to');
  });

  it('an update killed at any point leaves a bootable VM, and the next --update completes it', async () => {
    await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(revs[1])]);
    for (const line of [
      /updating updtiny: generation/,
      /defined updtiny as generation/,
      /started updtiny/,
    ]) {
      const before = await generation();
      const child = execa(
        process.execPath,
        [AGENT_BIN, ...agentArgs(['--update', '--virt-name', VM])],
        {
          reject: false,
          env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
        },
      );
      let seen = '';
      await new Promise<void>((resolve) => {
        child.stderr!.on('data', (chunk: Buffer) => {
          seen += chunk.toString();
          if (line.test(seen)) {
            child.kill('SIGKILL');
            resolve();
          }
        });
        void child.then(() => resolve());
      });
      const killed = await child;
      expect(killed.signal, `not killed at ${line}:\n${seen}`).toBe('SIGKILL');
      // the VM is on the old generation or the new one, and every file it uses is there
      expect([before, before + 1]).toContain(await generation());
      await virsh(['destroy', VM]);
      await assertBootable();

      const next = await update();
      expect(next.exitCode, next.stderr).toBe(0);
      expect(['updated', 'checked']).toContain(next.json!.action);
      expect(next.json!.to.release).toBe(`tiny-linux@${revs[1]}`);
      const boot = await lastBoot();
      expect(boot.text).toContain(GREETING[2]);
      expect(boot.report).toMatchObject({ hostname: 'updsys', 'data-disk': 'ok' });
      // back on release 1 for the next kill point
      if (line.source.startsWith('started')) break;
      const rollback = await agent(['--rollback', '--virt-name', VM]);
      expect(rollback.exitCode, rollback.stderr).toBe(0);
      await waitForShutoff(VM, 240_000);
    }
    // nothing of a dead run is left beside the two kept generations
    const files = (await readdir(rig.paths.virt)).filter((f) => f.startsWith(`${VM}`));
    expect(files.filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.xml')).length).toBeLessThanOrEqual(2);
  });
});
