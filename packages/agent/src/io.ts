/** Everything imgagent may touch of its surroundings; tests pass their own. */
export interface AgentIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  /** default process.env */
  env?: Record<string, string | undefined>;
  /** default process.cwd() */
  cwd?: string;
  /** aborted when the run is interrupted: --virt and --replace-self stop and clean up */
  signal?: AbortSignal;
}
