import { describe, expect, it } from 'vitest';
import { check, edit, SYSTEM } from '../../../../test/helpers/validate-documents.ts';

describe('validateDocument: systems', () => {
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

  it('takes netboot as a boolean only', () => {
    expect(check('System', `${SYSTEM}netboot: true\n`)).toEqual([]);
    expect(check('System', `${SYSTEM}netboot: false\n`)).toEqual([]);
    expect(check('System', `${SYSTEM}netboot: yes please\n`)).toEqual([
      "f.yaml:17:10 netboot: must be true or false (got the string 'yes please')",
    ]);
  });
});
