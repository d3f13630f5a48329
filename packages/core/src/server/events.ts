/**
 * Provisioning events and status (docs/server.md, "Events"): the agent reports phases, the
 * server appends them as JSON lines under .state/events/<system>.jsonl (fsynced), and status is
 * computed from those files — by `GET /v1/status` and by `imgctl status` without a server.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory } from '../yaml/document.ts';
import { compact } from '../util/compact.ts';
import { EXIT, type ErrorCode, ImgctlError } from '../util/errors.ts';
import { isValidName, printable } from '../util/names.ts';
import { parseImageRef, resolveImageRef } from '../store/releases.ts';
import { listSystems, setSystem } from '../store/systems.ts';
import { parseYamlValue } from '../yaml/quick-yaml.ts';
import { storePaths } from '../store/store.ts';

const PHASES = [
  'started',
  'disks-ready',
  'configured',
  'defined',
  'booted',
  'healthy',
  'rolled-back',
  'done',
  'failed',
] as const;
export type Phase = (typeof PHASES)[number];

/** One event as stored: what the agent sent, plus `time`, when the server received it. */
export interface ProvisionEvent {
  system: string;
  phase: Phase;
  /** ISO 8601, set by the server (the agent's clock may be wrong) */
  time: string;
  image?: string;
  /** the release provisioned (IMAGE@REV), when it was one, not the working image */
  release?: string;
  record?: string;
  vm_name?: string;
  /** for `failed`: an error code of design.md §4 (FAILED, HOST, INTEGRITY, …) */
  code?: ErrorCode;
  message?: string;
}

const MAX_TEXT = 4096;
const EVENT_FIELDS = [
  'system',
  'phase',
  'image',
  'release',
  'record',
  'vm_name',
  'code',
  'message',
];

export function eventsDir(storeDir: string): string {
  return join(storePaths.stateDir(storeDir), 'events');
}

/**
 * Checks an event body an agent sent and stamps it with `now`. Throws ImgctlError USAGE naming
 * the first field that is wrong.
 */
export function parseEvent(body: unknown, now: Date): ProvisionEvent {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ImgctlError('USAGE', 'an event is a JSON object');
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !EVENT_FIELDS.includes(k));
  if (unknown.length > 0) {
    throw new ImgctlError('USAGE', `unknown event field '${printable(unknown[0]!)}'`, {
      hint: `an event has ${EVENT_FIELDS.join(', ')}`,
    });
  }
  const name = (field: string, required: boolean): string | undefined => {
    const v = b[field];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || !isValidName(v))
      throw new ImgctlError('USAGE', `event field '${field}' must be a name (a-z, 0-9, . _ -)`);
    return v;
  };
  const text = (field: string): string | undefined => {
    const v = b[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length > MAX_TEXT)
      throw new ImgctlError(
        'USAGE',
        `event field '${field}' must be a string of at most ${MAX_TEXT} characters`,
      );
    return v;
  };
  const release = b.release;
  if (release !== undefined && !isRelease(release))
    throw new ImgctlError('USAGE', "event field 'release' must be IMAGE@REVISION, like web@3");
  const phase = b.phase;
  if (typeof phase !== 'string' || !(PHASES as readonly string[]).includes(phase)) {
    throw new ImgctlError('USAGE', `event field 'phase' must be one of ${PHASES.join(', ')}`);
  }
  const code = b.code;
  if (
    code !== undefined &&
    (typeof code !== 'string' || !Object.hasOwn(EXIT, code) || code === 'OK')
  )
    throw new ImgctlError('USAGE', `event field 'code' must be one of ${errorCodes().join(', ')}`);
  const message = text('message');
  if (phase === 'failed' && (code === undefined || message === undefined)) {
    throw new ImgctlError('USAGE', "a 'failed' event needs 'code' and 'message'");
  }
  if (phase !== 'failed' && code !== undefined)
    throw new ImgctlError('USAGE', "only a 'failed' event has a 'code'");
  return compact({
    system: name('system', true)!,
    phase: phase as Phase,
    time: now.toISOString(),
    image: name('image', false),
    release: release as string | undefined,
    record: name('record', false),
    vm_name: name('vm_name', false),
    code: code as ErrorCode | undefined,
    message,
  });
}

function isRelease(value: unknown): boolean {
  try {
    return typeof value === 'string' && parseImageRef(value).revision !== undefined;
  } catch {
    return false;
  }
}

function errorCodes(): string[] {
  return Object.keys(EXIT).filter((c) => c !== 'OK');
}

const appendQueues = new Map<string, Promise<void>>();

/**
 * Appends one event to .state/events/<system>.jsonl and fsyncs it before resolving, so an
 * acknowledged event survives a crash. Appends to one file are serialized in this process; each
 * is one write(2) to a file opened O_APPEND, so separate processes never interleave lines.
 */
