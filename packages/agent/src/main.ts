import { Command, CommanderError } from 'commander';

export interface AgentIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
}

const VERSION = '0.1.0';

/**
 * imgagent's entry point. The provisioning flows (--list, --display, --virt, --replace-self)
 * need the provisioning server and arrive with it; until then the agent only describes itself.
 */
export async function main(argv: string[], io: AgentIo): Promise<number> {
  const program = new Command('imgagent')
    .description(
      'Runs on a target: fetches an image and its record from an imgctl server, checks this host can run it,\n' +
        'pulls and verifies the disks, then creates a VM through libvirt (--virt) or writes the image over a\n' +
        'disk of this machine (--replace-self). See docs/ and design.md §6.',
    )
    .version(VERSION, '-V, --version')
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .action(() => {
      program.outputHelp();
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' ? 0 : 2;
    }
    throw error;
  }
}
