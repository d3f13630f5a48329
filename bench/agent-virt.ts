/**
 * bench/agent-virt: what the agent's --virt costs, against what a sysadmin would script, in the
 * same run (the machine is shared and noisy: ratios, not absolutes).
 *
 * - pull: a 1 GiB random blob from `imgctl serve` on 127.0.0.1 into an empty blob cache
 *   (core's cache + client: streamed, hashed while it arrives, fsynced, renamed once verified), in
 *   a child process running bench/lib/pull-blob.ts bundled (as the agent is deployed), against
 *   what a sysadmin would script with the same durability: `curl -o FILE && sync FILE` (durable,
 *   unverified) and `curl -o FILE && sync FILE && sha256sum FILE` (durable, verified); plain
 *   `curl -o FILE` is reported too. Each round runs every contender once, the order rotated from
 *   round to round, after a `sync` that leaves no earlier write-back to the next one; --repeat
 *   rounds (default 5), medians compared. Limit: ≥ 1.5× as fast as the verified baseline;
 *   reported (goal ≥ 0.95×, no limit): the ratio to the durable curl.
 * - further VM: `imgagent --virt --no-start` of an image whose system disk is 64 MiB, and of one
 *   whose system disk is 4 GiB, once their blobs are cached (qcow2 overlays: the size must not
 *   matter). Limit: medians within ±20%. Needs root and libvirt (scripts/start-libvirt.sh).
 * - RSS: peak RSS of the agent (dist/imgagent.mjs, the single file `imgctl provision` copies to
 *   targets) while it pulls the 4 GiB system disk (its first VM). Limit: 150 MB.
 *
 * Writes bench/results/agent-virt.json, prints a summary, exits 1 when a limit is missed.
 *
 *   node --import tsx bench/agent-virt.ts [--repeat N] [--vms N] [--out FILE]
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { benchArgs } from './lib/args.ts';
import { bundleScript } from './lib/bundle.ts';
import { median, reportHead, timeIt, writeReport } from './lib/report.ts';
import { startServe } from './lib/serve.ts';
import { bundleAgent, exampleStoreWith } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMITS = { min_ratio_to_curl_sha256sum: 1.5, vm_time_spread: 0.2, max_rss_mb: 150 };
const GiB = 1024 ** 3;

function parseArgs(argv: string[]) {
  return benchArgs(argv, { repeat: 5, vms: 3, out: join(ROOT, 'bench/results/agent-virt.json') }, [
    'out',
  ]);
}

/** dist/imgagent.mjs (scripts/build.mjs) and bench/lib/pull-blob.ts, bundled into `outdir`. */
async function bundle(outdir: string): Promise<{ agent: string; pull: string }> {
  const agent = await bundleAgent(outdir);
  const pull = await bundleScript(
    join(ROOT, 'bench/lib/pull-blob.ts'),
    join(outdir, 'pull-blob.mjs'),
  );
  return { agent, pull };
}

/** Adds a blob to the store by hand: .blobs/sha256/ab/<hex>. */
async function addBlob(storeDir: string, file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of (await import('node:fs')).createReadStream(file, {
    highWaterMark: 4 << 20,
  }))
    hash.update(chunk as Buffer);
  const hex = hash.digest('hex');
  const dest = join(storeDir, '.blobs/sha256', hex.slice(0, 2), hex);
  await mkdir(dirname(dest), { recursive: true });
  await rename(file, dest);
  return hex;
}

