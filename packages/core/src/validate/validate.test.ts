import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { formatProblem, parseYaml } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { quickParse } from '../yaml/quick-yaml.ts';
import {
  checkOverlay,
  type DocKind,
  loadDocument,
  type ValidateOptions,
  validateDocument,
  validateStore,
} from './validate.ts';

const SHA = 'a'.repeat(64);

const IMAGE = `apiVersion: imgctl/v1
kind: Image
name: web
revision: 1
boot:
  - type: hvm
    arch: x86_64
    loader: hd
    drives:
      - disk: system
        target: vda
      - disk: data
        target: vdb
devices:
  vcpus: 1
  memory: 512MiB
disks:
  - id: system
    use: system
    format: qcow2
    size: 2GiB
    sha256: ${SHA}
    blob: true
  - id: data
    use: data
    format: qcow2
    size: 1GiB
parameters:
  port:
    default: 80
    type: integer
  edition:
    default: community
    customizable: false
  url:
    computed: "http://{{ HOSTNAME }}:{{ port }}/"
provision:
  custom_scripts: [base]
`;

const RECORD = `apiVersion: imgctl/v1
kind: ImageRecord
name: large
image: web
provision:
  vcpus: 2
  memory: 2GiB
  disks:
    data:
      size: 10GiB
  parameters:
    port: 8080
`;

const SYSTEM = `apiVersion: imgctl/v1
kind: System
name: web1
hostname: web1.example.com
image: web
record: large
interfaces:
  - name: eth0
    mac: 52:54:00:12:34:56
    ip: 192.0.2.10/24
    gateway: 192.0.2.1
    dns: [192.0.2.53, "2001:db8::53"]
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx user@host
parameters:
  port: 8081
`;

function check(kind: DocKind, text: string, options?: ValidateOptions): string[] {
  return validateDocument(kind, parseYaml('f.yaml', text), options).map(formatProblem);
}

/** `text` with the line containing `from` replaced by `to` (indentation kept). */
function edit(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`fixture lacks ${from}`);
  return text.replace(from, to);
}

