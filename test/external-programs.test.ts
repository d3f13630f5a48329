/**
 * Every program the code runs on this machine comes from a Debian package that
 * scripts/setup-test-env.sh installs (the one list `npm test` and `npm run demo` use). The programs are found in the source: the first
 * argument of each run/execa/spawn call in packages/*\/src, and each command of the shell scripts
 * run here (scripts/, the tiny appliance's build.sh and provision.sh, debian-12's build.sh, the
 * store's shell library).
 * Essential packages and those of priority required are on every Debian system; Node is the
 * README's prerequisite; two programs the agent runs on a target only when asked are the
 * target's choice (TARGET_CHOICES).
 * A program missing from the list fails here rather than on a user's first run.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/index.ts';

/** Calls whose first argument is the program they start. */
const RUNNERS = new Set(['run', 'execa', 'spawn', 'startFilter', 'execFile', 'execFileSync']);

/**
 * Shell scripts that run on this machine. The web image's scripts are left out: they configure a
 * web appliance, on the appliance.
 */
const SHELL_SCRIPTS = [
  'scripts/demo.sh',
  'scripts/setup-test-env.sh',
  'scripts/start-libvirt.sh',
  'scripts/test.sh',
  'image-store/common/functions.sh',
  'image-store/common/debian-build.sh',
  'image-store/ramdisk/build.sh',
  'image-store/images/tiny-linux/build.sh',
  'image-store/images/tiny-linux/provision.sh',
  'image-store/images/debian-12/build.sh',
];

/** What the README asks of a machine before anything: Node (with npm). */
const PREREQUISITES = new Set(['node', 'npm', 'npx']);

/**
 * Programs the agent runs only on a target, only when asked: what the target's operator chose
 * (the agent says so when one is missing).
 */
const TARGET_CHOICES = new Map([
  ['kexec', 'imgagent --replace-self --kexec: kexec-tools'],
  ['systemctl', 'imgagent --replace-self --reboot: systemd'],
]);

/** Words that start a command but are followed by another command. */
const PREFIXES = new Set(['exec', 'command', 'env', 'nohup', 'timeout', 'xargs', 'if', 'then']);
PREFIXES.add('else').add('elif').add('do').add('while').add('until').add('!').add('time');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.test.ts'))
    .map((e) => join(e.parentPath, e.name));
}

