/**
 * bench/serve: the throughput of `imgctl serve` for blobs next to nginx serving the same file in
 * the same run, and the latency of plan requests.
 *
 * - blobs: C clients at once (default 200), each downloading a 64 MiB blob from 127.0.0.1 with
 *   random resumes (the transfer is cut at random points and resumed with Range), every byte
 *   compared with the blob; against Debian's nginx (started here with a generated config in a
 *   temp dir, sendfile on) and the real `imgctl serve` process, taking turns --repeat times
 *   (default 2; every run is recorded, the best of each server is compared, as the machine may
 *   be shared). Limit: zero errors in every run, every byte verified, imgctl's aggregate
 *   throughput ≥ 0.7 × nginx's.
 * - plans: --repeat series of --plan-rounds rounds of 100 concurrent `GET /v1/plan` (signed
 *   plans, five kinds of request), each after --warmup-rounds uncounted rounds (default 30: a
 *   server that has been up a while). Limit: p99 < 50 ms over the steady rounds of all series
 *   pooled (p50 and p99 of each series are reported too); every third round follows a rewrite
 *   of a system file, so its plans are resolved again — reported apart, without a limit.
 *   `--compare FILE` measures another imgctl (e.g. the last commit's) on the same store in the
 *   same run, the two taking turns; it is reported, not limited.
 *
 * Writes bench/results/serve.json, prints a table, exits 1 when a limit is missed.
 *
 * `--only plans|blobs` runs one half and checks its limits (the other is reported as skipped;
 * results go to bench/results/serve-<half>.json unless --out is given); `--bin FILE` runs that
 * imgctl instead of the source one (e.g. the bundle: npm run build, then --bin dist/imgctl.mjs).
 *
 *   node --import tsx bench/serve.ts [--clients N] [--size MiB] [--resumes N] [--plan-rounds N]
 *                                    [--warmup-rounds N]
 *                                    [--repeat N] [--only plans|blobs] [--bin FILE]
 *                                    [--compare FILE] [--out FILE]
 *
 * The load average (os.loadavg) before and after is recorded with the figures: the machine may
 * be shared, and latency under load says as much about the other work as about the server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createServer, connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { median, reportHead, writeReport } from './lib/report.ts';
import { benchArgs } from './lib/args.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const IMGCTL = join(ROOT, 'packages/cli/bin/imgctl.js');
const DEFAULT_RESULTS = join(ROOT, 'bench/results/serve.json');
const LIMITS = { min_ratio_to_nginx: 0.7, plan_p99_ms: 50 };
const TIME_LIMIT_MS = 5 * 60_000;

function parseArgs(argv: string[]) {
  const args = benchArgs(
    argv,
    {
      clients: 200,
      /** MiB */
      size: 64,
      resumes: 2,
      planRounds: 15,
      /** plan rounds before each measured series, not counted */
      warmupRounds: 30,
      /** blob rounds, nginx and imgctl taking turns; the best of each is compared */
      repeat: 2,
      /** plans or blobs; empty: both */
      only: '',
      bin: IMGCTL,
      /** another imgctl whose plan latency is measured in the same run (e.g. the last commit's) */
      compare: '',
      out: '',
    },
    ['bin', 'compare', 'out'],
  );
  if (args.only !== '' && args.only !== 'plans' && args.only !== 'blobs')
    throw new Error('--only takes plans or blobs');
  args.out ||= args.only ? join(ROOT, `bench/results/serve-${args.only}.json`) : DEFAULT_RESULTS;
  return args;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

