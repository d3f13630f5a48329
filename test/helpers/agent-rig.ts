/**
 * What the agent end-to-end tests (and imgctl provision's) start from: the tiny appliance built
 * in a copy of the example store, served by the real `imgctl serve` with a write token, and a
 * work directory for VM disks, the blob cache and logs.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse } from 'yaml';
import { copyExampleStore, makeTempDir, REPO_ROOT, type TempDir } from './index.ts';
import { buildAppliance } from './seed.ts';
import { startServer, type TestServer } from './server.ts';

export const AGENT_BIN = join(REPO_ROOT, 'packages/agent/bin/imgagent.js');

export interface AgentRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface AgentRig {
  store: TempDir;
  work: TempDir;
  server: TestServer;
  /** the server's write token, in a 0600 file */
  tokenFile: string;
  /** sha256 of the appliance's system disk */
  rootSha: string;
  /** under work: VM disks, the blob cache, provisioning logs */
  paths: { virt: string; cache: string; logs: string };
  stop(): Promise<void>;
}

/** The --virt flags the agent gets in the e2e tests: TCG, the rig's dirs, a bridge, no graphics. */
export function virtFlags(paths: AgentRig['paths'], bridge: string, cache = paths.cache): string[] {
  return [
    '--virt-type',
    'qemu',
    '--virt-path',
    paths.virt,
    '--cache-dir',
    cache,
    '--log-dir',
    paths.logs,
    '--virt-bridge',
    bridge,
    '--nogfx',
  ];
}

/** Builds the appliance and starts its server; `workPrefix` names the work directory. */
export async function startAgentRig(workPrefix: string): Promise<AgentRig> {
  const store = await copyExampleStore();
  const build = await buildAppliance(store.dir);
  if (build.exitCode !== 0) throw new Error(`imgctl build tiny-linux failed:\n${build.stderr}`);
  const image = parse(await readFile(join(store.dir, 'images/tiny-linux/image.yaml'), 'utf8')) as {
    disks: Array<{ id: string; sha256: string }>;
  };
  const rootSha = image.disks.find((d) => d.id === 'root')!.sha256;
  const work = await makeTempDir(workPrefix);
  // qemu runs as libvirt-qemu: it must reach the disks through world-traversable dirs.
  await chmod(work.dir, 0o755);
  const tokenFile = join(work.dir, 'token');
  await writeFile(tokenFile, `${'t0k3n'.repeat(8)}\n`, { mode: 0o600 });
  const server = await startServer({
    storeDir: store.dir,
    args: ['--write-token-file', tokenFile],
  });
  return {
    store,
    work,
    server,
    tokenFile,
    rootSha,
    paths: {
      virt: join(work.dir, 'vms'),
      cache: join(work.dir, 'cache'),
      logs: join(work.dir, 'logs'),
    },
    async stop() {
      await server.stop();
      await work.cleanup();
      await store.cleanup();
    },
  };
}

/** The real agent binary with `args`, in a clean environment; never rejects. */
export async function runAgent(args: string[]): Promise<AgentRun> {
  const run = await execa(process.execPath, [AGENT_BIN, ...args], {
    reject: false,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
  });
  return { exitCode: run.exitCode ?? -1, stdout: run.stdout, stderr: run.stderr };
}
