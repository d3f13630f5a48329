import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import type { Client } from '@imgctl/core/client/client';
import type { Flags } from '../flags.ts';
import type { AgentIo } from '../io.ts';
import { processRunner } from '@imgctl/core/util/process';

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
  };
}
