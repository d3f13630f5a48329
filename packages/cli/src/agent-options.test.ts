import { describe, expect, it } from 'vitest';
import { agentArguments } from './agent-options.ts';

describe('agentArguments', () => {
  it('passes the relayed options in table order, --agent-arg last, never --set', () => {
    expect(
      agentArguments({
        agentArg: ['--progress', 'plain'],
        set: ['password=secret'],
        virtName: 'web01',
        virt: true,
        image: 'web',
        start: false,
        reboot: false,
        dryRun: false,
      }),
    ).toEqual([
      '--image',
      'web',
      '--virt',
      '--virt-name',
      'web01',
      '--no-start',
      '--no-reboot',
      '--progress',
      'plain',
    ]);
  });

  it('passes --reboot for reboot true and nothing for options not given', () => {
    expect(agentArguments({ replaceSelf: true, reboot: true, start: true })).toEqual([
      '--replace-self',
      '--reboot',
    ]);
    expect(agentArguments({})).toEqual([]);
  });
});
