/** The rules of a system that its schema cannot express. */
import { type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { isObject, list, type Obj } from './values.ts';

/** Each interface has its own name and MAC, and either DHCP or a static address and gateway. */
export function checkInterfaces(y: YamlFile, doc: Obj, out: Problem[]): void {
  const names = new Map<string, number>();
  const macs = new Map<string, number>();
  for (const [i, nic] of list(doc.interfaces).entries()) {
    if (!isObject(nic)) continue;
    if (typeof nic.name === 'string') {
      const first = names.get(nic.name);
      if (first === undefined) names.set(nic.name, i);
      else
        out.push(
          problemAt(
            y,
            ['interfaces', i, 'name'],
            `duplicate interface '${nic.name}' (also interfaces[${first}])`,
          ),
        );
    }
    if (typeof nic.mac === 'string') {
      const mac = nic.mac.toLowerCase();
      const first = macs.get(mac);
      if (first === undefined) macs.set(mac, i);
      else
        out.push(
          problemAt(
            y,
            ['interfaces', i, 'mac'],
            `duplicate MAC ${mac} (also interfaces[${first}])`,
          ),
        );
    }
    if (nic.dhcp === true && nic.ip !== undefined) {
      out.push(problemAt(y, ['interfaces', i], 'set either dhcp: true or ip, not both'));
    }
    if (nic.ip === undefined && nic.gateway !== undefined) {
      out.push(problemAt(y, ['interfaces', i, 'gateway'], 'gateway needs a static ip'));
    }
  }
}
