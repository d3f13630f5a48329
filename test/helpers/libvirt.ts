/**
 * A real libvirtd for e2e tests and the demo: scripts/start-libvirt.sh (shared with
 * `npm run demo`) starts virtlogd and libvirtd as root when they are not running, and returns
 * once `virsh -c qemu:///system version` answers. Domains a test creates are its own to remove:
 * `removeDomain` in onTestFinished.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { execa } from 'execa';
import { REPO_ROOT } from './index.ts';

const run = promisify(execFile);
export const LIBVIRT_URI = 'qemu:///system';

/** Starts libvirt if needed (idempotent, safe from several test files at once). */
export async function startLibvirt(): Promise<{ uri: string }> {
  await execa('bash', [join(REPO_ROOT, 'scripts/start-libvirt.sh')], { timeout: 120_000 });
  return { uri: LIBVIRT_URI };
}

export async function virsh(args: string[]): Promise<{ stdout: string; exitCode: number }> {
  const result = await execa('virsh', ['--connect', LIBVIRT_URI, ...args], { reject: false });
  return { stdout: String(result.stdout), exitCode: result.exitCode ?? -1 };
}

export async function domainExists(name: string): Promise<boolean> {
  return (await virsh(['dominfo', name])).exitCode === 0;
}

/** Waits until a domain is shut off (the appliance powers off after its report line). */
export async function waitForShutoff(name: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = (await virsh(['domstate', name])).stdout.trim();
    if (state === 'shut off') return;
    if (Date.now() > deadline)
      throw new Error(`domain ${name} still '${state}' after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** destroy + undefine, ignoring "not running" / "no such domain". */
export async function removeDomain(name: string): Promise<void> {
  await virsh(['destroy', name]);
  await virsh(['undefine', name]);
}

/** A host bridge for the VMs' nics (the machines have no libvirt `default` network). */
export async function makeBridge(name: string): Promise<() => Promise<void>> {
  await run('ip', ['link', 'add', name, 'type', 'bridge']);
  await run('ip', ['link', 'set', name, 'up']);
  return async () => {
    await run('ip', ['link', 'del', name]).catch(() => undefined);
  };
}
