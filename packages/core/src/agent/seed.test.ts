import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProcessRunner } from '../util/process.ts';
import { renderSeed, writeSeedIso } from './seed.ts';
import type { PlanDoc } from '../store/types.ts';

const plan = {
  hostname: 'web01.example.com',
  ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9k ops@example'],
  interfaces: [
    {
      name: 'eth0',
      mac: '52:54:00:12:34:56',
      ip: '192.0.2.10/24',
      gateway: '192.0.2.1',
      dns: ['192.0.2.53'],
    },
    { name: 'eth1', dhcp: true },
  ],
} as unknown as PlanDoc;

const runner: ProcessRunner = {
  run: async (file, args, options) => execa(file, args, { input: options?.input }),
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'seed-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('renderSeed', () => {
  it('gives meta-data, #cloud-config user-data with keys, and network-config v2', () => {
    const seed = renderSeed(plan, {
      instanceId: 'i-123',
      passwordHashes: { root: '$6$salt$hash' },
      commands: ['echo hi'],
    });
    expect(parse(seed['meta-data'])).toEqual({
      'instance-id': 'i-123',
      'local-hostname': 'web01.example.com',
    });
    expect(seed['user-data'].startsWith('#cloud-config\n')).toBe(true);
    const user = parse(seed['user-data']);
    expect(user.hostname).toBe('web01');
    expect(user.users[0]).toMatchObject({ name: 'root', hashed_passwd: '$6$salt$hash' });
    expect(user.ssh_authorized_keys).toEqual(plan.ssh_authorized_keys);
    expect(user.runcmd).toEqual(['echo hi']);
    const net = parse(seed['network-config']);
    expect(net.version).toBe(2);
    expect(net.ethernets.eth0).toEqual({
      match: { macaddress: '52:54:00:12:34:56' },
      'set-name': 'eth0',
      addresses: ['192.0.2.10/24'],
      routes: [{ to: '0.0.0.0/0', via: '192.0.2.1' }],
      nameservers: { addresses: ['192.0.2.53'] },
    });
    expect(net.ethernets.eth1).toEqual({ dhcp4: true });
  });
});

describe('writeSeedIso', () => {
  it('writes an ISO labelled cidata holding the three files, and nothing else in the directory', async () => {
    const out = join(dir, 'seed.iso');
    await writeSeedIso(renderSeed(plan, { instanceId: 'i-9' }), out, runner);
    const info = await execa('isoinfo', ['-d', '-i', out]);
    expect(info.stdout).toMatch(/Volume id: cidata/);
    const meta = await execa('isoinfo', ['-i', out, '-R', '-x', '/meta-data']);
    expect(parse(meta.stdout)['instance-id']).toBe('i-9');
    expect(await readdir(dir)).toEqual(['seed.iso']);
  });
});
