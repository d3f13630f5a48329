/**
 * Releases end to end on the provisioning side, all real: the tiny appliance released as
 * its first release on channel `stable`, then changed (another greeting) and released again; the
 * real `imgctl serve` plans and serves each release from its frozen copy; the real agent
 * provisions `--image tiny-linux@stable` into a libvirt VM that boots with release 1's greeting
 * and `boots=1`, warns about a deprecated release, and exits 7 with the reason, making nothing,
 * for a revoked one — also when a plan signed before the revocation is replayed to a `--trust`
 * agent, once its signature has expired.
 */
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type AgentRig, runAgent, startAgentRig, virtFlags } from './helpers/agent-rig.ts';
import { execImgctl } from './helpers/index.ts';
import {
  domainExists,
  makeBridge,
  removeDomain,
  startLibvirt,
  waitForShutoff,
} from './helpers/libvirt.ts';
import { waitForApplianceReport } from './helpers/seed.ts';

const BRIDGE = `imgrl${process.pid % 100000}`;
/** the releases beforeAll makes: the built appliance, then with another greeting */
const R1 = { rev: 0, ref: '' };
const R2 = { rev: 0, ref: '' };
const VM = 'reltiny';

interface Plan {
  image: { name: string; revision: number; release?: string; reference?: string };
  parameters: Record<string, unknown>;
}