/** A copy of the example store whose tiny-linux has a sparse raw system disk of `size`. */
async function storeWithSystemDisk(work: string, name: string, size: number): Promise<string> {
  const store = join(work, name);
  const root = join(work, `${name}-root.raw`);
  const data = join(work, `${name}-data.raw`);
  await execa('truncate', ['-s', String(size), root]);
  await execa('dd', [
    'if=/dev/urandom',
    `of=${root}`,
    'bs=1M',
    'count=1',
    'conv=notrunc',
    'status=none',
  ]);
  await execa('truncate', ['-s', '1M', data]);
  return exampleStoreWith(store, [
    { id: 'root', use: 'system', file: root },
    { id: 'data', use: 'data', file: data },
  ]);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'bench-agent-virt-'));
  await chmod(work, 0o755);
  const servers: ChildProcess[] = [];
  const domains: string[] = [];
  const bridge = `imgbb${process.pid % 100000}`;
  let bridgeMade = false;
  const failures: string[] = [];
  try {
    // What runs on a target is the single-file bundle, not the TypeScript source through tsx.
    const bundles = await bundle(join(work, 'dist'));
    const tokenFile = join(work, 'token');
    await writeFile(tokenFile, `${'b3nch'.repeat(8)}\n`, { mode: 0o600 });

    // ---- pull: 1 GiB random blob
    const store64 = await storeWithSystemDisk(work, 'store64', 64 << 20);
    const random = join(work, 'random.bin');
    await execa('dd', ['if=/dev/urandom', `of=${random}`, 'bs=4M', 'count=256', 'status=none']);
    const hex = await addBlob(store64, random);
    const serve64 = await startServe(store64, ['--write-token-file', tokenFile]);
    servers.push(serve64.proc);
    const blobUrl = `${serve64.url}/v1/blobs/sha256/${hex}`;
    const contenders = {
      agent: (dir: string) =>
        execa(process.execPath, [bundles.pull, serve64.url, hex, join(dir, 'cache')]),
      curl_sync: async (dir: string) => {
        await execa('curl', ['-sf', '-o', join(dir, 'b.bin'), blobUrl]);
        await execa('sync', [join(dir, 'b.bin')]);
      },
      curl_sync_sha256sum: async (dir: string) => {
        await execa('curl', ['-sf', '-o', join(dir, 'a.bin'), blobUrl]);
        await execa('sync', [join(dir, 'a.bin')]);
        const sum = await execa('sha256sum', [join(dir, 'a.bin')]);
        if (!sum.stdout.startsWith(hex)) throw new Error('curl: wrong content');
      },
      curl: (dir: string) => execa('curl', ['-sf', '-o', join(dir, 'c.bin'), blobUrl]),
    };
    type Contender = keyof typeof contenders;
    const names = Object.keys(contenders) as Contender[];
    const runs = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<
      Contender,
      number[]
    >;
    for (let i = 0; i < args.repeat; i++) {
      const order = names.map((_, k) => names[(k + i) % names.length]!);
      for (const name of order) {
        const dir = join(work, `pull-${i}-${name}`);
        await mkdir(dir);
        await execa('sync');
        runs[name].push(await timeIt(() => contenders[name](dir)));
        await rm(dir, { recursive: true, force: true });
      }
    }
    const medians = Object.fromEntries(names.map((n) => [n, median(runs[n])])) as Record<
      Contender,
      number
    >;
    const pull = {
      size_bytes: GiB,
      seconds: runs,
      median_s: medians,
      ratio_to_curl_sha256sum: medians.curl_sync_sha256sum / medians.agent,
      ratio_to_durable_curl: medians.curl_sync / medians.agent,
      ratio_to_curl: medians.curl / medians.agent,
    };
    if (pull.ratio_to_curl_sha256sum < LIMITS.min_ratio_to_curl_sha256sum)
      failures.push(
        `pull: ${pull.ratio_to_curl_sha256sum.toFixed(2)}× curl+sync+sha256sum, limit ${LIMITS.min_ratio_to_curl_sha256sum}×`,
      );

    // ---- further VMs: 64 MiB vs 4 GiB system disk; RSS of the 4 GiB pull
    let vm: Record<string, unknown> = { skipped: 'needs root' };
    let rss: Record<string, unknown> = { skipped: 'needs root' };
    if (process.getuid?.() === 0) {
      await execa('bash', [join(ROOT, 'scripts/start-libvirt.sh')]);
      await execa('ip', ['link', 'add', bridge, 'type', 'bridge']);
      bridgeMade = true;
      const store4g = await storeWithSystemDisk(work, 'store4g', 4 * GiB);
      const serve4g = await startServe(store4g, ['--write-token-file', tokenFile]);
      servers.push(serve4g.proc);
      const agent = (url: string, name: string, cache: string) => {
        domains.push(name);
        return execa('/usr/bin/time', [
          '-f',
          'RSS_KB=%M',
          process.execPath,
          bundles.agent,
          '--server',
          url,
          '--token-file',
          tokenFile,
          '--virt',
          '--image',
          'tiny-linux',
          '--virt-name',
          name,
          '--virt-type',
          'qemu',
          '--no-start',
          '--nogfx',
          '--virt-bridge',
          bridge,
          '--virt-path',
          join(work, 'vms'),
          '--cache-dir',
          cache,
          '--log-dir',
          join(work, 'logs'),
        ]);
      };
      const cache = join(work, 'cache');
      const first = await agent(serve4g.url, 'bench-4g-first', cache);
      const rssMb = Number(/RSS_KB=(\d+)/.exec(first.stderr)![1]) / 1024;
      // What the agent takes before pulling anything.
      const idle = await execa('/usr/bin/time', [
        '-f',
        'RSS_KB=%M',
        process.execPath,
        bundles.agent,
        '--server',
        serve4g.url,
        '--list',
        'images',
      ]);
      const idleMb = Number(/RSS_KB=(\d+)/.exec(idle.stderr)![1]) / 1024;
      rss = {
        pulled_bytes: 4 * GiB,
        peak_rss_mb: Math.round(rssMb),
        baseline_list_images_rss_mb: Math.round(idleMb),
      };
      if (rssMb > LIMITS.max_rss_mb)
        failures.push(`rss: ${rssMb.toFixed(0)} MB pulling 4 GiB, limit ${LIMITS.max_rss_mb}`);
      await agent(serve64.url, 'bench-64-first', cache);
      const t: Record<'mib64' | 'gib4', number[]> = { mib64: [], gib4: [] };
      for (let i = 0; i < args.vms; i++) {
        t.mib64.push(await timeIt(() => agent(serve64.url, `bench-64-${i}`, cache)));
        t.gib4.push(await timeIt(() => agent(serve4g.url, `bench-4g-${i}`, cache)));
      }
      const spread = Math.abs(median(t.gib4) / median(t.mib64) - 1);
      vm = {
        seconds: t,
        median_s: { mib64: median(t.mib64), gib4: median(t.gib4) },
        relative_difference: spread,
      };
      if (spread > LIMITS.vm_time_spread)
        failures.push(
          `further VM: 4 GiB vs 64 MiB differ by ${(spread * 100).toFixed(0)}%, limit 20%`,
        );
    }

    const report = {
      ...reportHead('agent-virt'),
      limits: LIMITS,
      pull,
      further_vm: vm,
      rss,
      failures,
      ok: failures.length === 0,
    };
    await writeReport(args.out, report);
    process.stdout.write(
      `${JSON.stringify({ pull: { median_s: pull.median_s, ratio_to_curl_sha256sum: pull.ratio_to_curl_sha256sum, ratio_to_durable_curl: pull.ratio_to_durable_curl, ratio_to_curl: pull.ratio_to_curl }, further_vm: vm, rss, failures }, null, 2)}\n`,
    );
    return failures.length === 0 ? 0 : 1;
  } finally {
    for (const d of domains) {
      await execa('virsh', ['--connect', 'qemu:///system', 'destroy', d], { reject: false });
      await execa('virsh', ['--connect', 'qemu:///system', 'undefine', d], { reject: false });
    }
    for (const s of servers) s.kill('SIGTERM');
    if (bridgeMade) await execa('ip', ['link', 'del', bridge], { reject: false });
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
