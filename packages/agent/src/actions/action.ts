import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import type { Client } from '@imgctl/core/client/client';
import type { Flags } from '../flags.ts';
import type { AgentIo } from '../io.ts';
import { processRunner } from '@imgctl/core/util/process';
import { type MirrorAccess, mirrorRepository } from '@imgctl/core/agent/blob-sources';
import { parseOciReference } from '@imgctl/core/registry/reference';
import { openRegistry } from '@imgctl/core/registry/registry';

/** What an action gets: the parsed flags, a client of the server, and its surroundings. */
export interface ActionContext {
  flags: Flags;
  client: Client;
  io: AgentIo;
  env: Record<string, string | undefined>;
  /** a path flag resolved against the working directory */
  abs(path: string): string;
  /** a progress line on stderr; silent with --json unless --progress */
  log(line: string): void;
}

/** What an action returns: `data` is printed as JSON with --json, `text` otherwise. */
export interface ActionResult {
  data: unknown;
  text: string;
  /** thrown once the result is printed: a refused run still shows what it found */
  failure?: Error;
}

export type Action = (ctx: ActionContext) => Promise<ActionResult>;

/** The real side effects --virt and --replace-self run with. */
export function agentDeps(ctx: ActionContext) {
  const { env } = ctx;
  return {
    runner: processRunner(),
    now: () => Date.now(),
    randomHex: (bytes: number) => randomBytes(bytes).toString('hex'),
    log: ctx.log,
    signal: ctx.io.signal,
    tmpDir: tmpdir(),
    scriptEnv: {
      PATH: env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: env.HOME ?? '/root',
      LANG: env.LANG ?? 'C',
    },
    mirrors: mirrorAccess(ctx),
  };
}

/** The registries disks are pulled from before the server: --blob-mirror, then the plan's. */
function mirrorAccess(ctx: ActionContext): MirrorAccess {
  const { flags } = ctx;
  // a malformed --blob-mirror is refused before anything is done
  for (const mirror of flags.blobMirror) parseOciReference(mirrorRepository(mirror, 'image'));
  const options = {
    authFile: flags.registryAuth === undefined ? undefined : ctx.abs(flags.registryAuth),
    caFile: flags.registryCa === undefined ? undefined : ctx.abs(flags.registryCa),
    insecureHttp: flags.insecureHttp,
    signal: ctx.io.signal,
    log: ctx.log,
  };
  return {
    first: flags.blobMirror,
    parse: parseOciReference,
    open: (ref) => openRegistry(ref, options),
  };
}
