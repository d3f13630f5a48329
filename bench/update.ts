/**
 * bench/update: what `imgagent --update --virt-name VM` and `imgagent --rollback --virt-name VM`
 * cost for a VM whose system disk is 64 MiB and for one whose system disk is 4 GiB. An update
 * puts qcow2 overlays on the cached blobs and copies nothing, so the size must not matter.
 *
 * - Two images that differ only in their system disk: 64 MiB and 4 GiB of random data, every
 *   byte allocated (a copy of the 4 GiB disk costs what `full_copy_s` reports), plus the same
 *   16 MiB data disk. Both are copies of tiny-linux without its `health:` section: the check of
 *   a new generation is then "the domain started", so the guest's boot is not part of the
 *   measure (the random system disks boot nothing; the firmware just waits).
 * - Each image released twice on channel `stable`; release 2 changes only the default of the
 *   `greeting` parameter, so its disks are the same blobs: what is timed is the update itself,
 *   never a download (the agent's progress lines are checked: no step may pull a blob).
 * - One VM per image, made with `imgagent --virt --image IMAGE@stable --no-start` (untimed; it
 *   pulls the blobs into the one cache both VMs use).
 * - --repeat rounds (default 5): both channels move to the release their VM does not run, then
 *   `--update`, `--rollback` and `--update` again are timed (wall clock of the agent process,
 *   the single-file bundle as deployed; the agent's own `seconds` reported beside it), the two
 *   VMs taking turns at every step, the first one alternating from round to round. Before each
 *   step both domains are shut off (`virsh destroy`, untimed, after the step that started one)
 *   and `sync` has run: a guest that ignores ACPI would otherwise add the whole
 *   --shutdown-timeout (5s) to every step, and a running guest would load the CPU.
 *
 * Limit: the update medians (both updates of every round) within ±20% of each other. Reported
 * (no limit): the rollback medians, and what a plain copy of each system disk costs.
 * Needs root and libvirt (scripts/start-libvirt.sh); without root it measures nothing.
 *
 * Writes bench/results/update.json, prints a summary, exits 1 when the limit is missed.
 *
 *   node --import tsx bench/update.ts [--repeat N] [--dir DIR] [--out FILE]
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parseDocument } from 'yaml';
import { writeRandomFile } from '../test/helpers/index.ts';
import { makeBridge, removeDomain, startLibvirt, virsh } from '../test/helpers/libvirt.ts';
import { benchArgs } from './lib/args.ts';
import { median, reportHead, timeIt, writeReport } from './lib/report.ts';
import { startServe } from './lib/serve.ts';
import { bundleAgent, copyImageWith, exampleStoreWith, imgctl } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMITS = { update_time_spread: 0.2 };
const MiB = 1024 * 1024;
const SIZES = { mib64: 64 * MiB, gib4: 4096 * MiB } as const;
type Size = keyof typeof SIZES;
const STEPS = ['update', 'rollback', 'update_again'] as const;
type Step = (typeof STEPS)[number];

function parseArgs(argv: string[]) {
  return benchArgs(
    argv,
    { repeat: 5, dir: tmpdir(), out: join(ROOT, 'bench/results/update.json') },
    ['dir', 'out'],
  );
}

/** What `--update`/`--rollback --json` print that the bench looks at. */
interface UpdateJson {
  action: string;
  to: { generation: number; release?: string };
  health?: { check: string; ok: boolean };
  seconds: number;
}

/** One VM under test: its image, its two releases, and which of them it runs. */
interface BenchVm {
  size: Size;
  image: string;
  name: string;
  revs: [number, number];
  on: 0 | 1;
  /** the system disk's blob in the agent's cache */
  blob: string;
}

/** Removes the image's health check: a new generation is then healthy once it has started. */
async function dropHealthCheck(store: string, image: string): Promise<void> {
  const file = join(store, 'images', image, 'image.yaml');
  const doc = parseDocument(await readFile(file, 'utf8'));
  doc.delete('health');
  await writeFile(file, doc.toString());
}

