import { describe, expect, it } from 'vitest';
import { check, SHA } from '../../../../test/helpers/validate-documents.ts';

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
