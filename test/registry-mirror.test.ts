/**
 * Agents pulling disks from an OCI registry, all real: Debian's docker-registry with TLS and
 * htpasswd auth (test/helpers/registry.ts), the tiny appliance pushed into it by `imgctl push`
 * with its root disk in segments, and an `imgctl serve` that has the image's descriptor but not
 * its blobs. `imgagent --virt` pulls the disk from the registry — the store's `blob_mirrors`, after
 * a `--blob-mirror` that lacks it — and the appliance boots with its system's hostname.
 */
import { appendFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type AgentRig, runAgent, startAgentRig, virtFlags } from './helpers/agent-rig.ts';
import { execImgctl } from './helpers/index.ts';
import { makeBridge, removeDomain, startLibvirt } from './helpers/libvirt.ts';
import { startRegistry, type TestRegistry } from './helpers/registry.ts';
import { waitForApplianceReport } from './helpers/seed.ts';

const BRIDGE = `imgrm${process.pid % 100000}`;
const VM = 'regtiny';

describe('slow: imgagent pulls disks from an OCI registry', () => {
  let rig: AgentRig;
  let registry: TestRegistry;
  let removeBridge: () => Promise<void>;

  beforeAll(async () => {
    await startLibvirt();
    await removeDomain(VM);
    rig = await startAgentRig('imgctl-regmirror-');
    registry = await startRegistry({ auth: true, tls: true });
    removeBridge = await makeBridge(BRIDGE);
  }, 600_000);

  afterAll(async () => {
    await removeDomain(VM);
    await removeBridge?.();
    await registry?.stop();
    await rig?.stop();
  });

  it('--virt with the blobs only in the registry boots the appliance', async () => {
    onTestFinished(() => removeDomain(VM));
    // pushed by imgctl in 16 MiB segments: the root disk is then several layers and no blob of
    // its sha256, found by the agent through its disk index; the data disk is one layer
    const push = await execImgctl([
      ...['--store', rig.store.dir, 'push', 'tiny-linux', `oci://${registry.url}/site/tiny-linux`],
      ...['--registry-auth', registry.authFile!, '--registry-ca', registry.caFile!],
      ...['--segment-size', '16MiB', '--json'],
    ]);
    expect(push.exitCode, push.stderr).toBe(0);
    const pushed = (JSON.parse(push.stdout) as { blobs: Array<{ what: string }> }).blobs;
    expect(pushed.filter((b) => b.what.startsWith('disk root segment')).length).toBeGreaterThan(1);
    expect(pushed.map((b) => b.what)).toContain('disk data');

    // the server keeps the descriptor, not the blobs
    await rename(join(rig.store.dir, '.blobs'), join(rig.store.dir, '.blobs.away'));
    const missing = await fetch(`${rig.server.url}/v1/blobs/sha256/${rig.rootSha}`);
    expect(missing.status).toBe(404);
    await appendFile(
      join(rig.store.dir, 'store.yaml'),
      `blob_mirrors:\n  - oci://${registry.url}/site\n`,
    );

    const run = await runAgent([
      ...['--server', rig.server.url, '--token-file', rig.tokenFile],
      ...['--virt', '--system', 'tiny01', '--virt-name', VM],
      ...virtFlags(rig.paths, BRIDGE),
      ...['--blob-mirror', `oci://${registry.url}/empty`],
      ...['--registry-auth', registry.authFile!, '--registry-ca', registry.caFile!],
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    // the agent's own mirror lacked it, the store's had it
    expect(run.stderr).toMatch(
      new RegExp(
        `warning: sha256:\\w+ from oci://${registry.url}/empty/tiny-linux: .*; trying oci://${registry.url}/site/tiny-linux`,
      ),
    );
    expect(run.stderr).toContain(`pulled from oci://${registry.url}/site/tiny-linux`);
    expect(run.stderr).toMatch(
      new RegExp(`sha256:${rig.rootSha.slice(0, 12)} is in \\d+ segments in site/tiny-linux`),
    );
    const report = await waitForApplianceReport(join(rig.paths.virt, `${VM}.serial.log`));
    expect(report).toMatchObject({ hostname: 'tiny01' });
  });
});