export async function appendEvent(storeDir: string, event: ProvisionEvent): Promise<void> {
  const dir = eventsDir(storeDir);
  const file = join(dir, `${event.system}.jsonl`);
  const previous = appendQueues.get(file) ?? Promise.resolve();
  const next = previous.then(() => appendLine(dir, file, `${JSON.stringify(event)}\n`));
  const tail = next.catch(() => undefined);
  appendQueues.set(file, tail);
  void tail.then(() => {
    if (appendQueues.get(file) === tail) appendQueues.delete(file);
  });
  return next;
}

async function appendLine(dir: string, file: string, line: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const handle = await open(file, 'a', 0o644);
  let created: boolean;
  try {
    created = (await handle.stat()).size === 0;
    await handle.write(line);
    await handle.sync();
  } finally {
    await handle.close();
  }
  // A new file's directory entry must survive a crash too.
  if (created) await syncDirectory(dir);
}

/**
 * After a system's `done`: `netboot: true` in systems/NAME.yaml becomes false, by the edit
 * `imgctl system set NAME netboot=false` makes (store lock, checked, atomic write, comments
 * kept), so its next network boot goes to the local disk. Resolves true when it changed the
 * file, false when there is no such system or netboot was not true; throws when the file cannot
 * be read or edited.
 */
