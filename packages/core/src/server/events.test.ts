import { mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { appendEvent, eventsDir, parseEvent, provisioningStatus } from './events.ts';
import { initStore } from '../store/images.ts';

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, s));

describe('parseEvent', () => {
  it('keeps the release an event names', () => {
    expect(parseEvent({ system: 'a', phase: 'done', release: 'web@3' }, at(0))).toMatchObject({
      release: 'web@3',
    });
  });
  it('stamps a valid event with the server time', () => {
    expect(parseEvent({ system: 'web01', phase: 'started', image: 'web' }, at(0))).toEqual({
      system: 'web01',
      phase: 'started',
      image: 'web',
      time: at(0).toISOString(),
    });
  });
  it.each([
    [[], /JSON object/],
    [{ system: '../etc', phase: 'started' }, /'system' must be a name/],
    [{ system: 'a', phase: 'exploded' }, /'phase' must be one of/],
    [{ system: 'a', phase: 'failed' }, /needs 'code' and 'message'/],
    [{ system: 'a', phase: 'failed', code: 'BOOM', message: 'x' }, /'code' must be one of/],
    [{ system: 'a', phase: 'done', code: 'FAILED' }, /only a 'failed' event/],
    [{ system: 'a', phase: 'done', time: 'x' }, /unknown event field 'time'/],
    [{ system: 'a', phase: 'done', message: 'x'.repeat(5000) }, /at most 4096/],
    [{ system: 'a', phase: 'done', release: 'web@stable' }, /'release' must be IMAGE@REVISION/],
    [{ system: 'a', phase: 'done', release: '../x@1' }, /'release' must be IMAGE@REVISION/],
  ])('refuses %j', (body, message) => {
    expect(() => parseEvent(body, at(0))).toThrow(message);
  });
});

describe('provisioningStatus', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function store() {
    dir = await mkdtemp(join(tmpdir(), 'imgctl-events-'));
    await initStore(dir, { name: 'events' });
    return dir;
  }

  it('gives phase timings of the latest run, done, failed or stalled', async () => {
    const s = await store();
    const post = (body: object, t: Date) => appendEvent(s, parseEvent(body, t));
    await post({ system: 'a', phase: 'started', image: 'web' }, at(0));
    await post({ system: 'a', phase: 'failed', code: 'HOST', message: 'no kvm' }, at(5));
    await post({ system: 'a', phase: 'started', image: 'web' }, at(10));
    await post({ system: 'a', phase: 'disks-ready' }, at(14));
    await post({ system: 'a', phase: 'done' }, at(20));
    await post({ system: 'b', phase: 'started' }, at(0));
    await post({ system: 'b', phase: 'disks-ready' }, at(30));
    await post({ system: 'c', phase: 'started' }, at(0));
    await post({ system: 'c', phase: 'failed', code: 'INTEGRITY', message: 'bad blob' }, at(3));

    const status = await provisioningStatus(s, { now: at(59), stalledAfterMs: 20_000 });
    const [a, b, c] = status;
    expect(a).toMatchObject({
      system: 'a',
      state: 'done',
      runs: 2,
      elapsed_ms: 10_000,
      image: 'web',
    });
    expect(a!.phases.map((p) => [p.phase, p.after_ms, p.took_ms])).toEqual([
      ['started', 0, 0],
      ['disks-ready', 4000, 4000],
      ['done', 10_000, 6000],
    ]);
    expect(b).toMatchObject({ state: 'stalled', phase: 'disks-ready', elapsed_ms: 59_000 });
    expect(c).toMatchObject({ state: 'failed', error: { code: 'INTEGRITY', message: 'bad blob' } });
    const fresh = await provisioningStatus(s, { now: at(40), stalledAfterMs: 20_000 });
    expect(fresh[1]!.state).toBe('in-progress');
  });

  it('says what the last successful run deployed, even while a later run fails', async () => {
    const s = await store();
    const post = (body: object, t: Date) => appendEvent(s, parseEvent(body, t));
    await post({ system: 'a', phase: 'started', image: 'web', release: 'web@2' }, at(0));
    await post({ system: 'a', phase: 'done' }, at(5));
    await post({ system: 'a', phase: 'started', image: 'web', release: 'web@3' }, at(10));
    await post({ system: 'a', phase: 'failed', code: 'HOST', message: 'no kvm' }, at(12));
    const [a] = await provisioningStatus(s, { now: at(20), stalledAfterMs: 20_000 });
    expect(a).toMatchObject({
      state: 'failed',
      release: 'web@3',
      deployed: { image: 'web', release: 'web@2', at: at(5).toISOString() },
    });
  });

  it('skips a line cut short by a crash, and knows systems that never reported', async () => {
    const s = await store();
    await writeFile(
      join(s, 'systems/quiet.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: quiet\nhostname: quiet\nimage: x\n',
    );
    await appendEvent(s, parseEvent({ system: 'a', phase: 'started' }, at(0)));
    await appendFile(join(eventsDir(s), 'a.jsonl'), '{"system":"a","pha');
    const status = await provisioningStatus(s, { now: at(1), stalledAfterMs: 60_000 });
    expect(status.map((x) => [x.system, x.state])).toEqual([
      ['a', 'in-progress'],
      ['quiet', 'pending'],
    ]);
    await expect(
      provisioningStatus(s, { system: 'nope', now: at(1), stalledAfterMs: 1 }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('keeps concurrent appends whole, one JSON object per line', async () => {
    const s = await store();
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        appendEvent(
          s,
          parseEvent({ system: 'a', phase: 'configured', message: `m${i}` }, at(i % 60)),
        ),
      ),
    );
    const lines = (await readFile(join(eventsDir(s), 'a.jsonl'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(50);
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
  });
});
