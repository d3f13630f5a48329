import type { EventEmitter } from 'node:events';
import type { Command, Option } from 'commander';

/** An option as --help shows it, with what completion needs to know about its value. */
export interface DocOption {
  /** '-f, --force', '--store <dir>' */
  flags: string;
  /** the spellings a user types: ['-f', '--force'] */
  names: string[];
  /** the description with the default and choices --help appends */
  description: string;
  /** the value's placeholder ('dir' of '<dir>'), undefined for a switch */
  valueName?: string;
  choices?: string[];
}

export interface DocArgument {
  name: string;
  required: boolean;
  variadic: boolean;
}

/** One command of a program (the program itself at the root), as its --help describes it. */
export interface DocCommand {
  /** ['imgctl', 'image', 'create'] */
  path: string[];
  /** 'imgctl image create [options] <name>' */
  usage: string;
  description: string;
  arguments: DocArgument[];
  options: DocOption[];
  commands: DocCommand[];
  /** the text --help prints after the options (examples, exit codes), as written */
  after: string;
  /** commander's own `help [command]` */
  builtin: boolean;
}

/**
 * The documentation tree of a commander program: what `--help` prints for each command, read
 * through commander's Help, so man pages and completion say what --help says.
 */
export function describeProgram(program: Command): DocCommand {
  return describe(program, [], false);
}

function describe(cmd: Command, parents: string[], builtin: boolean): DocCommand {
  const help = cmd.createHelp();
  const path = [...parents, cmd.name()];
  return {
    path,
    usage: help.commandUsage(cmd),
    description: help.commandDescription(cmd),
    arguments: cmd.registeredArguments.map((a) => ({
      name: a.name(),
      required: a.required,
      variadic: a.variadic,
    })),
    options: help.visibleOptions(cmd).map((o) => describeOption(o, help.optionDescription(o))),
    commands: help.visibleCommands(cmd).map((c) => describe(c, path, !cmd.commands.includes(c))),
    after: afterText(cmd),
    builtin,
  };
}

function describeOption(option: Option, description: string): DocOption {
  const value = /[<[]([^>\]]+)[>\]]/.exec(option.flags)?.[1];
  return {
    flags: option.flags,
    names: [option.short, option.long].filter((n): n is string => n !== undefined),
    description,
    ...(value === undefined ? {} : { valueName: value.replace(/\.\.\.$/, '') }),
    ...(option.argChoices ? { choices: [...option.argChoices] } : {}),
  };
}

/** What addHelpText('after', …) adds to the command's --help. */
function afterText(cmd: Command): string {
  let text = '';
  // commander keeps that text as a listener of its 'afterHelp' event (a Command is an emitter)
  (cmd as unknown as EventEmitter).emit('afterHelp', {
    error: false,
    command: cmd,
    write: (s: string) => (text += s),
  });
  return text.replace(/^\n+|\s+$/g, '');
}