describe('slow: provisioning from releases and channels', () => {
  let rig: AgentRig;
  let removeBridge: () => Promise<void>;
  const imgctl = (args: string[]) => execImgctl(['--store', rig.store.dir, ...args]);
  const agent = (args: string[]) =>
    runAgent([
      ...['--server', rig.server.url, '--token-file', rig.tokenFile],
      ...virtFlags(rig.paths, BRIDGE),
      ...args,
    ]);
  const getJson = async (path: string) => {
    const response = await fetch(`${rig.server.url}${path}`);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    await startLibvirt();
    await removeDomain(VM);
    rig = await startAgentRig('imgctl-releases-');
    removeBridge = await makeBridge(BRIDGE);
    const first = await imgctl([
      'release',
      'create',
      'tiny-linux',
      '--channel',
      'stable',
      '--json',
    ]);
    expect(first.exitCode, first.stderr).toBe(0);
    R1.ref = (JSON.parse(first.stdout) as { ref: string }).ref;
    const set = await imgctl([
      'image',
      'set',
      'tiny-linux',
      'parameters.greeting.default=hello from release 2',
    ]);
    expect(set.exitCode, set.stderr).toBe(0);
    const second = await imgctl(['release', 'create', 'tiny-linux', '--json']);
    expect(second.exitCode, second.stderr).toBe(0);
    R2.ref = (JSON.parse(second.stdout) as { ref: string }).ref;
    R1.rev = Number(R1.ref.split('@')[1]);
    R2.rev = Number(R2.ref.split('@')[1]);
  }, 600_000);

  afterAll(async () => {
    await removeDomain(VM);
    await removeBridge?.();
    await rig?.stop();
  });

  it('plans a channel from its release, on the command line and from the server', async () => {
    const plan = await imgctl(['plan', 'tiny-linux@stable', '--json']);
    expect(plan.exitCode, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout) as Plan).toMatchObject({
      image: {
        name: 'tiny-linux',
        revision: R1.rev,
        release: R1.ref,
        reference: 'tiny-linux@stable',
      },
      parameters: { greeting: 'hello from imgctl' },
    });
    const working = JSON.parse((await imgctl(['plan', 'tiny-linux', '--json'])).stdout) as Plan;
    expect(working.image).toEqual(expect.not.objectContaining({ release: expect.anything() }));
    expect(working.parameters.greeting).toBe('hello from release 2');

    const served = await getJson('/v1/plan?image=tiny-linux@stable');
    expect(served.status).toBe(200);
    expect(served.body).toMatchObject({ image: { release: R1.ref } });
    // a channel move is served at once
    const move = (rev: number) => imgctl(['channel', 'set', 'tiny-linux', 'stable', String(rev)]);
    expect((await move(R2.rev)).exitCode).toBe(0);
    expect((await getJson('/v1/plan?image=tiny-linux@stable')).body).toMatchObject({
      image: { release: R2.ref },
    });
    expect((await move(R1.rev)).exitCode).toBe(0);
    // the release's own files
    const script = await fetch(`${rig.server.url}/v1/images/${R1.ref}/files/provision.sh`);
    expect(script.status).toBe(200);
    expect(await script.text()).toBe(
      await readFile(
        join(rig.store.dir, `releases/tiny-linux/${R1.rev}/images/tiny-linux/provision.sh`),
        'utf8',
      ),
    );
  });

  it('provisions --image tiny-linux@stable: the VM boots the first release with boots=1', async () => {
    onTestFinished(() => removeDomain(VM));
    // a system that follows the channel
    await writeFile(
      join(rig.store.dir, 'systems/relsys.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: relsys\nhostname: relsys\nimage: tiny-linux@stable\n',
    );
    const run = await agent([
      ...['--virt', '--image', 'tiny-linux@stable', '--system', 'relsys', '--virt-name', VM],
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const serial = join(rig.paths.virt, `${VM}.serial.log`);
    const report = await waitForApplianceReport(serial);
    expect(report).toMatchObject({ hostname: 'relsys', boots: '1' });
    await waitForShutoff(VM);
    const log = await readFile(serial, 'utf8');
    expect(log).toContain('hello from imgctl');
    expect(log).not.toContain('hello from release 2');

    // the events say which release it runs; it is outdated once the channel moves on
    const status = async () => {
      const out = await imgctl(['status', '--outdated', '--json']);
      expect(out.exitCode, out.stderr).toBe(0);
      return JSON.parse(out.stdout) as unknown[];
    };
    expect(await status()).toEqual([]);
    const shown = JSON.parse((await imgctl(['status', '--json'])).stdout) as Array<{
      system: string;
      release: string;
    }>;
    expect(shown.find((s) => s.system === 'relsys')).toMatchObject({ release: R1.ref });
    expect(
      (await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(R2.rev)])).exitCode,
    ).toBe(0);
    expect(await status()).toEqual([
      {
        system: 'relsys',
        follows: 'tiny-linux@stable',
        deployed: R1.ref,
        current: R2.ref,
        outdated: true,
      },
    ]);
    expect(
      (await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(R1.rev)])).exitCode,
    ).toBe(0);
  });

  it('warns about a deprecated release and refuses a revoked one: exit 7, nothing made', async () => {
    const deprecate = await imgctl(['release', 'deprecate', R2.ref, '--reason', 'greeting typo']);
    expect(deprecate.exitCode, deprecate.stderr).toBe(0);
    const dry = await agent(['--virt', '--image', R2.ref, '--virt-name', 'reldry', '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stderr).toContain(`warning: ${R2.ref} is deprecated since `);
    expect(dry.stderr).toMatch(/deprecated since \S+: greeting typo/);

    const move = await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(R2.rev)]);
    expect(move.exitCode).toBe(0);
    const revoke = await imgctl(['release', 'revoke', R1.ref, '--reason', 'CVE-2026-0001']);
    expect(revoke.exitCode, revoke.stderr).toBe(0);

    const served = await getJson(`/v1/plan?image=${R1.ref}`);
    expect(served.status).toBe(410);
    expect(served.body).toMatchObject({
      error: { code: 'INTEGRITY', message: expect.stringContaining('CVE-2026-0001') as unknown },
    });
    const refused = await agent(['--virt', '--image', R1.ref, '--virt-name', 'relrevoked']);
    expect(refused.exitCode, refused.stderr).toBe(7);
    expect(refused.stderr).toContain(`${R1.ref} is revoked since `);
    expect(refused.stderr).toContain(': CVE-2026-0001');
    expect(await domainExists('relrevoked')).toBe(false);
    await expect(readFile(join(rig.paths.virt, 'relrevoked-root.qcow2'))).rejects.toThrow();
    // a channel cannot be pointed at it
    const channel = await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(R1.rev)]);
    expect(channel.exitCode).toBe(5);
  });

  it('refuses a plan signed before a revocation, replayed to a --trust agent, once it expired', async () => {
    const keygen = await imgctl(['keygen', '--json']);
    expect(keygen.exitCode, keygen.stderr).toBe(0);
    const trust = (JSON.parse(keygen.stdout) as { public_key: string }).public_key;
    await appendFile(join(rig.store.dir, 'store.yaml'), 'signature_ttl: 20s\n');
    // a release that is fine now, its plan signed and saved, as a stale mirror would keep it
    const token = (await readFile(rig.tokenFile, 'utf8')).trim();
    const saved = await fetch(`${rig.server.url}/v1/plan?image=${R2.ref}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(saved.status).toBe(200);
    const body = await saved.text();
    const signature = saved.headers.get('imgctl-signature')!;
    const expires = Date.parse(/expires=([^,]+)/.exec(signature)![1]!);
    // then it is revoked (its channel moved to a new release first)
    await imgctl(['image', 'set', 'tiny-linux', 'parameters.greeting.default=third']);
    const third = JSON.parse(
      (await imgctl(['release', 'create', 'tiny-linux', '--json'])).stdout,
    ) as {
      release: { revision: number };
    };
    await imgctl(['channel', 'set', 'tiny-linux', 'stable', String(third.release.revision)]);
    const revoke = await imgctl(['release', 'revoke', R2.ref, '--reason', 'bad greeting']);
    expect(revoke.exitCode, revoke.stderr).toBe(0);

    // a server that replays the saved plan and passes everything else to the real one
    const replay = createServer((req, res) => {
      if (req.url?.startsWith('/v1/plan')) {
        res.writeHead(200, { 'content-type': 'application/json', 'imgctl-signature': signature });
        res.end(body);
        return;
      }
      void fetch(`${rig.server.url}${req.url}`, { headers: req.headers as HeadersInit }).then(
        async (upstream) => {
          res.writeHead(upstream.status, Object.fromEntries(upstream.headers));
          res.end(Buffer.from(await upstream.arrayBuffer()));
        },
      );
    });
    await new Promise<void>((resolve) => replay.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => new Promise<void>((resolve) => replay.close(() => resolve())));
    const url = `http://127.0.0.1:${(replay.address() as { port: number }).port}`;
    const dryRun = () =>
      runAgent([
        ...['--server', url, '--token-file', rig.tokenFile, '--trust', trust],
        ...virtFlags(rig.paths, BRIDGE),
        ...['--virt', '--image', R2.ref, '--virt-name', 'relreplay', '--dry-run'],
      ]);
    // inside its window the replayed signature still holds: that window is signature_ttl
    const early = await dryRun();
    expect(early.exitCode, early.stderr).toBe(0);
    await sleep(Math.max(0, expires - Date.now()) + 1000);
    const late = await dryRun();
    expect(late.exitCode, late.stderr).toBe(7);
    expect(late.stderr).toMatch(/the plan's signature expired at \S+ \(signed at \S+\)/);
  });
});
