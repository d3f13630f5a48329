/**
 * bench/provision-fanout: what fanning out costs. `imgctl provision --virt --dry-run` against
 * one local sshd, then against 20 (each its own sshd on 127.0.0.1, so 20 distinct targets; all
 * are this machine as root), in the same run. Each agent really runs: SSH handshake, node
 * check, agent hash check, the agent's plan, host check and domain XML against a real libvirtd.
 *
 * What imgctl controls is measured and limited; the rest is the targets' own work, which here
 * all lands on this machine's cores:
 * - imgctl's own CPU per target (user + system of the `imgctl provision` process, from GNU time,
 *   startup included, divided by the targets): limit 0.1 CPU-s;
 * - the wall time of the 20-target run (default --parallel 10) against the floor this machine's
 *   CPU sets on it (the whole machine's CPU seconds of the run, /proc/stat: sshd, the agents,
 *   libvirtd, the server and imgctl, over its cores): limit 1.2×. Fan-out that serialised or
 *   idled would leave the floor behind; on a real fleet each target brings its own cores.
 * Reported, no limit: the ratio of the 20-target run to one target (two cores cannot run 20
 * targets' agents in the time of one), and the same with --parallel 20. Medians of --repeat
 * runs (default 3).
 * Needs root (sshd, libvirt, a bridge).
 *
 * Writes bench/results/provision-fanout.json, prints a summary, exits 1 when the limit is missed.
 *
 *   node --import tsx bench/provision-fanout.ts [--repeat N] [--targets N] [--out FILE]
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { startSshd, type TestSshd } from '../test/helpers/sshd.ts';
import { benchArgs } from './lib/args.ts';
import { median, reportHead, writeReport } from './lib/report.ts';
import { startServe } from './lib/serve.ts';
import { type BenchDisk, bundleAgent, exampleStoreWith } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const IMGCTL = join(ROOT, 'packages/cli/bin/imgctl.js');
const LIMITS = { max_ratio_to_cpu_floor: 1.2, max_imgctl_cpu_s_per_target: 0.1 };

function parseArgs(argv: string[]) {
  return benchArgs(
    argv,
    { repeat: 3, targets: 20, out: join(ROOT, 'bench/results/provision-fanout.json') },
    ['out'],
  );
}

/** A copy of the example store whose tiny-linux disks are small files (a dry run reads none). */
async function makeStore(work: string): Promise<string> {
  const disks: BenchDisk[] = [];
  for (const [id, use] of [
    ['root', 'system'],
    ['data', 'data'],
  ] as const) {
    const file = join(work, `${id}.raw`);
    await execa('truncate', ['-s', '1M', file]);
    disks.push({ id, use, file });
  }
  return exampleStoreWith(join(work, 'store'), disks);
}

