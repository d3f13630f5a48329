import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { renderImageFile } from './image-files.ts';
import { type PlanRequest, redactPlan, resolvePlan } from './plan.ts';

const stores: string[] = [];
afterEach(() => {
  for (const dir of stores.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A temp store from a map of store-relative paths to file contents. */
function makeStore(tree: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgctl-plan-'));
  stores.push(dir);
  for (const [path, text] of Object.entries(tree)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const STORE_YAML = `apiVersion: imgctl/v1
kind: ImageStore
name: test
`;

const WEB_IMAGE = `apiVersion: imgctl/v1
kind: Image
name: web
label: Web appliance
revision: 3
boot:
  - type: hvm
    arch: x86_64
    loader: hd
    drives:
      - disk: root
        target: vda
      - disk: data
        target: vdb
devices:
  vcpus: 1
  memory: 512MiB
  nics:
    - model: e1000
      network: default
disks:
  - id: root
    use: system
    format: qcow2
    size: 2GiB
  - id: data
    use: data
    format: qcow2
    size: 1GiB
parameters:
  http_port:
    default: 80
    type: integer
  debug:
    default: false
    type: boolean
  cache_size:
    default: 64MiB
    type: size
  motd:
    default: hello
  os_release:
    default: "9"
    customizable: false
  admin_password:
    default: changeme
    secret: true
  fqdn:
    computed: "{{ HOSTNAME }}.example.org"
  url:
    computed: "http://{{ fqdn }}:{{ http_port }}/"
  db_url:
    computed: "postgres://admin:{{ admin_password }}@db/{{ IMAGE_NAME }}"
`;

const record = (name: string, body = '', image = 'web') =>
  `apiVersion: imgctl/v1\nkind: ImageRecord\nname: ${name}\nimage: ${image}\n${body}`;

const KICKSTART = `# {{ IMAGE_NAME }} for {{ system.hostname }}
{% for nic in system.interfaces -%}
network --device={{ nic.name }}{% if nic.dhcp %} --bootproto=dhcp{% else %} --bootproto=static --ip={{ nic.ip }}{% endif %}
{% endfor -%}
rootpw --plaintext {{ admin_password | quote }}
part / --size={{ disks[0].size | mib }}
`;

function webStore(extra: Record<string, string> = {}): string {
  return makeStore({
    'store.yaml': STORE_YAML,
    'images/web/image.yaml': WEB_IMAGE,
    'images/web/kickstart.ks': KICKSTART,
    'images/web/provision.sh': '#!/bin/sh\n',
    'images/web/records/default.yaml': record('default'),
    'images/web/records/large.yaml': record(
      'large',
      `provision:
  vcpus: 4
  memory: 4GiB
  disks:
    data:
      size: 20GiB
  parameters:
    http_port: 8080
    motd: large
`,
    ),
    'systems/web1.yaml': `apiVersion: imgctl/v1
kind: System
name: web1
hostname: web1.example.net
image: web
record: large
interfaces:
  - name: eth0
    mac: "52:54:00:00:00:01"
    ip: 192.0.2.10/24
    bridge: br0
  - name: eth1
    mac: "52:54:00:00:00:02"
    dhcp: true
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample admin@example
parameters:
  motd: from the system
`,
    ...extra,
  });
}

async function planError(storeDir: string, request: PlanRequest): Promise<ImgctlError> {
  try {
    await resolvePlan(storeDir, request);
  } catch (error) {
    expect(error).toBeInstanceOf(ImgctlError);
    return error as ImgctlError;
  }
  throw new Error('resolvePlan succeeded');
}

describe('resolvePlan layers', () => {
  it('takes image defaults with the default record', async () => {
    const plan = await resolvePlan(webStore(), { image: 'web' });
    expect(plan.record).toBe('default');
    expect(plan.system).toBeUndefined();
    expect(plan.parameters).toMatchObject({
      http_port: 80,
      debug: false,
      cache_size: '64MiB',
      motd: 'hello',
      os_release: '9',
    });
    expect(plan.parameter_sources.http_port).toBe('image');
    expect(plan.devices).toEqual({
      vcpus: 1,
      memory: 512 * 1024 ** 2,
      nics: [{ model: 'e1000', network: 'default' }],
      graphics: 'none',
      console: 'serial',
    });
    expect(plan.provision).toEqual({
      script: 'provision.sh',
      custom_scripts: [],
      kickstart: 'kickstart.ks',
    });
  });

  it('lets the record override the image, the system the record, and --set the system', async () => {
    const store = webStore();
    const large = await resolvePlan(store, { image: 'web', record: 'large' });
    expect(large.parameters.http_port).toBe(8080);
    expect(large.parameters.motd).toBe('large');
    expect(large.parameter_sources).toMatchObject({
      http_port: 'record',
      motd: 'record',
      debug: 'image',
    });
    expect(large.devices.vcpus).toBe(4);
    expect(large.devices.memory).toBe(4 * 1024 ** 3);

    const system = await resolvePlan(store, { image: 'web', system: 'web1' });
    expect(system.record).toBe('large');
    expect(system.parameters.motd).toBe('from the system');
    expect(system.parameter_sources.motd).toBe('system');
    expect(system.parameters.http_port).toBe(8080);

    const cli = await resolvePlan(store, {
      image: 'web',
      system: 'web1',
      sets: ['motd=from the command line', 'http_port=9090'],
    });
    expect(cli.parameters.motd).toBe('from the command line');
    expect(cli.parameters.http_port).toBe(9090);
    expect(cli.parameter_sources).toMatchObject({
      motd: 'command line',
      http_port: 'command line',
    });
    expect(cli.parameters.url).toBe('http://web1.example.net.example.org:9090/');
  });

  it('takes the record from the store defaults when neither the command line nor the system names one', async () => {
    const store = webStore({
      'store.yaml': `${STORE_YAML}defaults:\n  record: large\n  network: lan\n`,
    });
    const plan = await resolvePlan(store, { image: 'web' });
    expect(plan.record).toBe('large');
    const explicit = await resolvePlan(store, { image: 'web', record: 'default' });
    expect(explicit.record).toBe('default');
  });

  it('refuses a system that runs another image, naming both', async () => {
    const store = webStore({
      'systems/db1.yaml':
        'apiVersion: imgctl/v1\nkind: System\nname: db1\nhostname: db1\nimage: postgres\n',
    });
    const error = await planError(store, { image: 'web', system: 'db1' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toMatch(
      /^systems\/db1\.yaml:5:8 image: system 'db1' runs image 'postgres', not 'web'$/,
    );
  });

  it('reports a missing record as not found', async () => {
    const error = await planError(webStore(), { image: 'web', record: 'huge' });
    expect(error.code).toBe('NOT_FOUND');
  });
});

describe('resolvePlan refusals', () => {
  it('refuses a non-customizable parameter, naming the parameter, the layer and the place', async () => {
    const store = webStore({
      'images/web/records/fixed.yaml': record(
        'fixed',
        'provision:\n  parameters:\n    os_release: "10"\n',
      ),
    });
    const error = await planError(store, { image: 'web', record: 'fixed' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toBe(
      "images/web/records/fixed.yaml:7:5 provision.parameters.os_release: parameter 'os_release' is not customizable: the image fixes it, the record 'fixed' tried to set it",
    );

    const fromSystem = await planError(
      webStore({
        'systems/s1.yaml':
          'apiVersion: imgctl/v1\nkind: System\nname: s1\nhostname: s1\nimage: web\nparameters:\n  os_release: "8"\n',
      }),
      { image: 'web', system: 's1' },
    );
    expect(fromSystem.message).toMatch(/the system 's1' tried to set it$/);

    const fromCli = await planError(store, { image: 'web', sets: ['os_release=7'] });
    expect(fromCli.message).toBe(
      "--set os_release=7: parameter 'os_release' is not customizable: the image fixes it, the command line tried to set it",
    );
  });

  it('refuses an unknown parameter from any layer', async () => {
    const store = webStore({
      'images/web/records/typo.yaml': record(
        'typo',
        'provision:\n  parameters:\n    http_prot: 81\n',
      ),
    });
    const error = await planError(store, { image: 'web', record: 'typo' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toMatch(
      /^images\/web\/records\/typo\.yaml:7:5 provision\.parameters\.http_prot: the record 'typo' sets parameter 'http_prot', which image 'web' does not declare; it declares http_port, /,
    );
    const cli = await planError(store, { image: 'web', sets: ['nosuch=1'] });
    expect(cli.message).toMatch(/^--set nosuch=1: the command line sets parameter 'nosuch'/);
  });

  it('refuses setting a computed parameter', async () => {
    const error = await planError(webStore(), { image: 'web', sets: ['fqdn=x.example.org'] });
    expect(error.message).toMatch(
      /parameter 'fqdn' is computed by the image, the command line tried to set it/,
    );
  });

  it('reports every problem at once', async () => {
    const error = await planError(webStore(), {
      image: 'web',
      sets: ['nosuch=1', 'os_release=7', 'http_port=abc'],
    });
    expect(error.message).toBe("3 problems in the plan of image 'web'");
    expect(error.details).toHaveLength(3);
  });
});

describe('resolvePlan typed values', () => {
  it('reads --set values by the parameter type', async () => {
    const store = webStore();
    const plan = await resolvePlan(store, {
      image: 'web',
      sets: ['debug=yes', 'cache_size=1GiB', 'http_port=+8443', 'motd=1.10'],
    });
    expect(plan.parameters).toMatchObject({
      debug: true,
      cache_size: '1GiB',
      http_port: 8443,
      motd: '1.10',
    });
    expect(
      (await resolvePlan(store, { image: 'web', sets: ['debug=No', 'cache_size=1048576'] }))
        .parameters,
    ).toMatchObject({
      debug: false,
      cache_size: 1048576,
    });
    expect((await resolvePlan(store, { image: 'web', sets: ['motd='] })).parameters.motd).toBe('');
    expect((await resolvePlan(store, { image: 'web', sets: ['motd=a=b'] })).parameters.motd).toBe(
      'a=b',
    );
  });

  it('rejects values that do not fit the type', async () => {
    const store = webStore();
    expect((await planError(store, { image: 'web', sets: ['http_port=abc'] })).message).toBe(
      "--set http_port=abc: parameter 'http_port': expected an integer, got 'abc' (from the command line)",
    );
    expect((await planError(store, { image: 'web', sets: ['debug=maybe'] })).code).toBe(
      'VALIDATION',
    );
    expect((await planError(store, { image: 'web', sets: ['cache_size=lots'] })).code).toBe(
      'VALIDATION',
    );
    const fromRecord = await planError(
      webStore({
        'images/web/records/bad.yaml': record(
          'bad',
          'provision:\n  parameters:\n    http_port: eighty\n',
        ),
      }),
      { image: 'web', record: 'bad' },
    );
    const quoted = await planError(
      webStore({
        'images/web/records/quoted.yaml': record(
          'quoted',
          'provision:\n  parameters:\n    http_port: "8080"\n    debug: "yes"\n',
        ),
      }),
      { image: 'web', record: 'quoted' },
    );
    expect(quoted.details).toEqual([
      "images/web/records/quoted.yaml:7:16 provision.parameters.http_port: parameter 'http_port': expected an integer, got '8080' (from the record 'quoted')",
      "images/web/records/quoted.yaml:8:12 provision.parameters.debug: parameter 'debug': expected true or false, got 'yes' (from the record 'quoted')",
    ]);
    expect(fromRecord.message).toMatch(
      /^images\/web\/records\/bad\.yaml:7:16 provision\.parameters\.http_port: .*expected an integer/,
    );
  });

  it('rejects a malformed --set as a usage error', async () => {
    const store = webStore();
    for (const set of ['motd', '=x', 'bad name=1', 'a.b=1']) {
      expect((await planError(store, { image: 'web', sets: [set] })).code).toBe('USAGE');
    }
  });
});

describe('resolvePlan computed parameters and variables', () => {
  it('renders chained computed parameters over the template variables', async () => {
    const plan = await resolvePlan(webStore(), { image: 'web', system: 'web1' });
    expect(plan.parameters.fqdn).toBe('web1.example.net.example.org');
    expect(plan.parameters.url).toBe('http://web1.example.net.example.org:8080/');
    expect(plan.parameter_sources.url).toBe('computed');
  });

  it('sets the template variables from the image, the system and the VM name', async () => {
    const store = webStore();
    const bare = await resolvePlan(store, { image: 'web' });
    expect(bare.variables).toEqual({
      IMAGE_STORE: store,
      IMAGE_NAME: 'web',
      VM_NAME: 'web',
      SYSTEM_NAME: '',
      HOSTNAME: 'web',
    });
    expect(bare.vm_name).toBe('web');
    const named = await resolvePlan(store, { image: 'web', vmName: 'web-test' });
    expect(named.variables).toMatchObject({ VM_NAME: 'web-test', HOSTNAME: 'web-test' });
    const system = await resolvePlan(store, { image: 'web', system: 'web1' });
    expect(system.variables).toMatchObject({
      VM_NAME: 'web1',
      SYSTEM_NAME: 'web1',
      HOSTNAME: 'web1.example.net',
    });
    expect(system.hostname).toBe('web1.example.net');
  });

  it('reports a cycle of computed parameters by its names', async () => {
    const image = WEB_IMAGE.replace(
      /parameters:[\s\S]*$/,
      'parameters:\n  a:\n    computed: "{{ b }}"\n  b:\n    computed: "{{ c }}-x"\n  c:\n    computed: "{{ a }}"\n',
    );
    const error = await planError(webStore({ 'images/web/image.yaml': image }), { image: 'web' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toMatch(/computed parameters form a cycle: a -> b -> c -> a$/);
    expect(error.message).toMatch(/^images\/web\/image\.yaml:\d+:\d+ parameters\.a\.computed: /);
  });

  it('reports an undefined variable in a computed parameter', async () => {
    const image = WEB_IMAGE.replace('"{{ HOSTNAME }}.example.org"', '"{{ HOSTNMAE }}.example.org"');
    const error = await planError(webStore({ 'images/web/image.yaml': image }), { image: 'web' });
    expect(error.message).toMatch(
      /parameters\.fqdn\.computed: undefined variable: HOSTNMAE \(template line 1, column 4\)/,
    );
  });
});

describe('secrets', () => {
  it('are redacted in output, also when a computed parameter reads one', async () => {
    const plan = await resolvePlan(webStore(), { image: 'web', sets: ['admin_password=s3cr3t!'] });
    expect(plan.parameters.admin_password).toBe('s3cr3t!');
    expect(plan.parameters.db_url).toBe('postgres://admin:s3cr3t!@db/web');
    expect(plan.secrets).toEqual(['admin_password', 'db_url']);
    const redacted = redactPlan(plan);
    expect(redacted.parameters.admin_password).toBe('<redacted>');
    expect(redacted.parameters.db_url).toBe('<redacted>');
    expect(redacted.parameters.url).toBe('http://web.example.org:80/');
    expect(JSON.stringify(redacted)).not.toContain('s3cr3t');
    expect(plan.parameters.admin_password).toBe('s3cr3t!');
  });
});

describe('disks', () => {
  it('grow to the size the record asks for', async () => {
    const plan = await resolvePlan(webStore(), { image: 'web', record: 'large' });
    expect(plan.disks).toEqual([
      {
        id: 'root',
        use: 'system',
        format: 'qcow2',
        image_size: 2 * 1024 ** 3,
        size: 2 * 1024 ** 3,
      },
      { id: 'data', use: 'data', format: 'qcow2', image_size: 1024 ** 3, size: 20 * 1024 ** 3 },
    ]);
  });

  it('never shrink', async () => {
    const store = webStore({
      'images/web/records/small.yaml': record(
        'small',
        'provision:\n  disks:\n    root:\n      size: 1GiB\n',
      ),
    });
    const error = await planError(store, { image: 'web', record: 'small' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toBe(
      "images/web/records/small.yaml:8:13 provision.disks.root.size: record 'small' asks for disk 'root' of 1GiB, smaller than the image's 2GiB: disks can grow, never shrink",
    );
  });
});

describe('devices from a system', () => {
  it('has one NIC per interface with its MAC and bridge or network', async () => {
    const store = webStore({ 'store.yaml': `${STORE_YAML}defaults:\n  network: lan\n` });
    const plan = await resolvePlan(store, { image: 'web', system: 'web1' });
    expect(plan.devices.nics).toEqual([
      { model: 'e1000', bridge: 'br0', mac: '52:54:00:00:00:01' },
      { model: 'e1000', network: 'default', mac: '52:54:00:00:00:02' },
    ]);
    expect(plan.interfaces.map((i) => i.name)).toEqual(['eth0', 'eth1']);
    expect(plan.ssh_authorized_keys).toHaveLength(1);
  });
});

describe('plan output', () => {
  it('is the same document every time, keys in the plan order', async () => {
    const store = webStore();
    const a = await resolvePlan(store, {
      image: 'web',
      system: 'web1',
      sets: ['debug=true', 'motd=x'],
    });
    const b = await resolvePlan(store, {
      image: 'web',
      system: 'web1',
      sets: ['motd=x', 'debug=true'],
    });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(Object.keys(a)).toEqual([
      'apiVersion',
      'kind',
      'image',
      'record',
      'system',
      'vm_name',
      'hostname',
      'boot',
      'devices',
      'disks',
      'interfaces',
      'ssh_authorized_keys',
      'parameters',
      'parameter_sources',
      'secrets',
      'variables',
      'provision',
    ]);
    expect(Object.keys(a.parameters)).toEqual([
      'http_port',
      'debug',
      'cache_size',
      'motd',
      'os_release',
      'admin_password',
      'fqdn',
      'url',
      'db_url',
    ]);
  });
});

describe('renderImageFile', () => {
  it('renders the kickstart for a system, looping over its interfaces, secrets included', async () => {
    const store = webStore();
    const plan = await resolvePlan(store, {
      image: 'web',
      system: 'web1',
      sets: ["admin_password=it's"],
    });
    expect(await renderImageFile(store, plan, 'kickstart')).toBe(
      [
        '# web for web1.example.net',
        'network --device=eth0 --bootproto=static --ip=192.0.2.10/24',
        'network --device=eth1 --bootproto=dhcp',
        `rootpw --plaintext 'it'"'"'s'`,
        'part / --size=2048',
        '',
      ].join('\n'),
    );
  });

  it('reports a missing kickstart as not found', async () => {
    const store = webStore({
      'images/web/image.yaml': `${WEB_IMAGE}provision:\n  kickstart: missing.ks\n`,
    });
    const plan = await resolvePlan(store, { image: 'web' });
    await expect(renderImageFile(store, plan, 'kickstart')).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });

  it('refuses a kickstart that a symlink leads out of the image', async () => {
    const linked = webStore();
    rmSync(join(linked, 'images/web/kickstart.ks'));
    symlinkSync(join(linked, 'store.yaml'), join(linked, 'images/web/kickstart.ks'));
    const linkedPlan = await resolvePlan(linked, { image: 'web' });
    await expect(renderImageFile(linked, linkedPlan, 'kickstart')).rejects.toThrow(/leads outside/);
  });

  it('names the file, line and column of an error in the kickstart', async () => {
    const store = webStore({ 'images/web/kickstart.ks': 'text\n{{ nosuch }}\n' });
    const plan = await resolvePlan(store, { image: 'web' });
    await expect(renderImageFile(store, plan, 'kickstart')).rejects.toThrow(
      'images/web/kickstart.ks:2:4: undefined variable: nosuch',
    );
  });
});
