/**
 * bench/agent-virt: what the agent's --virt costs, against what a sysadmin would script, in the
 * same run (the machine is shared and noisy: ratios, not absolutes).
 *
 * - pull: a 1 GiB random blob from `imgctl serve` on 127.0.0.1 into an empty blob cache
 *   (core's cache + client: streamed, hashed while it arrives, renamed once verified), in a child
 *   process running bench/lib/pull-blob.ts bundled (as the agent is deployed), against `curl -o FILE && sha256sum FILE` and plain `curl -o FILE`. Each takes
 *   turns --repeat times (default 3); medians compared. Limits: ≥ 1.5× as fast as curl +
 *   sha256sum; reported (goal 0.9×, no limit): the ratio to plain curl.
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
import { median, reportHead, timeIt, writeReport } from './lib/report.ts';
import { startServe } from './lib/serve.ts';
import { bundleAgent, exampleStoreWith } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMITS = { min_ratio_to_curl_sha256sum: 1.5, vm_time_spread: 0.2, max_rss_mb: 150 };
const GiB = 1024 ** 3;

function parseArgs(argv: string[]) {
  return benchArgs(argv, { repeat: 3, vms: 3, out: join(ROOT, 'bench/results/agent-virt.json') }, [
    'out',
  ]);
}

/** dist/imgagent.mjs (scripts/build.mjs) and bench/lib/pull-blob.ts, bundled into `outdir`. */
async function bundle(outdir: string): Promise<{ agent: string; pull: string }> {
  const agent = await bundleAgent(outdir);
  const { build } = await import('esbuild');
  const pull = join(outdir, 'pull-blob.mjs');
  await build({
    entryPoints: [join(ROOT, 'bench/lib/pull-blob.ts')],
    outfile: pull,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    // CommonJS dependencies (yaml) call require: give them one, as scripts/build.mjs does
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
  });
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
    const runs: Record<'agent' | 'curl_sha256sum' | 'curl', number[]> = {
      agent: [],
      curl_sha256sum: [],
      curl: [],
    };
    for (let i = 0; i < args.repeat; i++) {
      const dir = join(work, `pull-${i}`);
      await mkdir(dir);
      runs.agent.push(
        await timeIt(() =>
          execa(process.execPath, [bundles.pull, serve64.url, hex, join(dir, 'cache')]),
        ),
      );
      runs.curl_sha256sum.push(
        await timeIt(async () => {
          await execa('curl', ['-sf', '-o', join(dir, 'a.bin'), blobUrl]);
          const sum = await execa('sha256sum', [join(dir, 'a.bin')]);
          if (!sum.stdout.startsWith(hex)) throw new Error('curl: wrong content');
        }),
      );
      runs.curl.push(await timeIt(() => execa('curl', ['-sf', '-o', join(dir, 'b.bin'), blobUrl])));
      await rm(dir, { recursive: true, force: true });
    }
    const pull = {
      size_bytes: GiB,
      seconds: runs,
      median_s: {
        agent: median(runs.agent),
        curl_sha256sum: median(runs.curl_sha256sum),
        curl: median(runs.curl),
      },
      ratio_to_curl_sha256sum: median(runs.curl_sha256sum) / median(runs.agent),
      ratio_to_curl: median(runs.curl) / median(runs.agent),
    };
    if (pull.ratio_to_curl_sha256sum < LIMITS.min_ratio_to_curl_sha256sum)
      failures.push(
        `pull: ${pull.ratio_to_curl_sha256sum.toFixed(2)}× curl+sha256sum, limit ${LIMITS.min_ratio_to_curl_sha256sum}×`,
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
      `${JSON.stringify({ pull: { median_s: pull.median_s, ratio_to_curl_sha256sum: pull.ratio_to_curl_sha256sum, ratio_to_curl: pull.ratio_to_curl }, further_vm: vm, rss, failures }, null, 2)}\n`,
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