/** CPU seconds the whole machine has spent so far (user, nice, system, irq, softirq). */
async function machineCpuSeconds(): Promise<number> {
  const fields = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/);
  const ticks = [1, 2, 3, 6, 7].reduce((sum, i) => sum + Number(fields[i]), 0);
  return ticks / 100; // USER_HZ
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write('provision-fanout: needs root (sshd, libvirt, a bridge)\n');
    return 1;
  }
  const work = await mkdtemp(join(tmpdir(), 'bench-provision-'));
  await chmod(work, 0o755);
  const bridge = `imgpf${process.pid % 100000}`;
  let bridgeMade = false;
  const sshds: TestSshd[] = [];
  let serve: ChildProcess | undefined;
  try {
    await execa('bash', [join(ROOT, 'scripts/start-libvirt.sh')]);
    await execa('ip', ['link', 'add', bridge, 'type', 'bridge']);
    bridgeMade = true;
    // The agent bundle, built once (imgctl provision takes it through IMGCTL_AGENT_BUNDLE).
    const agentBundle = await bundleAgent(join(work, 'dist'));
    const store = await makeStore(work);
    const server = await startServe(store);
    serve = server.proc;
    const first = await startSshd();
    sshds.push(first);
    for (let i = 1; i < args.targets; i++)
      sshds.push(await startSshd({ clientKey: first.clientKey }));
    const knownHosts = join(work, 'known_hosts');
    await writeFile(knownHosts, sshds.map((s) => `${s.knownHostsLine}\n`).join(''));

    const provision = async (targets: string[], extra: string[] = []) => {
      const cpuStart = await machineCpuSeconds();
      const start = performance.now();
      const run = await execa(
        '/usr/bin/time',
        [
          '-f',
          'IMGCTL_CPU %U %S',
          process.execPath,
          IMGCTL,
          'provision',
          ...targets,
          '--virt',
          '--image',
          'tiny-linux',
          '--dry-run',
          '--server',
          server.url,
          '--identity',
          first.clientKey,
          '--known-hosts',
          knownHosts,
          '--virt-type',
          'qemu',
          '--virt-bridge',
          bridge,
          '--virt-path',
          join(work, 'vms'),
          '--cache-dir',
          join(work, 'cache'),
          '--log-dir',
          join(work, 'logs'),
          '--json',
          ...extra,
        ],
        {
          reject: false,
          env: { IMGCTL_AGENT_BUNDLE: agentBundle, SSH_AUTH_SOCK: '' },
        },
      );
      const seconds = (performance.now() - start) / 1000;
      const cpu = (await machineCpuSeconds()) - cpuStart;
      const summary = JSON.parse(run.stdout) as {
        ok: boolean;
        targets: Array<{ status: string; seconds: number; error?: { message: string } }>;
      };
      if (!summary.ok)
        throw new Error(
          `provision failed: ${summary.targets.map((t) => t.error?.message).join('; ')}`,
        );
      const own = /IMGCTL_CPU ([\d.]+) ([\d.]+)\s*$/.exec(run.stderr);
      if (!own) throw new Error(`no CPU time from GNU time: ${run.stderr.slice(-200)}`);
      const imgctlCpu = Number(own[1]) + Number(own[2]);
      return { seconds, cpu, imgctlCpu, perTarget: summary.targets.map((t) => t.seconds) };
    };

    // Warm-up: the agent is copied to ~/.cache/imgctl once; later runs find it up to date.
    await provision([first.target]);
    const all = sshds.map((s) => s.target);
    const runs: Record<'one' | 'many' | 'many_parallel_all', number[]> = {
      one: [],
      many: [],
      many_parallel_all: [],
    };
    const cpu: Record<'one' | 'many', number[]> = { one: [], many: [] };
    const imgctlCpuPerTarget: number[] = [];
    const perTarget: number[][] = [];
    for (let i = 0; i < args.repeat; i++) {
      const one = await provision([first.target]);
      runs.one.push(one.seconds);
      cpu.one.push(one.cpu);
      const many = await provision(all);
      runs.many.push(many.seconds);
      cpu.many.push(many.cpu);
      imgctlCpuPerTarget.push(many.imgctlCpu / all.length);
      perTarget.push(many.perTarget);
      runs.many_parallel_all.push(
        (await provision(all, ['--parallel', String(args.targets)])).seconds,
      );
    }
    const ratio = median(runs.many) / median(runs.one);
    const toFloor = median(runs.many) / (median(cpu.many) / cpus().length);
    const imgctlPerTarget = median(imgctlCpuPerTarget);
    const failures: string[] = [];
    if (toFloor > LIMITS.max_ratio_to_cpu_floor)
      failures.push(
        `${args.targets} targets took ${toFloor.toFixed(2)}× the CPU floor, limit ${LIMITS.max_ratio_to_cpu_floor}×`,
      );
    if (imgctlPerTarget > LIMITS.max_imgctl_cpu_s_per_target)
      failures.push(
        `imgctl used ${imgctlPerTarget.toFixed(3)} CPU-s per target, limit ${LIMITS.max_imgctl_cpu_s_per_target}`,
      );
    const report = {
      ...reportHead('provision-fanout'),
      limits: LIMITS,
      targets: args.targets,
      default_parallel: 10,
      seconds: runs,
      median_s: {
        one: median(runs.one),
        many: median(runs.many),
        many_parallel_all: median(runs.many_parallel_all),
      },
      ratio_many_to_one: ratio,
      machine_cpu_s: cpu,
      cores: cpus().length,
      /** wall time of the 20-target run over the least this machine's cores allow for its CPU */
      ratio_many_to_cpu_floor: toFloor,
      /** user + system CPU of the imgctl process of each 20-target run, over the targets */
      imgctl_cpu_s_per_target: imgctlCpuPerTarget,
      ratio_many_parallel_all_to_one: median(runs.many_parallel_all) / median(runs.one),
      per_target_seconds_of_many: perTarget,
      failures,
      ok: failures.length === 0,
    };
    await writeReport(args.out, report);
    process.stdout.write(
      `${JSON.stringify({ median_s: report.median_s, ratio_many_to_one: ratio, ratio_many_parallel_all_to_one: report.ratio_many_parallel_all_to_one, machine_cpu_s: cpu, ratio_many_to_cpu_floor: toFloor, imgctl_cpu_s_per_target: imgctlPerTarget, failures }, null, 2)}\n`,
    );
    return failures.length === 0 ? 0 : 1;
  } finally {
    serve?.kill('SIGTERM');
    for (const s of sshds) await s.stop();
    if (bridgeMade) await execa('ip', ['link', 'del', bridge], { reject: false });
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