export async function clearNetboot(storeDir: string, system: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(storePaths.systemFile(storeDir, system), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  const doc = parseYamlValue(text) as { netboot?: unknown } | null;
  if (doc?.netboot !== true) return false;
  return (await setSystem(storeDir, system, ['netboot=false'])).changed;
}

/** The SHA-256 of systems/NAME.yaml as it is now; undefined when it cannot be read. */
export async function systemFileDigest(
  storeDir: string,
  system: string,
): Promise<string | undefined> {
  try {
    const content = await readFile(storePaths.systemFile(storeDir, system));
    return createHash('sha256').update(content).digest('hex');
  } catch {
    return undefined;
  }
}

/** Every event of one system (or all), oldest first; a torn last line is skipped. */
async function readEvents(storeDir: string, system?: string): Promise<ProvisionEvent[]> {
  const dir = eventsDir(storeDir);
  let files: string[];
  if (system !== undefined) files = [`${system}.jsonl`];
  else {
    try {
      files = (await readdir(dir, { withFileTypes: true }))
        .filter((e) => e.isFile() && e.name.endsWith('.jsonl'))
        .map((e) => e.name)
        .sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }
  const events: ProvisionEvent[] = [];
  for (const file of files) {
    if (!isValidName(file.slice(0, -'.jsonl'.length))) continue;
    let text: string;
    try {
      text = await readFile(join(dir, file), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const event = JSON.parse(line) as ProvisionEvent;
        if (typeof event.system === 'string' && typeof event.time === 'string') events.push(event);
      } catch {
        // a line cut short by a crash mid-write: the event was never acknowledged
      }
    }
  }
  return events;
}

export type ProvisionState = 'pending' | 'in-progress' | 'stalled' | 'done' | 'failed';

export interface PhaseTiming {
  phase: Phase;
  time: string;
  /** since the run's `started` event */
  after_ms: number;
  /** since the previous event of the run */
  took_ms: number;
}

export interface SystemStatus {
  system: string;
  state: ProvisionState;
  /** the last phase reported, null when none */
  phase: Phase | null;
  image: string | null;
  /** the release the latest run provisioned, null for the working image or none */
  release: string | null;
  vm_name: string | null;
  /** what the last successful run put there: the release (null: the working image) and when */
  deployed: { image: string | null; release: string | null; at: string } | null;
  started_at: string | null;
  updated_at: string | null;
  /** from the run's start to its last event (done/failed) or to now (still running) */
  elapsed_ms: number | null;
  /** the phases of the latest run (from its last `started`) */
  phases: PhaseTiming[];
  error: { code: string; message: string } | null;
  /** how many runs (`started` events) the system has had */
  runs: number;
}

export interface StatusOptions {
  system?: string;
  now: Date;
  /** a run with no event for this long shows as stalled */
  stalledAfterMs: number;
}

export const DEFAULT_STALLED_AFTER_MS = 10 * 60_000;

/**
 * Each system's provisioning state: every system of the store (`pending` when it never reported)
 * and every system that reported events, sorted by name. With `system`, only that one;
 * NOT_FOUND when it is neither in the store nor in the events.
 */
export async function provisioningStatus(
  storeDir: string,
  options: StatusOptions,
): Promise<SystemStatus[]> {
  const events = await readEvents(storeDir, options.system);
  const known = new Set((await listSystems(storeDir)).map((s) => s.name));
  const bySystem = new Map<string, ProvisionEvent[]>();
  for (const name of known) if (options.system === undefined) bySystem.set(name, []);
  for (const e of events) {
    const list = bySystem.get(e.system) ?? [];
    list.push(e);
    bySystem.set(e.system, list);
  }
  if (options.system !== undefined && !bySystem.has(options.system)) {
    if (!known.has(options.system)) {
      throw new ImgctlError(
        'NOT_FOUND',
        `no system '${printable(options.system)}' in the store, and no events from one`,
        { hint: "see 'imgctl system list'" },
      );
    }
    bySystem.set(options.system, []);
  }
  return [...bySystem.keys()]
    .sort()
    .map((name) => statusOf(name, bySystem.get(name)!, options.now, options.stalledAfterMs));
}

/** The last `done` run's image and release: what the system runs now, as far as events tell. */
function deployedBy(all: ProvisionEvent[]): SystemStatus['deployed'] {
  let done = all.length - 1;
  while (done >= 0 && all[done]!.phase !== 'done') done--;
  if (done < 0) return null;
  let start = done;
  while (start > 0 && all[start]!.phase !== 'started') start--;
  const run = all.slice(start, done + 1).reverse();
  return {
    image: run.find((e) => e.image)?.image ?? null,
    release: run.find((e) => e.release)?.release ?? null,
    at: all[done]!.time,
  };
}

function statusOf(
  system: string,
  all: ProvisionEvent[],
  now: Date,
  stalledAfterMs: number,
): SystemStatus {
  const runs = all.filter((e) => e.phase === 'started').length;
  let start = -1;
  for (let i = all.length - 1; i >= 0; i--) {
    if (all[i]!.phase === 'started') {
      start = i;
      break;
    }
  }
  const run = start < 0 ? all : all.slice(start);
  if (run.length === 0) {
    return {
      system,
      state: 'pending',
      phase: null,
      image: null,
      release: null,
      vm_name: null,
      deployed: null,
      started_at: null,
      updated_at: null,
      elapsed_ms: null,
      phases: [],
      error: null,
      runs,
    };
  }
  const t0 = Date.parse(run[0]!.time);
  let prev = t0;
  const phases = run.map((e) => {
    const t = Date.parse(e.time);
    const timing = { phase: e.phase, time: e.time, after_ms: t - t0, took_ms: t - prev };
    prev = t;
    return timing;
  });
  const last = run.at(-1)!;
  const lastAt = Date.parse(last.time);
  const finished = last.phase === 'done' || last.phase === 'failed';
  let state: ProvisionState = finished ? (last.phase as 'done' | 'failed') : 'in-progress';
  if (!finished && now.getTime() - lastAt > stalledAfterMs) state = 'stalled';
  const withImage = [...run].reverse();
  return {
    system,
    state,
    phase: last.phase,
    image: withImage.find((e) => e.image)?.image ?? null,
    release: withImage.find((e) => e.release)?.release ?? null,
    vm_name: withImage.find((e) => e.vm_name)?.vm_name ?? null,
    deployed: deployedBy(all),
    started_at: run[0]!.time,
    updated_at: last.time,
    elapsed_ms: (finished ? lastAt : now.getTime()) - t0,
    phases,
    error:
      last.phase === 'failed' ? { code: last.code ?? 'FAILED', message: last.message ?? '' } : null,
    runs,
  };
}

/** Whether a system runs the release its image reference points at now. */
export interface ReleaseStatus {
  system: string;
  /** the system's `image:`, e.g. web@stable */
  follows: string;
  /** the release the last successful provisioning put there (null: none, or the working image) */
  deployed: string | null;
  /** the release `follows` points at now; null when it cannot be resolved (see `error`) */
  current: string | null;
  outdated: boolean;
  error?: string;
}

/**
 * For each system whose image reference is a release or a channel: what it runs (from its
 * events) and what it should (the reference resolved now). Systems that follow the working image
 * carry no release to compare and are left out.
 */
export async function releaseStatus(
  storeDir: string,
  statuses: SystemStatus[],
): Promise<ReleaseStatus[]> {
  const follows = new Map(
    (await listSystems(storeDir))
      .filter((s) => s.image?.includes('@'))
      .map((s) => [s.name, s.image!]),
  );
  const out: ReleaseStatus[] = [];
  for (const status of statuses) {
    const ref = follows.get(status.system);
    if (ref === undefined) continue;
    const deployed = status.deployed?.release ?? null;
    try {
      const resolved = await resolveImageRef(storeDir, ref);
      // a reference with '@' always resolves to a release
      const current = `${resolved.name}@${resolved.release!.revision}`;
      out.push({
        system: status.system,
        follows: ref,
        deployed,
        current,
        outdated: deployed !== current,
      });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      out.push({
        system: status.system,
        follows: ref,
        deployed,
        current: null,
        outdated: true,
        error: message,
      });
    }
  }
  return out;
}
