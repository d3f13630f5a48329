import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { agentProgram } from '../../../agent/src/main.ts';
import { allCommands } from '../commands/index.ts';
import { imgctlProgram } from '../main.ts';
import { bashCompletion, valueKind } from './completion.ts';
import { escape, manPages } from './man.ts';
import { describeProgram } from './tree.ts';

const quiet = { stdout: new PassThrough(), stderr: new PassThrough() };
const imgctl = describeProgram(imgctlProgram(quiet, async () => {}));
const imgagent = describeProgram(agentProgram(quiet, async () => {}));
const meta = { version: '9.8.7', date: '2026-01-02' };
const pages = new Map(manPages(imgctl, meta).map((p) => [p.name, p.text]));
const completion = bashCompletion(imgctl);

/** The long flags of a spec's options, as written in it: '--keep-scratch'. */
const longFlags = (flags: string) => flags.match(/--[\w-]+/g) ?? [];

/**
 * What the completion offers for a command line whose last word is being completed, run in
 * bash as bash-completion would (COMP_WORDS, COMP_CWORD, then the function).
 */
function complete(script: string, words: string[], cwd = tmpdir()): string[] {
  const fn = `_${words[0]}`;
  const run = `eval "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); ${fn}; printf '%s\\n' "\${COMPREPLY[@]}"`;
  // stdin not a socket: bash would take itself for an rsh session and read ~/.bashrc
  const out = execFileSync('bash', ['-c', run, 'bash', script, ...words], {
    encoding: 'utf8',
    cwd,
    env: { PATH: process.env.PATH },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return out.split('\n').filter((l) => l !== '');
}

describe('man pages generated from the commander program', () => {
  it('give every command a page with each of its options and examples', () => {
    for (const spec of allCommands) {
      const page = pages.get(['imgctl', ...spec.path].join('-'));
      expect(page, spec.path.join(' ')).toBeDefined();
      for (const option of [
        ...(spec.options ?? []).flatMap((o) => longFlags(o.flags)),
        '--store',
        '--json',
      ])
        expect(page, `${spec.path.join(' ')} ${option}`).toContain(escape(option));
      for (const example of spec.examples) expect(page).toContain(escape(example));
      expect(page).toContain(escape(spec.summary));
    }
  });

  it('have a page per noun listing its commands, and the program page listing them all', () => {
    const nouns = new Set(allCommands.filter((s) => s.path.length > 1).map((s) => s.path[0]!));
    for (const noun of nouns) {
      const page = pages.get(`imgctl-${noun}`)!;
      for (const spec of allCommands.filter((s) => s.path[0] === noun))
        expect(page).toContain(`.BR ${escape(`imgctl-${spec.path.join('-')}`)} (1)`);
    }
    const top = pages.get('imgctl')!;
    for (const spec of allCommands) expect(top).toContain(escape(spec.summary));
    expect(top).toMatch(/^\.TH "IMGCTL" 1 "2026-01-02" "imgctl 9\.8\.7" "imgctl manual"$/m);
    expect(top).toContain('.SH EXIT CODES');
    expect(pages.size).toBe(allCommands.length + nouns.size + 1);
  });

  it('give imgagent one page with every option of its --help, and its examples', () => {
    const [page] = manPages(imgagent, meta);
    expect(page!.name).toBe('imgagent');
    for (const option of imgagent.options.flatMap((o) => o.names))
      expect(page!.text).toContain(escape(option));
    expect(page!.text).toContain('.SH EXAMPLES');
    expect(page!.text).toContain(escape('--virt-type qemu --nogfx'));
    expect(page!.text).toContain('choices: "kvm", "qemu", "auto"');
  });

  it('escape what roff would read as requests, escapes or hyphens', () => {
    expect(escape('--keep-scratch and git-friendly')).toBe('\\-\\-keep\\-scratch and git-friendly');
    expect(escape('a\\b')).toBe('a\\eb');
    expect(escape(".hidden\n'quote")).toBe("\\&.hidden\n\\&'quote");
    expect(escape('{…}')).toBe('{\\[u2026]}');
  });
});

describe('bash completion generated from the commander program', () => {
  const store = mkdtempSync(join(tmpdir(), 'imgctl-completion-'));
  afterAll(() => rmSync(store, { recursive: true, force: true }));
  writeFileSync(join(store, 'store.yaml'), 'kind: ImageStore\n');
  for (const image of ['web', 'db']) {
    mkdirSync(join(store, 'images', image), { recursive: true });
    writeFileSync(join(store, 'images', image, 'image.yaml'), '');
  }
  mkdirSync(join(store, 'systems'));
  writeFileSync(join(store, 'systems/web01.yaml'), '');

  it('knows every command and every option of each', () => {
    for (const spec of allCommands) {
      const path = spec.path.join(' ');
      const words = complete(completion, ['imgctl', ...spec.path, '--']);
      for (const option of (spec.options ?? []).flatMap((o) => longFlags(o.flags)))
        expect(words, `${path} ${option}`).toContain(option);
      expect(words).toEqual(expect.arrayContaining(['--store', '--json', '--help']));
      const parent = complete(completion, ['imgctl', ...spec.path.slice(0, -1), '']);
      expect(parent, path).toContain(spec.path.at(-1));
    }
  });

  it('completes a partial command, subcommand and option', () => {
    expect(complete(completion, ['imgctl', 'im'])).toEqual(['import', 'image']);
    expect(complete(completion, ['imgctl', 'image', 'cr'])).toEqual(['create']);
    expect(complete(completion, ['imgctl', 'serve', '--li'])).toEqual(['--listen']);
    expect(complete(completion, ['imgctl', '--json', 'sys'])).toEqual(['system']);
  });

  it("completes images and systems of the store, and an option's choices", () => {
    expect(complete(completion, ['imgctl', '--store', store, 'plan', ''])).toEqual(['db', 'web']);
    expect(complete(completion, ['imgctl', 'plan', 'web', '--system', ''], store)).toEqual([
      'web01',
    ]);
    expect(complete(completion, ['imgctl', 'plan', '--store', '=', store, 'w'])).toEqual(['web']);
    const agent = bashCompletion(imgagent);
    expect(complete(agent, ['imgagent', '--virt-type', ''])).toEqual(['kvm', 'qemu', 'auto']);
    expect(complete(agent, ['imgagent', '--repl'])).toEqual(['--replace-self']);
  });

  it('never runs what a directory name holds, and offers only valid names', () => {
    const hostile = mkdtempSync(join(tmpdir(), 'imgctl-completion-hostile-'));
    onTestFinished(() => rmSync(hostile, { recursive: true, force: true }));
    writeFileSync(join(hostile, 'store.yaml'), 'kind: ImageStore\n');
    for (const image of ['$(touch PWNED)', '`touch PWNED2`', 'ok']) {
      mkdirSync(join(hostile, 'images', image), { recursive: true });
      writeFileSync(join(hostile, 'images', image, 'image.yaml'), '');
    }
    expect(complete(completion, ['imgctl', 'plan', ''], hostile)).toEqual(['ok']);
    expect(existsSync(join(hostile, 'PWNED'))).toBe(false);
    expect(existsSync(join(hostile, 'PWNED2'))).toBe(false);
  });

  it('completes files and directories where --help names one', () => {
    expect(valueKind('dir')).toBe('@dir');
    expect(valueKind('cache-dir')).toBe('@dir');
    expect(valueKind('file')).toBe('@file');
    expect(valueKind('dev|file')).toBe('@file');
    expect(valueKind('key.pub')).toBe('@file');
    expect(valueKind('name')).toBe('');
    expect(complete(completion, ['imgctl', 'serve', '--tls-cert', join(store, 'sto')])).toEqual([
      join(store, 'store.yaml'),
    ]);
    expect(complete(completion, ['imgctl', 'init', join(store, 'im')])).toEqual([
      join(store, 'images'),
    ]);
  });
});
