import { describe, expect, it } from 'vitest';
import { check, edit, IMAGE, SHA, SYSTEM } from '../../../../test/helpers/validate-documents.ts';

describe('validateDocument: schema problems', () => {
  it('points at an unknown key itself and suggests the near one', () => {
    const text = edit(IMAGE, '  memory: 512MiB', '  memory: 512MiB\n  memroy: 1GiB');
    expect(check('Image', text)).toEqual([
      "f.yaml:17:3 devices.memroy: unknown key 'memroy' (did you mean 'memory'?)",
    ]);
  });

  it('points at the mapping that lacks a required key', () => {
    const text = edit(IMAGE, '    format: qcow2\n    size: 1GiB\n', '    size: 1GiB\n');
    expect(check('Image', text)).toEqual(["f.yaml:24:5 disks[1]: missing required key 'format'"]);
    expect(check('Image', 'apiVersion: imgctl/v1\nkind: Image\nname: x\n')).toEqual([
      "f.yaml:1:1 (document): missing required key 'boot'",
      "f.yaml:1:1 (document): missing required key 'devices'",
      "f.yaml:1:1 (document): missing required key 'disks'",
      "f.yaml:1:1 (document): missing required key 'revision'",
    ]);
  });

  it('names the allowed values of an enum and the value given', () => {
    const text = edit(IMAGE, '    use: data', '    use: storage');
    expect(check('Image', text)).toEqual([
      "f.yaml:25:10 disks[1].use: must be one of: system, data, scratch (got 'storage')",
    ]);
    expect(check('Image', edit(IMAGE, '  - type: hvm', '  - type: kvm'))).toContain(
      "f.yaml:6:11 boot[0].type: must be one of: hvm, xen (got 'kvm')",
    );
  });

  it('gives one human message for a bad size, whatever the branches said', () => {
    expect(check('Image', edit(IMAGE, '  memory: 512MiB', '  memory: 512 megs'))).toEqual([
      'f.yaml:16:11 devices.memory: must be a size like 512MiB, 2GiB or a byte count',
    ]);
    expect(check('Image', edit(IMAGE, '  memory: 512MiB', '  memory: -5'))).toEqual([
      'f.yaml:16:11 devices.memory: must be a size like 512MiB, 2GiB or a byte count',
    ]);
    expect(check('Image', edit(IMAGE, '  memory: 512MiB', '  memory: 536870912'))).toEqual([]);
  });

  it('checks kind, apiVersion and types with the value found', () => {
    const text = edit(edit(IMAGE, 'kind: Image', 'kind: System'), '  vcpus: 1', '  vcpus: two');
    expect(check('Image', text)).toEqual([
      "f.yaml:2:7 kind: must be 'Image' (got 'System')",
      "f.yaml:15:10 devices.vcpus: must be an integer (got the string 'two')",
    ]);
  });

  it('rejects names that could leave the store', () => {
    for (const name of ['../etc', 'a/b', 'Web', 'a..b', '.hidden']) {
      expect(check('Image', edit(IMAGE, 'name: web', `name: "${name}"`))).toEqual([
        "f.yaml:3:7 name: must be a name of 1-63 characters a-z, 0-9, '.', '_' and '-', starting with a letter or digit, without '..'",
      ]);
    }
  });

  it('checks sha256, drive targets, relative paths and parents', () => {
    expect(check('Image', edit(IMAGE, `sha256: ${SHA}`, `sha256: ${'A'.repeat(64)}`))).toEqual([
      'f.yaml:22:13 disks[0].sha256: must be a sha256 checksum: 64 lowercase hexadecimal digits',
    ]);
    expect(check('Image', edit(IMAGE, 'target: vdb', 'target: nvme0'))).toEqual([
      'f.yaml:13:17 boot[0].drives[1].target: must be a guest disk like vda, hda, sda or xvda',
    ]);
    expect(
      check('Image', edit(IMAGE, 'provision:\n', 'provision:\n  script: ../../etc/passwd\n')),
    ).toEqual([
      "f.yaml:38:11 provision.script: must be a path relative to the image directory, without '..' or a leading '/'",
    ]);
    expect(check('Image', edit(IMAGE, 'revision: 1', 'revision: 1\nparent: web'))).toEqual([
      'f.yaml:5:9 parent: must be IMAGE@REVISION, like web@3',
    ]);
  });

  it('reports a bad key of a map at the key', () => {
    const text = edit(IMAGE, '  port:\n', '  my-port:\n');
    expect(check('Image', text)).toEqual([
      "f.yaml:29:3 parameters.my-port: invalid key 'my-port': must be a parameter name: a letter or '_', then letters, digits or '_'",
    ]);
  });

  it('checks MACs, addresses, hostnames and keys of systems', () => {
    const bad = edit(
      edit(
        edit(
          edit(SYSTEM, 'mac: 52:54:00:12:34:56', 'mac: 52:54:00:12:34'),
          'ip: 192.0.2.10/24',
          'ip: 192.0.2.300/24',
        ),
        'gateway: 192.0.2.1',
        'gateway: 192.0.2.1/24',
      ),
      'hostname: web1.example.com',
      'hostname: web_1',
    );
    expect(check('System', bad)).toEqual([
      'f.yaml:4:11 hostname: must be a host name like web1 or web1.example.com',
      'f.yaml:9:10 interfaces[0].mac: must be a unicast MAC address like 52:54:00:12:34:56 (an even first byte)',
      'f.yaml:10:9 interfaces[0].ip: must be an IPv4 or IPv6 address with a prefix length, like 192.0.2.10/24 or 2001:db8::10/64',
      'f.yaml:11:14 interfaces[0].gateway: must be an IPv4 or IPv6 address like 192.0.2.1 or 2001:db8::1',
    ]);
    // A multicast or broadcast address (odd first byte) names no machine; libvirt refuses it.
    for (const mac of ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01'])
      expect(check('System', edit(SYSTEM, 'mac: 52:54:00:12:34:56', `mac: ${mac}`))).toEqual([
        'f.yaml:9:10 interfaces[0].mac: must be a unicast MAC address like 52:54:00:12:34:56 (an even first byte)',
      ]);
    expect(check('System', edit(SYSTEM, 'ip: 192.0.2.10/24', 'ip: "2001:db8::10/64"'))).toEqual([]);
    expect(
      check('System', edit(SYSTEM, 'ip: 192.0.2.10/24', 'ip: "2001:db8::10/129"')),
    ).toHaveLength(1);
    expect(
      check('System', edit(SYSTEM, 'mac: 52:54:00:12:34:56', 'mac: 52:54:00:AB:CD:EF')),
    ).toEqual([]);
    expect(
      check(
        'System',
        edit(SYSTEM, '  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx user@host', '  - not a key'),
      ),
    ).toEqual([
      "f.yaml:14:5 ssh_authorized_keys[0]: must be an OpenSSH public key line like 'ssh-ed25519 AAAA… user@host'",
    ]);
  });
});