describe('validateDocument: schema problems', () => {
  it('accepts the valid documents', () => {
    expect(check('Image', IMAGE, { expectedName: 'web' })).toEqual([]);
    expect(check('ImageRecord', RECORD, { expectedName: 'large', expectedImage: 'web' })).toEqual(
      [],
    );
    expect(check('System', SYSTEM, { expectedName: 'web1' })).toEqual([]);
    expect(check('ImageStore', 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n')).toEqual([]);
  });

  it('reports YAML syntax errors alone, with their position', () => {
    const problems = check('Image', 'apiVersion: imgctl/v1\nkind: [Image\n');
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0]).toMatch(/^f\.yaml:\d+:\d+ \(document\): /);
    expect(check('Image', 'a: 1\na: 2\n')[0]).toMatch(/^f\.yaml:2:1 .*unique/i);
  });

  it('points at where an unclosed quote or list was opened, not where the file ends', () => {
    expect(
      check('Image', 'apiVersion: imgctl/v1\nkind: Image\nlabel: "Web\nrevision: 3\nboot: []\n')[0],
    ).toMatch(/^f\.yaml:3:8 /);
    expect(
      check(
        'Image',
        'apiVersion: imgctl/v1\nprovision:\n  custom_scripts: [a, b\nkind: Image\n',
      )[0],
    ).toMatch(/^f\.yaml:3:19 /);
  });

  it('reports an empty document', () => {
    expect(check('System', '')).toEqual([
      'f.yaml:1:1 (document): the document is empty (expected kind: System)',
    ]);
  });

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

  it('refuses a memory under 1MiB: a number alone is bytes, so the unit was forgotten', () => {
    expect(check('Image', edit(IMAGE, '  memory: 512MiB', '  memory: 512'))).toEqual([
      'f.yaml:16:11 devices.memory: memory 512 is less than 1MiB (a number alone is bytes): give a unit, e.g. 512MiB',
    ]);
    expect(check('ImageRecord', edit(RECORD, '  memory: 2GiB', '  memory: 0'))).toEqual([
      'f.yaml:7:11 provision.memory: memory 0 is less than 1MiB (a number alone is bytes): give a unit, e.g. 512MiB',
    ]);
  });

  it('reports sizes too large to count in bytes', () => {
    expect(check('Image', edit(IMAGE, '    size: 1GiB', '    size: 99999999999TiB'))).toEqual([
      'f.yaml:27:11 disks[1].size: size 99999999999TiB is too large',
    ]);
  });

  it('refuses a disk of size 0, in an image and in a record', () => {
    expect(check('Image', edit(IMAGE, '    size: 1GiB', '    size: 0'))).toEqual([
      'f.yaml:27:11 disks[1].size: a disk of size 0 holds nothing',
    ]);
    expect(check('ImageRecord', edit(RECORD, '      size: 10GiB', '      size: 0B'))).toEqual([
      'f.yaml:10:13 provision.disks.data.size: a disk of size 0 holds nothing',
    ]);
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

  it('reports every problem of a file at once, in line order', () => {
    const text = edit(
      edit(edit(IMAGE, '  vcpus: 1', '  vcpus: 0'), 'format: qcow2', 'format: iso'),
      'arch: x86_64',
      'arch: amd64',
    );
    const problems = check('Image', text);
    expect(problems).toHaveLength(3);
    expect(problems.map((p) => p.split(' ')[0])).toEqual([
      'f.yaml:7:11',
      'f.yaml:15:10',
      'f.yaml:20:13',
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

describe('validateDocument: rules beyond the schema', () => {
  it('finds duplicate disk ids', () => {
    const text = edit(IMAGE, '  - id: data', '  - id: system');
    expect(check('Image', text)).toContain(
      "f.yaml:24:9 disks[1].id: duplicate disk id 'system' (also disks[0])",
    );
  });

  it('finds boot drives naming unknown disks and duplicate targets', () => {
    const text = edit(
      edit(IMAGE, '      - disk: data', '      - disk: date'),
      'target: vdb',
      'target: vda',
    );
    expect(check('Image', text)).toEqual([
      "f.yaml:12:15 boot[0].drives[1].disk: unknown disk 'date' (disks: system, data)",
      "f.yaml:13:17 boot[0].drives[1].target: duplicate target 'vda' (also boot[0].drives[0])",
    ]);
  });

  it('needs exactly one of loader and kernel', () => {
    expect(check('Image', edit(IMAGE, '    loader: hd\n', ''))).toEqual([
      "f.yaml:6:5 boot[0]: missing required key 'loader' or 'kernel' (how the guest boots)",
    ]);
    expect(
      check('Image', edit(IMAGE, '    loader: hd\n', '    loader: hd\n    kernel: vmlinuz\n')),
    ).toEqual(['f.yaml:6:5 boot[0]: set either loader or kernel, not both']);
    expect(
      check(
        'Image',
        edit(IMAGE, '    loader: hd\n', '    kernel: boot/vmlinuz\n    initrd: boot/initrd.img\n'),
      ),
    ).toEqual([]);
    expect(
      check('Image', edit(IMAGE, '    loader: hd\n', '    loader: hd\n    cmdline: quiet\n')),
    ).toEqual(['f.yaml:9:14 boot[0].cmdline: cmdline needs kernel']);
  });

  it('needs sha256 for content in the store or at a URL, and allows disks not built yet', () => {
    expect(check('Image', edit(IMAGE, `    sha256: ${SHA}\n`, ''))).toEqual([
      "f.yaml:18:5 disks[0]: missing required key 'sha256' (a disk with blob: true needs its checksum)",
    ]);
    expect(
      check(
        'Image',
        edit(
          IMAGE,
          `    sha256: ${SHA}\n    blob: true\n`,
          '    url: https://example.com/s.qcow2\n',
        ),
      ),
    ).toEqual([
      "f.yaml:18:5 disks[0]: missing required key 'sha256' (a disk with url needs its checksum)",
    ]);
    expect(check('Image', edit(IMAGE, `    sha256: ${SHA}\n    blob: true\n`, ''))).toEqual([]);
    expect(
      check(
        'Image',
        edit(IMAGE, '    use: data', `    use: scratch\n    blob: true\n    sha256: ${SHA}`),
      ),
    ).toEqual([
      'f.yaml:24:5 disks[1]: a scratch disk is created empty: it takes no sha256, blob or url',
    ]);
  });

  it('refuses a parameter with both default and computed, and defaults of the wrong type', () => {
    const text = edit(
      edit(IMAGE, '  url:\n', '  url:\n    default: x\n'),
      '    default: 80',
      '    default: eighty',
    );
    expect(check('Image', text)).toEqual([
      "f.yaml:30:14 parameters.port.default: must be an integer (parameter type integer; got 'eighty')",
      "f.yaml:35:3 parameters.url: parameter 'url' sets both default and computed; keep one",
    ]);
    expect(
      check(
        'Image',
        edit(IMAGE, '    customizable: false', '    customizable: false\n    secret: true'),
      ),
    ).toEqual([]);
  });

  it('checks the name against the file and a record against its directory', () => {
    expect(check('Image', IMAGE, { expectedName: 'api' })).toEqual([
      "f.yaml:3:7 name: name 'web' does not match its directory images/api",
    ]);
    expect(check('System', SYSTEM, { expectedName: 'web2' })).toEqual([
      "f.yaml:3:7 name: name 'web1' does not match its file name web2.yaml",
    ]);
    expect(check('ImageRecord', RECORD, { expectedName: 'large', expectedImage: 'db' })).toEqual([
      "f.yaml:4:8 image: record belongs to image 'web' but is stored under images/db",
    ]);
  });

  it('refuses dhcp together with a static address, and duplicate interfaces', () => {
    const text = edit(SYSTEM, '    ip: 192.0.2.10/24', '    dhcp: true\n    ip: 192.0.2.10/24');
    expect(check('System', text)).toEqual([
      'f.yaml:8:5 interfaces[0]: set either dhcp: true or ip, not both',
    ]);
    const two = `${SYSTEM.replace(/\nssh_authorized_keys[\s\S]*$/, '')}\n  - name: eth0\n    mac: 52:54:00:12:34:56\n`;
    expect(check('System', two)).toEqual([
      "f.yaml:13:11 interfaces[1].name: duplicate interface 'eth0' (also interfaces[0])",
      'f.yaml:14:10 interfaces[1].mac: duplicate MAC 52:54:00:12:34:56 (also interfaces[0])',
    ]);
  });
});

describe('validateDocument: plans', () => {
  const plan = {
    apiVersion: 'imgctl/v1',
    kind: 'Plan',
    image: { name: 'web', revision: 3 },
    record: 'default',
    vm_name: 'web1',
    hostname: 'web1',
    boot: [
      { type: 'hvm', arch: 'x86_64', loader: 'hd', drives: [{ disk: 'system', target: 'vda' }] },
    ],
    devices: {
      vcpus: 1,
      memory: 536870912,
      nics: [{ model: 'virtio', network: 'default' }],
      graphics: 'none',
      console: 'serial',
    },
    disks: [
      {
        id: 'system',
        use: 'system',
        format: 'qcow2',
        image_size: 2147483648,
        size: 2147483648,
        sha256: SHA,
        blob: true,
      },
    ],
    interfaces: [],
    ssh_authorized_keys: [],
    parameters: { port: 80 },
    parameter_sources: { port: 'image' },
    secrets: [],
    variables: { IMAGE_NAME: 'web', VM_NAME: 'web1' },
    provision: { custom_scripts: [] },
  };

  it('accepts a resolved plan and refuses a disk smaller than its image', () => {
    expect(check('Plan', JSON.stringify(plan))).toEqual([]);
    const small = structuredClone(plan);
    small.disks[0]!.size = 1024;
    const text = JSON.stringify(small, null, 2);
    const line = text.split('\n').findIndex((l) => l.includes('"size": 1024')) + 1;
    expect(check('Plan', text)).toEqual([
      `f.yaml:${line}:15 disks[0].size: size 1024 is smaller than image_size 2147483648`,
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

let dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  dirs = [];
});

async function makeStore(tree: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imgctl-validate-'));
  dirs.push(dir);
  const files = { 'store.yaml': 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n', ...tree };
  const paths = Object.keys(files).map((file) => join(dir, file));
  await Promise.all(
    [...new Set(paths.map((p) => dirname(p)))].map((d) => mkdir(d, { recursive: true })),
  );
  await Promise.all(Object.values(files).map((text, i) => writeFile(paths[i]!, text)));
  return dir;
}

const GOOD_STORE = {
  'images/web/image.yaml': IMAGE,
  'images/web/records/large.yaml': RECORD,
  'images/web/records/default.yaml':
    'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: web\n',
  'images/web/custom_scripts/base/10-hello.sh': 'echo hello\n',
  'systems/web1.yaml': SYSTEM,
};

async function storeProblems(
  tree: Record<string, string>,
  options?: { images?: string[] },
): Promise<string[]> {
  return (await validateStore(await makeStore(tree), options)).problems.map(formatProblem);
}

describe('validateStore', () => {
  it('accepts a valid store and counts what it read', async () => {
    const result = await validateStore(await makeStore(GOOD_STORE));
    expect(result.problems.map(formatProblem)).toEqual([]);
    expect(result.counts).toEqual({ images: 1, records: 2, systems: 1 });
  });

  it('finds custom script sets in the store too, and reports missing ones', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/web/image.yaml': edit(
        IMAGE,
        'custom_scripts: [base]',
        'custom_scripts: [base, shared, nope]',
      ),
    };
    expect(await storeProblems({ ...tree, 'custom_scripts/shared/10-a.sh': '' })).toEqual([
      "images/web/image.yaml:38:34 provision.custom_scripts[2]: custom script set 'nope' not found in images/web/custom_scripts/ or custom_scripts/",
    ]);
  });

  it('reports a named provision script or kickstart that is missing', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/web/image.yaml': `${IMAGE}  script: setup.sh\n  kickstart: web.ks\n`,
    };
    expect(await storeProblems({ ...tree, 'images/web/web.ks': 'text\n' })).toEqual([
      'images/web/image.yaml:39:11 provision.script: setup.sh does not exist in images/web/',
    ]);
  });

  it('reports an image directory without image.yaml and its records', async () => {
    const problems = await storeProblems({
      ...GOOD_STORE,
      'images/db/records/default.yaml':
        'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: db\n',
    });
    expect(problems).toEqual([
      'images/db/image.yaml:1:1 (document): image directory images/db has no image.yaml',
      'images/db/records/default.yaml:4:8 image: record of a missing image: images/db/image.yaml does not exist',
    ]);
  });

  it('refuses overrides of parameters that are not customizable, computed or not declared, naming the layer', async () => {
    const record = edit(
      RECORD,
      '    port: 8080',
      '    port: 8080\n    edition: enterprise\n    colour: blue',
    );
    const system = edit(SYSTEM, '  port: 8081', '  port: "x"\n  edition: pro\n  url: http://x/');
    expect(
      await storeProblems({
        ...GOOD_STORE,
        'images/web/records/large.yaml': record,
        'systems/web1.yaml': system,
      }),
    ).toEqual([
      "images/web/records/large.yaml:13:5 provision.parameters.edition: parameter 'edition' is not customizable (set by record 'large')",
      "images/web/records/large.yaml:14:5 provision.parameters.colour: parameter 'colour' is not declared by image 'web'",
      "systems/web1.yaml:16:9 parameters.port: must be an integer (parameter type integer; got 'x')",
      "systems/web1.yaml:17:3 parameters.edition: parameter 'edition' is not customizable (set by system 'web1')",
      "systems/web1.yaml:18:3 parameters.url: parameter 'url' is computed by the image (set by system 'web1')",
    ]);
  });

  it("never echoes a secret parameter's value in a type error", async () => {
    const image = edit(IMAGE, '  url:\n', '  pin:\n    type: integer\n    secret: true\n  url:\n');
    const record = edit(RECORD, '    port: 8080', '    port: 8080\n    pin: abc123');
    const problems = await storeProblems({
      ...GOOD_STORE,
      'images/web/image.yaml': image,
      'images/web/records/large.yaml': record,
    });
    expect(problems).toEqual([
      'images/web/records/large.yaml:13:10 provision.parameters.pin: must be an integer (parameter type integer; got <redacted>)',
    ]);
  });

  it('refuses unknown disks and disks shrunk below the image', async () => {
    const record = edit(
      RECORD,
      '    data:\n      size: 10GiB',
      '    data:\n      size: 512MiB\n    logs:\n      size: 1GiB',
    );
    expect(await storeProblems({ ...GOOD_STORE, 'images/web/records/large.yaml': record })).toEqual(
      [
        "images/web/records/large.yaml:10:13 provision.disks.data.size: size 512MiB is smaller than the image's disk 'data' (1GiB); disks can grow, not shrink",
        "images/web/records/large.yaml:11:5 provision.disks.logs: unknown disk 'logs' (image 'web' has disks: system, data)",
      ],
    );
  });

  it('reports systems of missing images or records, and shared MACs or hostnames', async () => {
    const web2 = edit(edit(SYSTEM, 'name: web1', 'name: web2'), 'record: large', 'record: huge');
    const db = edit(edit(SYSTEM, 'name: web1', 'name: db'), 'image: web', 'image: db');
    const problems = await storeProblems({
      ...GOOD_STORE,
      'systems/web2.yaml': web2.replace('hostname: web1.example.com', 'hostname: WEB1.example.com'),
      'systems/db.yaml': edit(db, 'hostname: web1.example.com', 'hostname: db').replace(
        /\nparameters:[\s\S]*$/,
        '\n',
      ),
    });
    expect(problems).toEqual([
      "systems/db.yaml:5:8 image: image 'db' does not exist",
      "systems/web1.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'db'",
      "systems/web2.yaml:4:11 hostname: hostname 'WEB1.example.com' is also used by system 'web1'",
      "systems/web2.yaml:6:9 record: image 'web' has no record 'huge' (records: default, large)",
      "systems/web2.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'db'",
    ]);
  });

  it('validates only the named images and the systems that use them', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/api/image.yaml': 'apiVersion: imgctl/v1\nkind: Image\nname: api\n',
      'systems/other.yaml':
        'apiVersion: imgctl/v1\nkind: System\nname: other\nhostname: other\nimage: api\nbogus: 1\n',
    };
    const result = await validateStore(await makeStore(tree), { images: ['web'] });
    expect(result.problems).toEqual([]);
    expect(result.counts).toEqual({ images: 1, records: 2, systems: 1 });
    await expect(validateStore(await makeStore(tree), { images: ['nope'] })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    expect((await storeProblems(tree)).length).toBeGreaterThan(0);
  });

  it('reports a missing store.yaml and validates it', async () => {
    const dir = await makeStore({});
    await rm(join(dir, 'store.yaml'));
    expect((await validateStore(dir)).problems.map(formatProblem)).toEqual([
      'store.yaml:1:1 (document): missing store.yaml: this is not an image store',
    ]);
    expect(
      await storeProblems({
        'store.yaml':
          'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\nserver:\n  listen: everywhere\n',
      }),
    ).toEqual(['store.yaml:5:11 server.listen: must be [host:]port, like 0.0.0.0:8080']);
  });

  it('validates a store of 1,000 images quickly', async () => {
    const tree: Record<string, string> = {};
    for (let i = 0; i < 1000; i++) {
      tree[`images/img${i}/image.yaml`] = edit(IMAGE, 'name: web', `name: img${i}`);
      tree[`images/img${i}/custom_scripts/base/10-a.sh`] = '';
      tree[`images/img${i}/records/default.yaml`] =
        `apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: img${i}\n`;
    }
    const dir = await makeStore(tree);
    const started = performance.now();
    const result = await validateStore(dir);
    expect(result.problems).toEqual([]);
    expect(result.counts.images).toBe(1000);
    expect(performance.now() - started).toBeLessThan(5000);
  }, 60_000);
});

describe('checkOverlay', () => {
  it('checks a new record or system against the store', async () => {
    const dir = await makeStore(GOOD_STORE);
    const record = edit(
      edit(RECORD, 'name: large', 'name: big'),
      '    port: 8080',
      '    edition: x',
    );
    expect(
      (
        await checkOverlay(dir, 'ImageRecord', parseYaml('r.yaml', record), {
          expectedName: 'big',
          expectedImage: 'web',
        })
      ).map(formatProblem),
    ).toEqual([
      "r.yaml:12:5 provision.parameters.edition: parameter 'edition' is not customizable (set by record 'big')",
    ]);
    const system = edit(SYSTEM, 'name: web1', 'name: web2');
    expect(
      (
        await checkOverlay(dir, 'System', parseYaml('s.yaml', system), { expectedName: 'web2' })
      ).map(formatProblem),
    ).toEqual([
      "s.yaml:4:11 hostname: hostname 'web1.example.com' is also used by system 'web1'",
      "s.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'web1'",
    ]);
    // a system compared with its own earlier version is not a duplicate of itself
    expect(
      await checkOverlay(dir, 'System', parseYaml('s.yaml', SYSTEM), { expectedName: 'web1' }),
    ).toEqual([]);
  });
});

describe('loadDocument', () => {
  it('returns the value, or throws VALIDATION with every problem, or NOT_FOUND', async () => {
    const dir = await makeStore(GOOD_STORE);
    const { value } = await loadDocument<{ name: string }>(
      'Image',
      join(dir, 'images/web/image.yaml'),
      'images/web/image.yaml',
      { expectedName: 'web' },
    );
    expect(value.name).toBe('web');

    await writeFile(
      join(dir, 'bad.yaml'),
      'apiVersion: imgctl/v1\nkind: System\nname: b\nimage: web\nhostname: -x\n',
    );
    const error = await loadDocument('System', join(dir, 'bad.yaml'), 'systems/bad.yaml').catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ImgctlError);
    expect(error).toMatchObject({
      code: 'VALIDATION',
      message: 'systems/bad.yaml is not valid (1 problem)',
    });
    expect((error as ImgctlError).details).toEqual([
      'systems/bad.yaml:5:11 hostname: must be a host name like web1 or web1.example.com',
    ]);

    await expect(
      loadDocument('System', join(dir, 'none.yaml'), 'systems/none.yaml'),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('quickParse', () => {
  const full = (text: string) => {
    const y = parseYaml('q.yaml', text);
    return y.problems.length > 0 ? 'invalid' : y.value;
  };

  it('reads exactly what the YAML parser reads, or declines', () => {
    const scalars = [
      'yes',
      'no',
      'on',
      '0o17',
      '0x1f',
      '1e3',
      '.5',
      '1.',
      '-',
      '1_000',
      '12:30',
      '~',
      'Null',
      'TRUE',
      '+1',
      '-0',
      '007',
      '1.0e+3',
      '.inf',
      '-.Inf',
      '.NaN',
      'a: b',
      'a #b',
      'a#b',
      '@x',
      '`x',
      '%x',
      '!x',
      '&x',
      '*x',
      '|x',
      '>x',
      '?x',
      'x:',
      '[a]',
      '{a: 1}',
      '[a, "b"]',
      '[]',
      '{}',
      '[1, 2.5, true, null, x]',
      '{a: 1, b: [x]}',
      '"a\\nb"',
      "'it''s'",
      '"quoted # not a comment"',
      "'single'",
      'http://x/{{ a }}',
      '$HOME',
      '(x)',
      '9999999999999999999',
      'a, b',
      '2024-01-01T00:00:00Z',
      'x # comment',
      '"x" # comment',
      '-x',
      'ssh-ed25519 AAAA user@host',
    ];
    const docs = [
      IMAGE,
      RECORD,
      SYSTEM,
      ...scalars.map((s) => `k: ${s}\n`),
      ...scalars.map((s) => `k:\n  - ${s}\n`),
      'a:\n- 1\n- 2\nb: x\n',
      'a:\n  b:\n    c: 1\n  d: 2\n',
      'a: 1\na: 2\n',
      'a: |\n  one\n\n  # not a comment\n  two\n\nb: 1\n',
      'a: |-\n  one\n    two\nb: 1\n',
      'a: >\n  folded\n  text\n',
      'a: x\n  continued\n',
      'a:\r\n  b: 1\r\n',
      'null: 1\ntrue: 2\n1: 3\n',
      '- 1\n- 2\n',
      '--- \na: 1\n',
      'a: [1,\n  2]\n',
      'a:\n  - b: 1\n    c: 2\n  -   d: 3\n  -\n    e: 4\n',
      'a: "x\n  y"\n',
      '\tb: 1\n',
    ];
    let quick = 0;
    const differ: unknown[] = [];
    for (const text of docs) {
      const value = quickParse(text);
      if (value === undefined) continue;
      quick++;
      const expected = full(text);
      if (!isDeepStrictEqual(value, expected)) differ.push({ text, value, expected });
    }
    expect(differ).toEqual([]);
    expect(quick).toBeGreaterThan(docs.length / 2);
  });
});