/** Programs named by a string literal (or a const holding one) as a runner's first argument. */
function programsOfTs(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
  const consts = new Map<string, string>();
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if (
      ts.isVariableDeclaration(node) &&
      ts.isIdentifier(node.name) &&
      node.initializer &&
      ts.isStringLiteral(node.initializer)
    )
      consts.set(node.name.text, node.initializer.text);
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const name = ts.isPropertyAccessExpression(callee)
        ? callee.name.text
        : callee.getText(source);
      const first = node.arguments[0];
      if (RUNNERS.has(name) && first) {
        if (ts.isStringLiteral(first)) found.push(first.text);
        else if (ts.isIdentifier(first)) found.push(`const:${first.text}`);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found
    .map((p) => (p.startsWith('const:') ? consts.get(p.slice(6)) : p))
    .filter((p): p is string => p !== undefined);
}

/**
 * The command words of a shell script: the first word of each simple command outside quotes
 * (inside `$( )` too), past assignments and prefixes such as `exec` or `if`. Heredoc bodies,
 * case patterns and the functions the script defines are not commands of this machine.
 */
function programsOfShell(text: string, functions: Set<string>): string[] {
  const lines: string[] = [];
  let heredoc: string | undefined;
  let inCase = 0;
  for (const raw of text.split('\n')) {
    if (heredoc !== undefined) {
      if (raw.trim() === heredoc) heredoc = undefined;
      continue;
    }
    heredoc = /<<-?\s*['"]?(\w+)['"]?/.exec(raw)?.[1];
    let line = raw;
    if (/^\s*case\b.*\bin\s*$/.test(line)) inCase += 1;
    else if (/^\s*esac\b/.test(line)) inCase -= 1;
    else if (inCase > 0) line = line.replace(/^\s*\(?(\\.|"[^"]*"|'[^']*'|[^()\\"'])*\)/, '');
    lines.push(line);
  }
  const words: string[] = [];
  let word = '';
  let atStart = true;
  let skipUntil: RegExp | undefined;
  const endWord = () => {
    if (word === '') return;
    const w = word;
    word = '';
    if (skipUntil) {
      if (skipUntil.test(w)) skipUntil = undefined;
      return;
    }
    if (!atStart) return;
    if (/^[A-Za-z_]\w*=/.test(w) || PREFIXES.has(w) || /^-/.test(w)) return;
    if (w === 'for' || w === 'case' || w === 'select') {
      skipUntil = w === 'case' ? /^in$/ : /^do$/;
      return;
    }
    atStart = false;
    if (/^[a-z][\w.+-]*$/.test(w) && !functions.has(w)) words.push(w);
  };
  const body = lines.join('\n');
  // what the text is inside of: a quote, or a $( ) / ( ) whose end returns to what held it
  const stack: Array<"'" | '"' | '$(' | '('> = [];
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    const top = stack.at(-1);
    if (top === "'") {
      if (c === "'") stack.pop();
      continue;
    }
    if (top === '"') {
      if (c === '\\') i += 1;
      else if (c === '"') stack.pop();
      else if (body.startsWith('$((', i)) i = arithmeticEnd(body, i);
      else if (c === '$' && body[i + 1] === '(') {
        stack.push('$(');
        word = '';
        atStart = true;
        i += 1;
      }
      continue;
    }
    if (c === '#' && word === '' && /\s|^/.test(body[i - 1] ?? '')) {
      i = body.indexOf('\n', i) - 1;
      if (i < 0) break;
      continue;
    }
    if (c === '\\') {
      i += 1;
      continue;
    }
    if (c === "'" || c === '"') {
      stack.push(c);
      word += c; // a quoted word is never a program name this scan can check
      continue;
    }
    if (body.startsWith('$((', i)) {
      i = arithmeticEnd(body, i);
      continue;
    }
    if (c === '$' && body[i + 1] === '(') {
      endWord();
      stack.push('$(');
      atStart = true;
      i += 1;
      continue;
    }
    if (c === ')') {
      endWord();
      stack.pop();
      continue;
    }
    if (c === '(' && word.endsWith('=')) {
      // an array assignment: its members are words, not commands
      word = '';
      i = body.indexOf(')', i);
      if (i < 0) break;
      continue;
    }
    if (c === '(') stack.push('(');
    if (/[\s;|&(){}`]/.test(c)) {
      endWord();
      if (/[\n;|&({`]/.test(c)) atStart = true;
      continue;
    }
    word += c;
  }
  endWord();
  return words;
}

/** The index of the `)` that closes the `$((` arithmetic at `start`. */
function arithmeticEnd(body: string, start: number): number {
  let depth = 0;
  for (let i = start + 1; i < body.length; i++) {
    if (body[i] === '(') depth += 1;
    else if (body[i] === ')' && --depth === 0) return i;
  }
  return body.length;
}

/** bash's `type -t` of each word: 'file', 'builtin', 'keyword', or '' when there is none. */
function kinds(words: string[]): Map<string, string> {
  const out = execFileSync(
    'bash',
    ['-c', 'for w; do printf "%s %s\\n" "$w" "$(type -t "$w")"; done', '_', ...words],
    { encoding: 'utf8' },
  );
  return new Map(
    out
      .trim()
      .split('\n')
      .map((l) => l.split(' ') as [string, string]),
  );
}

/** The Debian package a program comes from, through dpkg's file list (usrmerge-aware). */
function packageOf(program: string): string | undefined {
  const path = program.startsWith('/')
    ? program
    : execFileSync('bash', ['-c', 'command -v "$1"', '_', program], { encoding: 'utf8' }).trim();
  const real = realpathSync(path);
  const candidates = new Set([path, real, ...[path, real].map((p) => p.replace(/^\/usr/, ''))]);
  for (const candidate of candidates) {
    try {
      const out = execFileSync('dpkg-query', ['-S', candidate], {
        encoding: 'utf8',
        stdio: 'pipe',
      });
      // "pkg[, pkg]: /path" lines; "diversion by dash from: /bin/sh" says who diverts it
      const owner = /^([a-z0-9.+-]+)[^:\s]*: \//m.exec(out)?.[1];
      if (owner !== undefined) return owner;
    } catch {
      // not this spelling of the path
    }
  }
  return undefined;
}

/** Essential, or of priority required: on every Debian system, the smallest included. */
function isOnEverySystem(pkg: string): boolean {
  const out = execFileSync('dpkg-query', ['-W', '-f', '${Essential} ${Priority}', pkg], {
    encoding: 'utf8',
  });
  return out.startsWith('yes ') || out.endsWith(' required');
}

/** The packages scripts/setup-test-env.sh installs: the keys of its PACKAGES table. */
function listedPackages(): Set<string> {
  const script = readFileSync(join(REPO_ROOT, 'scripts/setup-test-env.sh'), 'utf8');
  return new Set([...script.matchAll(/^\s*\[([a-z0-9.+-]+)\]=/gm)].map((m) => m[1]!));
}

describe('the programs the code runs', () => {
  const fromTs = new Map<string, string>();
  const tsFiles = [
    ...['core', 'cli', 'agent'].flatMap((pkg) =>
      sourceFiles(join(REPO_ROOT, 'packages', pkg, 'src')),
    ),
    // npm run package and npm run build
    join(REPO_ROOT, 'scripts/package.ts'),
    join(REPO_ROOT, 'scripts/build.mjs'),
  ];
  for (const file of tsFiles)
    for (const program of programsOfTs(file)) fromTs.set(program, relative(REPO_ROOT, file));
  const scripts = SHELL_SCRIPTS.map((script) => ({
    script,
    text: readFileSync(join(REPO_ROOT, script), 'utf8'),
  }));
  // the scripts source the store's shell library, so a function of one is a command of all
  const functions = new Set(
    scripts.flatMap(({ text }) =>
      [...text.matchAll(/^\s*([A-Za-z_][\w-]*)\s*\(\)/gm)].map((m) => m[1]!),
    ),
  );
  const fromShell = new Map<string, string>();
  for (const { script, text } of scripts) {
    for (const word of programsOfShell(text, functions)) fromShell.set(word, script);
  }

  it('are found in the source: the scan is not empty', () => {
    expect([...fromTs.keys()]).toEqual(expect.arrayContaining(['qemu-img', 'virsh', 'sfdisk']));
    expect([...fromShell.keys()]).toEqual(expect.arrayContaining(['depmod', 'cpio', 'apt-get']));
  });

  it('each come from a package of scripts/setup-test-env.sh, or one on every Debian system', () => {
    const listed = listedPackages();
    const shellKinds = kinds([...fromShell.keys()]);
    const programs = new Map(fromTs);
    for (const [word, script] of fromShell) {
      const kind = shellKinds.get(word) ?? '';
      if (kind === 'builtin' || kind === 'keyword') continue;
      programs.set(word, script);
    }
    const problems: string[] = [];
    for (const [program, where] of programs) {
      if (PREREQUISITES.has(program) || TARGET_CHOICES.has(program)) continue;
      let pkg: string | undefined;
      try {
        pkg = packageOf(program);
      } catch {
        problems.push(`${program} (run by ${where}) is not installed: add its package to the list`);
        continue;
      }
      if (pkg === undefined) problems.push(`${program} (run by ${where}) is in no Debian package`);
      else if (!listed.has(pkg) && !isOnEverySystem(pkg))
        problems.push(`${program} (run by ${where}) comes from ${pkg}, which is not in the list`);
    }
    expect(problems).toEqual([]);
  });
});