/** Releases `image` on stable, changes a parameter default, releases it again; both revisions. */
async function releaseTwice(store: string, image: string): Promise<[number, number]> {
  const release = async (args: string[]) => {
    const out = await imgctl(store, ['release', 'create', image, '--json', ...args]);
    return Number((JSON.parse(out.stdout) as { ref: string }).ref.split('@')[1]);
  };
  const first = await release(['--channel', 'stable']);
  await imgctl(store, ['image', 'set', image, 'parameters.greeting.default=hello from release 2']);
  return [first, await release([])];
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench/update: needs root (libvirt, a bridge): nothing measured\n');
    return 0;
  }
  const work = await mkdtemp(join(args.dir, 'bench-update-'));
  await chmod(work, 0o755); // qemu runs as its own user and opens the disks below it
  const servers: ChildProcess[] = [];
  const vms: BenchVm[] = [];
  let removeBridge: (() => Promise<void>) | undefined;
  try {
    await startLibvirt();
    const agentBin = await bundleAgent(join(work, 'dist'));
    const store = await exampleStoreWith(join(work, 'store'), []);
    await dropHealthCheck(store, 'tiny-linux');
    const data = join(work, 'data.raw');
    await execa('truncate', ['-s', String(16 * MiB), data]);
    for (const size of Object.keys(SIZES) as Size[]) {
      const image = `bench-update-${size}`;
      const root = join(work, `${size}.raw`);
      await writeRandomFile(root, SIZES[size]);
      const digests = await copyImageWith(store, 'tiny-linux', image, [
        { id: 'root', use: 'system', file: root },
        { id: 'data', use: 'data', file: data },
      ]);
      await rm(root);
      const revs = await releaseTwice(store, image);
      const blob = join(work, 'cache/sha256', digests.root!.slice(0, 2), digests.root!);
      vms.push({ size, image, name: `bench-upd-${size}-${process.pid}`, revs, on: 0, blob });
    }

    const serve = await startServe(store);
    servers.push(serve.proc);
    const bridge = `imgbu${process.pid % 100000}`;
    removeBridge = await makeBridge(bridge);
    /** The agent on `vm`: its JSON result and its progress lines. */
    const agent = async (vm: BenchVm, flags: string[]) => {
      const r = await execa(
        process.execPath,
        [
          agentBin,
          ...['--server', serve.url, '--virt-name', vm.name, '--virt-type', 'qemu', '--nogfx'],
          ...['--virt-bridge', bridge, '--virt-path', join(work, 'vms')],
          ...['--cache-dir', join(work, 'cache'), '--log-dir', join(work, 'logs')],
          ...['--shutdown-timeout', '5s', '--json', '--progress', ...flags],
        ],
        { reject: false },
      );
      if (r.exitCode !== 0)
        throw new Error(
          `imgagent ${flags.join(' ')} (${vm.name}) exited ${r.exitCode}:\n${r.stderr}\n${r.stdout}`,
        );
      return { result: JSON.parse(r.stdout) as UpdateJson, progress: r.stderr };
    };
    for (const vm of vms)
      await agent(vm, ['--virt', '--image', `${vm.image}@stable`, '--no-start']);

    // What the overlays save: a plain copy of each cached system disk, made durable.
    const disks: Record<string, unknown> = {};
    for (const vm of vms) {
      const st = await stat(vm.blob);
      const copy = join(work, 'copy.raw');
      await execa('sync');
      const copySeconds = await timeIt(async () => {
        await execa('cp', ['--reflink=never', '--sparse=never', vm.blob, copy]);
        await execa('sync', [copy]);
      });
      await rm(copy);
      disks[vm.size] = {
        image: vm.image,
        virtual_bytes: st.size,
        allocated_bytes: st.blocks * 512,
        full_copy_s: copySeconds,
      };
    }

    const empty = () => ({ update: [], rollback: [], update_again: [] }) as Record<Step, number[]>;
    const wall = { mib64: empty(), gib4: empty() } as Record<Size, Record<Step, number[]>>;
    const reported = { mib64: empty(), gib4: empty() } as Record<Size, Record<Step, number[]>>;
    /** One timed step; the VM is shut off again afterwards, outside the time. */
    const timedStep = async (vm: BenchVm, step: Step) => {
      const to = (1 - vm.on) as 0 | 1; // every step switches releases
      const flags = step === 'rollback' ? ['--rollback'] : ['--update'];
      let run: Awaited<ReturnType<typeof agent>> | undefined;
      await execa('sync');
      const seconds = await timeIt(async () => {
        run = await agent(vm, flags);
      });
      const { result, progress } = run!;
      const want = step === 'rollback' ? 'rolled-back' : 'updated';
      const release = `${vm.image}@${vm.revs[to]}`;
      if (result.action !== want || result.to.release !== release)
        throw new Error(
          `${vm.name} ${step}: ${result.action} to ${result.to.release}, expected ${want} to ${release}`,
        );
      if (result.health?.check !== 'none' || !result.health.ok)
        throw new Error(
          `${vm.name} ${step}: health ${JSON.stringify(result.health)}, expected the 'none' check`,
        );
      // An update finds the system disk's blob in the cache; a rollback does not look.
      if (
        /pulled disk/.test(progress) ||
        (step !== 'rollback' && !/disk root: .* is in the cache/.test(progress))
      )
        throw new Error(
          `${vm.name} ${step}: its system disk's blob was not taken from the cache:\n${progress}`,
        );
      await virsh(['destroy', vm.name]);
      vm.on = to;
      wall[vm.size][step].push(seconds);
      reported[vm.size][step].push(result.seconds);
    };
    const loadBefore = loadavg();
    for (let round = 0; round < args.repeat; round++) {
      const order = round % 2 ? [...vms].reverse() : vms;
      for (const vm of vms)
        await imgctl(store, ['channel', 'set', vm.image, 'stable', String(vm.revs[1 - vm.on])]);
      for (const step of STEPS) for (const vm of order) await timedStep(vm, step);
    }

    const medians = (size: Size) => ({
      update: median([...wall[size].update, ...wall[size].update_again]),
      rollback: median(wall[size].rollback),
    });
    const median_s = { mib64: medians('mib64'), gib4: medians('gib4') };
    const updateRatio = median_s.gib4.update / median_s.mib64.update;
    const spread = Math.abs(updateRatio - 1);
    const failures: string[] = [];
    if (spread > LIMITS.update_time_spread)
      failures.push(
        `update: 4 GiB vs 64 MiB system disk differ by ${(spread * 100).toFixed(0)}%, limit ${LIMITS.update_time_spread * 100}%`,
      );
    const summary = {
      median_s,
      update_ratio_4g_to_64m: updateRatio,
      rollback_ratio_4g_to_64m: median_s.gib4.rollback / median_s.mib64.rollback,
      system_disks: disks,
      failures,
    };
    await writeReport(args.out, {
      ...reportHead('update'),
      limits: LIMITS,
      rounds: args.repeat,
      // the machine is shared: what else ran shows here (1-minute load, before and after)
      load_average: { before: loadBefore[0], after: loadavg()[0] },
      seconds: wall,
      agent_reported_seconds: reported,
      ...summary,
      ok: failures.length === 0,
    });
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return failures.length === 0 ? 0 : 1;
  } finally {
    for (const vm of vms) await removeDomain(vm.name);
    for (const s of servers) s.kill('SIGTERM');
    await removeBridge?.();
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
