import { reportError } from '@imgctl/core/util/output';
import { VERSION } from '@imgctl/core/util/version';
import { Command, CommanderError, Option } from 'commander';
import type { CommandSpec, Context, GlobalOptions, Options } from './command.ts';
import { allCommands } from './commands/index.ts';
import type { Io } from './io.ts';
import { renderResult } from './render.ts';

/** Parses argv, runs one command and returns the process exit code; never exits. */
export async function main(argv: string[], io: Io): Promise<number> {
  let exitCode = 0;
  const program = imgctlProgram(io, async (spec, args, options) => {
    exitCode = await runCommand(spec, args, options, { io, json: Boolean(options.json) });
  });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        error.code === 'commander.help'
      ) {
        return 0;
      }
      if (argv.includes('--json')) {
        const message = error.message.replace(/^error: /, '');
        const hint = 'run the command with --help for its usage and examples';
        io.stdout.write(
          `${JSON.stringify({ error: { code: 'USAGE', message, hint } }, null, 2)}\n`,
        );
      }
      return 2;
    }
    throw error;
  }
  return exitCode;
}

/**
 * imgctl's commander program: every command, option, description and example of its --help
 * (the man pages and the bash completion are generated from it too). `action` runs a command
 * once its arguments are parsed.
 */
export function imgctlProgram(
  io: Pick<Io, 'stdout' | 'stderr'>,
  action: (spec: CommandSpec, args: string[], options: Options & GlobalOptions) => Promise<void>,
): Command {
  const program = new Command('imgctl');
  program
    .description('Provision machines from a git-friendly library of virtual-machine images.')
    .version(VERSION, '-V, --version')
    .option(
      '--store <dir>',
      'the image store (default: $IMGCTL_STORE, else the nearest store.yaml above the working directory)',
    )
    .option('--json', 'machine-readable output on stdout')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();
  program.addHelpText(
    'after',
    `
Examples:
  imgctl init ./store                    create an image store
  imgctl image create web                scaffold an image
  imgctl plan web --system web01         show what would be provisioned
  imgctl image validate                  check every file of the store

Exit codes: 0 ok, 1 failed, 2 usage, 3 validation, 4 not found, 5 conflict,
6 host cannot run the image, 7 integrity.`,
  );

  for (const spec of allCommands) {
    const command = addCommand(program, spec);
    command.action(async (...actionArgs: unknown[]) => {
      const cmd = actionArgs.at(-1) as Command;
      const args = (actionArgs.slice(0, -2) as Array<string | string[] | undefined>).flatMap((a) =>
        a === undefined ? [] : a,
      );
      await action(spec, args, cmd.optsWithGlobals());
    });
  }
  return program;
}

function addCommand(program: Command, spec: CommandSpec): Command {
  let parent = program;
  for (const word of spec.path.slice(0, -1)) {
    parent =
      parent.commands.find((c) => c.name() === word) ??
      parent
        .command(word)
        .description(NOUN_DESCRIPTIONS[word] ?? word)
        .configureOutput(program.configureOutput())
        .exitOverride();
  }
  const command = parent
    .command([spec.path.at(-1)!, ...(spec.args ?? [])].join(' '))
    .description(spec.summary)
    .configureOutput(program.configureOutput())
    .exitOverride()
    .option('--store <dir>', 'the image store')
    .option('--json', 'machine-readable output on stdout');
  for (const o of spec.options ?? []) {
    const option = new Option(o.flags, o.description);
    if (o.repeatable)
      option.argParser((value: string, previous: string[] | undefined) => [
        ...(previous ?? []),
        value,
      ]);
    if (o.defaultValue !== undefined) option.default(o.defaultValue);
    command.addOption(option);
  }
  command.addHelpText('after', `\nExamples:\n${spec.examples.map((e) => `  ${e}`).join('\n')}\n`);
  return command;
}

const NOUN_DESCRIPTIONS: Record<string, string> = {
  image: 'create, copy, edit, validate and remove images',
  record: 'virtual image records: how an image is provisioned',
  system: 'target machines and what they should run',
  disk: 'the disks of an image',
  release: 'freeze image revisions as releases (IMAGE@REV), deprecate and revoke them',
  channel: 'names (stable, beta) that point at a release of an image (IMAGE@CHANNEL)',
  ramdisk: 'the provisioning ramdisk a bare machine network-boots to be provisioned',
};

async function runCommand(
  spec: CommandSpec,
  args: string[],
  options: Options & GlobalOptions,
  base: { io: Io; json: boolean },
): Promise<number> {
  const { io, json } = base;
  let storeDir: string | undefined;
  const ctx: Context = {
    io,
    json,
    async storeDir() {
      if (storeDir === undefined) {
        const { findStore } = await import('@imgctl/core/store/store');
        storeDir = await findStore({
          store: options.store,
          env: io.env,
          cwd: io.cwd,
        });
      }
      return storeDir;
    },
    log(line) {
      if (!json) io.stderr.write(`${line}\n`);
    },
  };
  try {
    const { run } = await spec.load();
    const result = await run(args, options, ctx);
    renderResult(io, json, result);
    return result.exitCode ?? 0;
  } catch (error) {
    return reportError('imgctl', io, json, error);
  }
}
