import type { DocCommand, DocOption } from './tree.ts';

export interface ManPage {
  /** 'imgctl-image-create': the page is NAME.1 */
  name: string;
  text: string;
}

export interface ManMeta {
  /** the program's version, shown in the footer */
  version: string;
  /** YYYY-MM-DD, shown in the footer (a fixed date keeps the pages reproducible) */
  date: string;
}

/**
 * Section 1 man pages of a program, one per command (git's style: `man imgctl-image-create`),
 * written from the same tree --help prints: usage, description, options with their defaults,
 * subcommands, and the text after the options (examples, exit codes) as sections of their own.
 * commander's `help [command]` gets no page.
 */
export function manPages(root: DocCommand, meta: ManMeta): ManPage[] {
  return commandsOf(root).map((command) => ({
    name: pageName(command),
    text: manPage(command, root, meta),
  }));
}

/** The command and every command below it, parents first; the builtin help left out. */
function commandsOf(command: DocCommand): DocCommand[] {
  if (command.builtin) return [];
  return [command, ...command.commands.flatMap(commandsOf)];
}

function pageName(command: DocCommand): string {
  return command.path.join('-');
}

function manPage(command: DocCommand, root: DocCommand, meta: ManMeta): string {
  const name = pageName(command);
  const program = root.path[0]!;
  const lines = [
    `.\\" Generated from ${program}'s --help by scripts/package.ts; do not edit.`,
    `.TH ${quote(name.toUpperCase())} 1 ${quote(meta.date)} ${quote(`${program} ${meta.version}`)} ${quote(`${program} manual`)}`,
    // left-aligned, not justified nor hyphenated: option specs such as NAME[,mac=MAC][,ip=IP/PREFIX]… are words
    // too long to spread a line around
    '.ad l',
    '.nh',
    '.SH NAME',
    `${escape(name)} \\- ${escape(firstSentence(command.description))}`,
    '.SH SYNOPSIS',
    synopsis(command),
    '.SH DESCRIPTION',
    ...paragraphs(command.description),
  ];
  if (command.options.length > 0) lines.push('.SH OPTIONS', ...command.options.flatMap(option));
  const below = commandsOf(command)
    .slice(1)
    .filter((c) => c.commands.length === 0);
  if (below.length > 0) {
    lines.push('.SH COMMANDS');
    for (const c of below) {
      lines.push('.TP', synopsis(c), `${escape(c.description)} See`, seeAlso(c) + '.');
    }
  }
  lines.push(...afterSections(command.after));
  const related = [
    ...(command.path.length > 1 ? [root] : []),
    ...(command.path.length > 2 ? [parentOf(command, root)] : []),
    ...command.commands.filter((c) => !c.builtin),
  ];
  if (related.length > 0) {
    lines.push('.SH SEE ALSO');
    related.forEach((c, i) => lines.push(seeAlso(c) + (i < related.length - 1 ? ',' : '')));
  }
  return `${lines.join('\n')}\n`;
}

function parentOf(command: DocCommand, root: DocCommand): DocCommand {
  let node = root;
  for (const word of command.path.slice(1, -1))
    node = node.commands.find((c) => c.path.at(-1) === word) ?? node;
  return node;
}

/** `.BR imgctl\-image\-create (1)` */
function seeAlso(command: DocCommand): string {
  return `.BR ${escape(pageName(command))} (1)`;
}

/** The usage line: the command's words in bold, placeholders in italics. */
function synopsis(command: DocCommand): string {
  const words = command.usage.split(' ');
  const commandWords = command.path.length;
  return words
    .map((word, i) => (i < commandWords ? `\\fB${escape(word)}\\fR` : placeholder(word)))
    .join(' ');
}

/** `<dir>` as <\fIdir\fR>, `[targets...]` as [\fItargets...\fR]; other words as they are. */
function placeholder(word: string): string {
  const m = /^([<[])(.*)([>\]])$/.exec(word);
  return m ? `${m[1]}\\fI${escape(m[2]!)}\\fR${m[3]}` : escape(word);
}

function option(o: DocOption): string[] {
  const term = o.flags
    .split(/(, | )/)
    .map((part) => (part.startsWith('-') ? `\\fB${escape(part)}\\fR` : placeholder(part)))
    .join('');
  return ['.TP', term, escape(o.description)];
}

/**
 * The text after the options, block by block: "Examples:" over indented lines becomes a
 * section of those lines as written; "Exit codes: 0 ok, …" a section of that paragraph; any
 * other paragraph goes under NOTES.
 */
function afterSections(after: string): string[] {
  const out: string[] = [];
  let notes = false;
  for (const block of after.split(/\n\s*\n/).filter((b) => b.trim() !== '')) {
    const listed = /^([A-Z][A-Za-z ]*):[ \t]*\n([\s\S]*)$/.exec(block);
    const inline = /^([A-Z][A-Za-z ]*): (\S[\s\S]*)$/.exec(block);
    if (listed) {
      out.push(`.SH ${listed[1]!.toUpperCase()}`, ...preformatted(listed[2]!));
    } else if (inline) {
      out.push(`.SH ${inline[1]!.toUpperCase()}`, ...paragraphs(inline[2]!));
    } else {
      if (!notes) out.push('.SH NOTES');
      notes = true;
      out.push(...paragraphs(block));
    }
  }
  return out;
}

function preformatted(text: string): string[] {
  const lines = text.split('\n');
  const indent = Math.min(
    ...lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length),
  );
  return ['.PP', '.RS 4', '.nf', ...lines.map((l) => escape(l.slice(indent))), '.fi', '.RE'];
}

/** Filled text: the line breaks of the source are not kept, blank lines part paragraphs. */
function paragraphs(text: string): string[] {
  return text
    .split(/\n\s*\n/)
    .filter((p) => p.trim() !== '')
    .flatMap((p) => ['.PP', escape(p.replace(/\s*\n\s*/g, ' ').trim())]);
}

function firstSentence(text: string): string {
  return /^(.*?[.!?])(\s|$)/s.exec(text)?.[1]?.replace(/\.$/, '') ?? text;
}

function quote(text: string): string {
  return `"${escape(text).replace(/"/g, '\\(dq')}"`;
}

/**
 * Text safe for roff: backslashes written as \e, each dash of a word that starts with one
 * (`--keep-scratch`, `-f`) as \- so it stays a minus sign to copy, a leading `.` or `'` kept
 * from being read as a request, other than ASCII as \[uXXXX], a word of 40 characters or more
 * allowed to break after its commas, slashes and brackets.
 */
export function escape(text: string): string {
  return (
    text
      .replace(/\\/g, '\\e')
      .replace(/(?<![\w-])-[\w-]*/g, (word) => word.replace(/-/g, '\\-'))
      .replace(/^([.'])/gm, '\\&$1')
      // a word too long for a line may break after its punctuation (\: marks where)
      .replace(/\S{40,}/g, (word) => word.replace(/([,;/|\]])(?=\S)/g, '$1\\:'))
      .replace(
        /[^\t\n -~]/gu,
        (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`,
      )
  );
}
