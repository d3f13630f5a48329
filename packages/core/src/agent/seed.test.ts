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
  it('gives meta-data, #cloud-config user-data with keys, and network-config v1', () => {
    const seed = renderSeed(plan, {
      instanceId: 'i-123',
      passwordHashes: { root: '$6$salt$hash', admin: '$6$salt$admin' },
      commands: ['echo hi'],
    });
    expect(parse(seed['meta-data'])).toEqual({
      'instance-id': 'i-123',
      'local-hostname': 'web01.example.com',
    });
    expect(seed['user-data'].startsWith('#cloud-config\n')).toBe(true);
    // plain lists, no YAML aliases: the keys are written out where they are used
    expect(seed['user-data']).not.toMatch(/[&*]a\d/);
    const user = parse(seed['user-data']);
    expect(user).toMatchObject({
      hostname: 'web01',
      fqdn: 'web01.example.com',
      manage_etc_hosts: true,
      // root's keys, usable: Debian's default disable_root would turn them into a message
      ssh_authorized_keys: plan.ssh_authorized_keys,
      disable_root: false,
      runcmd: ['echo hi'],
    });
    expect(user.users).toEqual([
      { name: 'root', hashed_passwd: '$6$salt$hash', lock_passwd: false },
      {
        name: 'admin',
        hashed_passwd: '$6$salt$admin',
        lock_passwd: false,
        shell: '/bin/sh',
        ssh_authorized_keys: plan.ssh_authorized_keys,
      },
    ]);
    const net = parse(seed['network-config']);
    expect(net).toEqual({
      version: 1,
      config: [
        {
          type: 'physical',
          name: 'eth0',
          mac_address: '52:54:00:12:34:56',
          // the gateway on the subnet: ENI renders it as `gateway`, not `post-up route add`
          subnets: [
            {
              type: 'static',
              address: '192.0.2.10/24',
              gateway: '192.0.2.1',
              dns_nameservers: ['192.0.2.53'],
            },
          ],
        },
        { type: 'physical', name: 'eth1', subnets: [{ type: 'dhcp' }] },
      ],
    });
  });

  it('creates no user but root without password hashes, and never the image default user', () => {
    const user = parse(renderSeed(plan, { instanceId: 'i-1' })['user-data']);
    expect(user.users).toEqual([]);
    expect(user.ssh_authorized_keys).toEqual(plan.ssh_authorized_keys);
    const v6 = renderSeed(
      {
        ...plan,
        interfaces: [{ name: 'eth0', ip: '2001:db8::10/64', gateway: '2001:db8::1' }],
      } as unknown as PlanDoc,
      { instanceId: 'i-2' },
    );
    expect(parse(v6['network-config']).config[0].subnets).toEqual([
      { type: 'static6', address: '2001:db8::10/64', gateway: '2001:db8::1' },
    ]);
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
