import type { Io } from './io.ts';

/** What a command handler returns: `data` is printed as JSON with --json, `text` otherwise. */
export interface Result {
  data: unknown;
  text: string;
  /** the exit code once the result is printed (default 0): a partly failed run still reports */
  exitCode?: number;
}

export interface Context {
  io: Io;
  json: boolean;
  /** the store directory, found from --store, $IMGCTL_STORE or the working directory */
  storeDir(): Promise<string>;
  /** a progress or log line on stderr; silent with --json */
  log(line: string): void;
}

/**
 * The options of a command as commander gives them: keyed by the camelCased long flag
 * (`--keep-scratch` → `keepScratch`), plus the global `store` and `json`.
 */
export type Options = Record<string, unknown>;

/** The options every command has, given before or after its name. */
export interface GlobalOptions {
  store?: string;
  json?: boolean;
}

/**
 * A command's handler. `O` is the shape of its options, declared next to it from its spec's
 * flags: `--x <v>` gives a string, a repeatable or `<v...>` option a string[], a switch `--x`
 * true; `--no-x` gives x false (true when not given). An option not given is absent unless it
 * has a default; a handler called directly (tests) may leave out a defaulted one too.
 */
export type Handler<O = Options> = (args: string[], options: O, ctx: Context) => Promise<Result>;

export interface OptionSpec {
  flags: string;
  description: string;
  /** for repeatable options (`--set k=v --set k2=v2`) */
  repeatable?: boolean;
  defaultValue?: string | boolean;
}

export interface CommandSpec {
  /** noun and verb, e.g. ['image', 'create']; a single word for top-level commands */
  path: string[];
  summary: string;
  /** commander argument syntax: '<name>', '[dir]', '<assignments...>' */
  args?: string[];
  options?: OptionSpec[];
  /** shown under --help; each line a command a user could run */
  examples: string[];
  /** loaded only when the command runs, so `imgctl --help` stays fast */
  load: () => Promise<{ run: Handler }>;
}
