/**
 * `imgctl provision` relays agent flags from a table of its own (cli/agent-options.ts):
 * every one must be a flag the real `imgagent` accepts, taking a value exactly when the agent's
 * does, and an agent flag provision does not relay is one chosen not to be.
 */
import { describe, expect, it } from 'vitest';
import { AGENT_OPTIONS } from '../packages/cli/src/agent-options.ts';
import { runAgent } from './helpers/agent-rig.ts';

/** Agent flags provision sets itself or that make no sense across SSH; --agent-arg reaches them. */
const NOT_RELAYED = [
  '--version',
  '--help',
  '--server',
  '--token',
  '--token-file',
  '--json',
  '--progress',
  '--list',
  '--display',
  '--print-xml',
  '--trust',
  '--data-disk',
  // imgctl provision passes it itself: the channel it pinned
  '--follow',
  // a VM is rolled back on its host, by hand
  '--rollback',
];

/** Each long flag of `--help` output, and whether it takes a value. */
function helpFlags(help: string): Map<string, boolean> {
  const flags = new Map<string, boolean>();
  for (const m of help.matchAll(/^ {2}(?:-\w, )?(--[a-z][a-z-]*)( <[^>]+>)?/gm))
    flags.set(m[1]!, m[2] !== undefined);
  return flags;
}

describe('imgctl provision and imgagent flags', () => {
  it('relays only flags imgagent accepts, and every agent flag not relayed is listed', async () => {
    const help = await runAgent(['--help']);
    expect(help.exitCode, help.stderr).toBe(0);
    const agent = helpFlags(help.stdout);
    expect(agent.get('--virt-name')).toBe(true);
    expect(agent.get('--nogfx')).toBe(false);

    const relayed = new Map<string, boolean>();
    for (const o of AGENT_OPTIONS) {
      if (o.key === 'agentArg') continue;
      relayed.set(
        o.flags.split(/[ ,]+/).find((f) => f.startsWith('--'))!,
        o.value !== false,
      );
    }
    for (const [flag, takesValue] of relayed) {
      expect(agent.has(flag), `imgagent has no ${flag}`).toBe(true);
      expect(agent.get(flag), `${flag} takes a value in one and not the other`).toBe(takesValue);
    }
    const rest = [...agent.keys()].filter((f) => !relayed.has(f));
    expect(rest.sort()).toEqual([...NOT_RELAYED].sort());
  });
});