async function waitForPort(port: number, proc: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill(signal);
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

async function startNginx(work: string, blobDir: string, port: number): Promise<ChildProcess> {
  const dir = join(work, 'nginx');
  await mkdir(dir, { recursive: true });
  const asRoot = process.getuid?.() === 0;
  const conf = `${asRoot ? 'user root;\n' : ''}worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location /v1/blobs/sha256/ { alias ${blobDir}/; }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const proc = spawn(
    'nginx',
    ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', 'daemon off;'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  proc.once('error', (e) => process.stderr.write(`nginx: ${e.message}\n`));
  await waitForPort(port, proc, 'nginx');
  return proc;
}

async function startImgctl(
  bin: string,
  storeDir: string,
  work: string,
): Promise<{ proc: ChildProcess; port: number }> {
  const logFile = await open(join(work, 'serve.log'), 'w');
  const proc = spawn(
    process.execPath,
    [bin, 'serve', '--store', storeDir, '--listen', '127.0.0.1:0'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  // The request log goes to a file so the pipe never pushes back on the server.
  let head = '';
  const port = await new Promise<number>((resolvePort, reject) => {
    proc.stderr!.on('data', (chunk: Buffer) => {
      void logFile.write(chunk);
      if (head.length < 4096) {
        head += chunk.toString();
        const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(head);
        if (m) resolvePort(Number(m[1]));
      }
    });
    proc.once('exit', (code) => reject(new Error(`imgctl serve exited with ${code}:\n${head}`)));
  });
  proc.once('exit', () => void logFile.close());
  return { proc, port };
}

interface LoadResult {
  clients: number;
  bytes: number;
  requests: number;
  resumes: number;
  errors: number;
  mismatches: number;
  seconds: number;
  mb_per_s: number;
  first_errors: string[];
}

/**
 * `clients` downloads at once of the blob at `path`, each cut at `resumes` random points and
 * resumed with Range from where it stopped; every received byte is compared with `expected`.
 */
async function loadBlobs(
  port: number,
  path: string,
  expected: Buffer,
  clients: number,
  resumes: number,
): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const result: LoadResult = {
    clients,
    bytes: 0,
    requests: 0,
    resumes: 0,
    errors: 0,
    mismatches: 0,
    seconds: 0,
    mb_per_s: 0,
    first_errors: [],
  };
  const fail = (message: string) => {
    result.errors++;
    if (result.first_errors.length < 5) result.first_errors.push(message);
  };
  const deadline = Date.now() + TIME_LIMIT_MS;

  const one = async () => {
    const cuts = Array.from({ length: resumes }, () =>
      Math.floor(Math.random() * expected.length),
    ).sort((a, b) => a - b);
    let offset = 0;
    let attempts = 0;
    while (offset < expected.length) {
      if (Date.now() > deadline || attempts++ > resumes + 10) {
        fail(`gave up at ${offset} after ${attempts} requests`);
        return;
      }
      const cut = cuts.find((c) => c > offset);
      result.requests++;
      if (offset > 0) result.resumes++;
      offset = await new Promise<number>((done) => {
        let at = offset;
        const req = request(
          {
            host: '127.0.0.1',
            port,
            path,
            agent,
            headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
          },
          (res) => {
            const wanted = offset > 0 ? 206 : 200;
            if (res.statusCode !== wanted) {
              fail(`HTTP ${res.statusCode} for bytes=${offset}-`);
              res.resume();
              done(expected.length);
              return;
            }
            res.on('data', (chunk: Buffer) => {
              if (!chunk.equals(expected.subarray(at, at + chunk.length))) {
                result.mismatches++;
                fail(`content differs at ${at}`);
                req.destroy();
                done(expected.length);
                return;
              }
              at += chunk.length;
              result.bytes += chunk.length;
              if (cut !== undefined && at >= cut && at < expected.length) {
                req.destroy();
                done(at);
              }
            });
            res.on('end', () => {
              if (at !== expected.length && cut === undefined) fail(`body ended at ${at}`);
              done(at);
            });
            res.on('error', () => done(at));
          },
        );
        req.on('error', (e) => {
          if (cut === undefined || at < cut) fail(`request error at ${at}: ${e.message}`);
          done(at);
        });
        req.end();
      });
    }
  };

  const start = performance.now();
  await Promise.all(Array.from({ length: clients }, one));
  result.seconds = (performance.now() - start) / 1000;
  result.mb_per_s = Math.round(result.bytes / 1e6 / result.seconds);
  agent.destroy();
  return result;
}

interface PlanResult {
  requests: number;
  concurrency: number;
  errors: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
  /** rounds right after a system file was rewritten (informational: the limit is on the rest) */
  after_edit: { requests: number; p50_ms: number; p99_ms: number };
  /** p50/p99 of each run (the figures above pool every run) */
  runs: Array<{ p50_ms: number; p99_ms: number }>;
  /** the server's CPU time per request in steady rounds (median of the runs), µs */
  server_cpu_us_per_request: number | null;
}

/** Latencies (ms) of one series of plan rounds. */
interface PlanSamples {
  steady: number[];
  edited: number[];
  errors: number;
  /** the server's CPU time (user + system) per request over extra steady rounds, µs */
  cpuUsPerRequest?: number;
}

/** Rounds after the measured ones in which the server's CPU time is read from /proc. */
const CPU_ROUNDS = 20;

/** CPU time (user + system) a process has used so far, µs; undefined off Linux. */
async function cpuTimeUs(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
const CLOCK_TICKS = 100;

const PLAN_CONCURRENCY = 100;

function quantile(times: number[], p: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 10) / 10;
}

function summarizePlans(runs: PlanSamples[]): PlanResult {
  const steady = runs.flatMap((r) => r.steady);
  const edited = runs.flatMap((r) => r.edited);
  return {
    requests: steady.length,
    concurrency: PLAN_CONCURRENCY,
    errors: runs.reduce((n, r) => n + r.errors, 0),
    p50_ms: quantile(steady, 0.5),
    p95_ms: quantile(steady, 0.95),
    p99_ms: quantile(steady, 0.99),
    max_ms: quantile(steady, 1),
    after_edit: {
      requests: edited.length,
      p50_ms: quantile(edited, 0.5),
      p99_ms: quantile(edited, 0.99),
    },
    runs: runs.map((r) => ({ p50_ms: quantile(r.steady, 0.5), p99_ms: quantile(r.steady, 0.99) })),
    server_cpu_us_per_request: runs.every((r) => r.cpuUsPerRequest !== undefined)
      ? median(runs.map((r) => r.cpuUsPerRequest!))
      : null,
  };
}

async function loadPlans(
  port: number,
  rounds: number,
  touch: () => Promise<void>,
  warmupRounds: number,
  pid?: number,
): Promise<PlanSamples> {
  const concurrency = PLAN_CONCURRENCY;
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const targets = [
    '/v1/plan?image=web&system=web01',
    '/v1/plan?system=52:54:00:12:34:56',
    '/v1/plan?image=tiny-linux&system=tiny01',
    '/v1/plan?image=web&record=large',
    '/v1/plan?image=web&set=http_port=8081',
  ];
  const get = (path: string) =>
    new Promise<{ ms: number; ok: boolean }>((done) => {
      const t0 = performance.now();
      const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
        res.resume();
        res.on('end', () =>
          done({
            ms: performance.now() - t0,
            ok: res.statusCode === 200 && !!res.headers['imgctl-signature'],
          }),
        );
      });
      req.on('error', () => done({ ms: performance.now() - t0, ok: false }));
      req.end();
    });
  // Warm-up, not counted: loads the plan code and compiles the schemas (as any first request
  // does), then rounds until the JIT has optimized the request path, as in a server that has
  // been up for a while (with 5 rounds the first series still ran ~3× slower than the next).
  for (const t of targets) await get(t);
  for (let i = 0; i < warmupRounds; i++) {
    await Promise.all(
      Array.from({ length: concurrency }, (_, j) => get(targets[j % targets.length]!)),
    );
  }
  const steady: number[] = [];
  const edited: number[] = [];
  let errors = 0;
  for (let round = 0; round < rounds; round++) {
    // Every third round follows an edit of a system file: those plans are resolved again.
    const afterEdit = round % 3 === 2;
    if (afterEdit) await touch();
    const results = await Promise.all(
      Array.from({ length: concurrency }, (_, i) => get(targets[i % targets.length]!)),
    );
    for (const r of results) {
      (afterEdit ? edited : steady).push(r.ms);
      if (!r.ok) errors++;
    }
  }
  // The server's CPU per request, which the load of other processes on the machine does not
  // change the way it changes latency.
  const cpuBefore = await cpuTimeUs(pid);
  for (let round = 0; round < CPU_ROUNDS; round++) {
    await Promise.all(
      Array.from({ length: concurrency }, (_, i) => get(targets[i % targets.length]!)),
    );
  }
  const cpuAfter = await cpuTimeUs(pid);
  agent.destroy();
  const cpuUsPerRequest =
    cpuBefore === undefined || cpuAfter === undefined
      ? undefined
      : Math.round((cpuAfter - cpuBefore) / (CPU_ROUNDS * concurrency));
  return { steady, edited, errors, cpuUsPerRequest };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'imgctl-bench-serve-'));
  const procs: ChildProcess[] = [];
  const loadBefore = loadavg();
  try {
    const storeDir = join(work, 'store');
    await cp(join(ROOT, 'image-store'), storeDir, {
      recursive: true,
      filter: (src) =>
        !/[/\\]\.(blobs|state)([/\\]|$)/.test(src.slice(join(ROOT, 'image-store').length)),
    });
    const blob = randomBytes((args.only === 'plans' ? 1 : args.size) * 1024 * 1024);
    const hex = createHash('sha256').update(blob).digest('hex');
    const blobDir = join(storeDir, '.blobs/sha256', hex.slice(0, 2));
    await mkdir(blobDir, { recursive: true });
    await writeFile(join(blobDir, hex), blob);
    const keygen = spawn(process.execPath, [args.bin, 'keygen', '--store', storeDir], {
      stdio: 'ignore',
    });
    await new Promise((r) => keygen.once('exit', r));
    const path = `/v1/blobs/sha256/${hex}`;
    process.stderr.write(`imgctl ${args.bin}, work dir ${work}\n`);

    const served = await startImgctl(args.bin, storeDir, work);
    procs.push(served.proc);

    let plans: PlanResult | undefined;
    let baselinePlans: PlanResult | undefined;
    if (args.only !== 'blobs') {
      const systemFile = join(storeDir, 'systems/web01.yaml');
      const touch = async () => {
        // The same content under a new inode, as an editor or git writes it: the plan is resolved again.
        const text = await readFile(systemFile);
        await writeFile(`${systemFile}.tmp`, text);
        await rename(`${systemFile}.tmp`, systemFile);
      };
      // With --compare, the other imgctl serves the same store; the two take turns.
      const baseline = args.compare ? await startImgctl(args.compare, storeDir, work) : undefined;
      if (baseline) procs.push(baseline.proc);
      const samples: PlanSamples[] = [];
      const baselineSamples: PlanSamples[] = [];
      for (let i = 0; i < args.repeat; i++) {
        process.stderr.write(`plans, round ${i + 1}/${args.repeat} …\n`);
        if (baseline) {
          baselineSamples.push(
            await loadPlans(
              baseline.port,
              args.planRounds,
              touch,
              args.warmupRounds,
              baseline.proc.pid,
            ),
          );
        }
        samples.push(
          await loadPlans(served.port, args.planRounds, touch, args.warmupRounds, served.proc.pid),
        );
      }
      if (baseline) await stop(baseline.proc);
      plans = summarizePlans(samples);
      if (baseline) baselinePlans = summarizePlans(baselineSamples);
    }

    // The machine may be shared: the servers take turns, and each one's best run counts.
    const runs: Array<{ server: 'nginx' | 'imgctl'; result: LoadResult }> = [];
    if (args.only !== 'plans') {
      process.stderr.write(
        `blob ${args.size} MiB, ${args.clients} clients, ${args.resumes} random resumes each\n`,
      );
      const nginxPort = await freePort();
      const nginx = await startNginx(work, blobDir, nginxPort);
      procs.push(nginx);
      for (let i = 0; i < args.repeat; i++) {
        process.stderr.write(`blobs, round ${i + 1}/${args.repeat}: nginx …\n`);
        runs.push({
          server: 'nginx',
          result: await loadBlobs(nginxPort, path, blob, args.clients, args.resumes),
        });
        process.stderr.write(`blobs, round ${i + 1}/${args.repeat}: imgctl serve …\n`);
        runs.push({
          server: 'imgctl',
          result: await loadBlobs(served.port, path, blob, args.clients, args.resumes),
        });
      }
      await stop(nginx, 'SIGQUIT');
    }
    await stop(served.proc);
    const best = (server: string) =>
      runs
        .filter((r) => r.server === server)
        .map((r) => r.result)
        .sort((a, b) => b.mb_per_s - a.mb_per_s)[0];
    const nginxResult = best('nginx');
    const imgctlResult = best('imgctl');

    const ratio =
      nginxResult && imgctlResult
        ? Math.round((imgctlResult.mb_per_s / nginxResult.mb_per_s) * 100) / 100
        : undefined;
    const blobsOk =
      args.only === 'plans' ||
      (ratio !== undefined &&
        runs.every((r) => r.result.errors === 0 && r.result.bytes >= args.clients * blob.length) &&
        ratio >= LIMITS.min_ratio_to_nginx);
    const plansOk =
      args.only === 'blobs' ||
      (plans !== undefined && plans.errors === 0 && plans.p99_ms < LIMITS.plan_p99_ms);
    const pass = blobsOk && plansOk;
    const load = { before: loadBefore, after: loadavg() };
    const report = {
      ...reportHead('serve'),
      only: args.only || 'all',
      imgctl_bin: relative(ROOT, args.bin),
      /** 1, 5 and 15 minute load averages when the run started and ended (the machine is shared) */
      load_average: load,
      limits: LIMITS,
      blob:
        args.only === 'plans'
          ? 'skipped'
          : {
              bytes: blob.length,
              clients: args.clients,
              random_resumes_per_client: args.resumes,
            },
      nginx: nginxResult ?? 'skipped',
      imgctl: imgctlResult ?? 'skipped',
      runs: runs.map((r) => ({
        server: r.server,
        mb_per_s: r.result.mb_per_s,
        seconds: r.result.seconds,
        errors: r.result.errors,
      })),
      ratio_to_nginx: ratio ?? 'skipped',
      plan_warmup_rounds: args.warmupRounds,
      plans: plans ?? 'skipped',
      ...(baselinePlans ? { baseline: { imgctl_bin: args.compare, plans: baselinePlans } } : {}),
      pass,
    };
    await writeReport(args.out, report);
    const row = (name: string, r: LoadResult) =>
      `${name.padEnd(14)}${`${r.mb_per_s} MB/s`.padStart(12)}${`${(r.bytes / 2 ** 30).toFixed(1)} GiB`.padStart(11)}${`${r.seconds.toFixed(1)} s`.padStart(9)}${String(r.requests).padStart(10)}${String(r.errors).padStart(8)}`;
    const fmtLoad = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
    const out: string[] = [
      `load average: ${fmtLoad(load.before)} before, ${fmtLoad(load.after)} after (${cpus().length} CPUs)`,
    ];
    if (nginxResult && imgctlResult) {
      out.push(
        `serve: ${args.clients} clients × ${args.size} MiB blob, ${args.resumes} random resumes each, every byte compared; best of ${args.repeat} alternating runs (all: ${runs.map((r) => `${r.server} ${r.result.mb_per_s}`).join(', ')} MB/s)`,
        '',
        `${'server'.padEnd(14)}${'throughput'.padStart(12)}${'received'.padStart(11)}${'time'.padStart(9)}${'requests'.padStart(10)}${'errors'.padStart(8)}`,
        row('nginx', nginxResult),
        row('imgctl serve', imgctlResult),
        `ratio ${ratio} (limit ≥ ${LIMITS.min_ratio_to_nginx})`,
        '',
      );
    } else out.push('blobs: skipped (--only plans)');
    if (plans) {
      out.push(
        `plans: ${plans.requests} requests, ${plans.concurrency} at once: p50 ${plans.p50_ms} ms, p95 ${plans.p95_ms} ms, p99 ${plans.p99_ms} ms, max ${plans.max_ms} ms (limit p99 < ${LIMITS.plan_p99_ms} ms), errors ${plans.errors}`,
        `plans right after an edit (resolved again; not limited): ${plans.after_edit.requests} requests, p50 ${plans.after_edit.p50_ms} ms, p99 ${plans.after_edit.p99_ms} ms`,
        `plans, each run (p50/p99 ms): ${plans.runs.map((r) => `${r.p50_ms}/${r.p99_ms}`).join(', ')}; server CPU ${plans.server_cpu_us_per_request ?? '?'} µs per request`,
      );
      if (baselinePlans) {
        out.push(
          `baseline ${relative(ROOT, args.compare)}, same run: p50 ${baselinePlans.p50_ms} ms, p95 ${baselinePlans.p95_ms} ms, p99 ${baselinePlans.p99_ms} ms, max ${baselinePlans.max_ms} ms; after an edit p50 ${baselinePlans.after_edit.p50_ms} ms, p99 ${baselinePlans.after_edit.p99_ms} ms; each run ${baselinePlans.runs.map((r) => `${r.p50_ms}/${r.p99_ms}`).join(', ')}; server CPU ${baselinePlans.server_cpu_us_per_request ?? '?'} µs per request`,
        );
      }
    } else out.push('plans: skipped (--only blobs)');
    out.push(
      ...runs.flatMap((r) => r.result.first_errors.map((e) => `error (${r.server}): ${e}`)),
      pass ? `limits met${args.only ? ` (${args.only} only)` : ''}` : 'LIMIT MISSED',
      `results: ${args.out}`,
    );
    process.stdout.write(`${out.join('\n')}\n`);
    return pass ? 0 : 1;
  } finally {
    for (const p of procs) await stop(p, 'SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
