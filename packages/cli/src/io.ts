export interface Writer {
  write(chunk: string): unknown;
}

/** Everything a command may touch of its surroundings; tests pass their own. */
export interface Io {
  stdout: Writer;
  stderr: Writer;
  env: Record<string, string | undefined>;
  cwd: string;
  /** whether stderr is a terminal progress can be drawn on (listr2 tasks) */
  isTTY: boolean;
}
