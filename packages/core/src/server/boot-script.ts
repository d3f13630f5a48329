/**
 * The iPXE scripts of GET /v1/boot/ipxe (docs/server.md, Network boot). Everything written into
 * a script comes from checked values — a URL and a kernel command line of the characters below,
 * names, hex digests, a MAC — or from fixed text: iPXE expands `${…}` and splits on spaces, so
 * a value outside those characters is refused rather than escaped.
 */

/** The characters a URL in a script may hold: no `$`, space, quote or backslash. */
const SCRIPT_URL = /^https?:\/\/[A-Za-z0-9._~:/?&=%+@,[\]-]+$/;
/** The characters of the ramdisk's own kernel arguments: words of these, split by spaces. */
const CMDLINE = /^[A-Za-z0-9._,:=/+@%~-]+( [A-Za-z0-9._,:=/+@%~-]+)*$/;
/** The MAC form iPXE's ${netX/mac} takes: six lowercase pairs and colons. */
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Whether `url` (no trailing slash) can be written into a script as it is. */
export function isScriptUrl(url: string): boolean {
  return SCRIPT_URL.test(url) && !url.endsWith('/');
}

/** Whether kernel arguments can be written into a script as they are ('' is none). */
export function isScriptCmdline(cmdline: string): boolean {
  return cmdline === '' || CMDLINE.test(cmdline);
}

/** A MAC address in the form iPXE sends (lowercase, colons); undefined when it is not one. */
export function canonicalMac(text: string): string | undefined {
  const mac = text.toLowerCase();
  return MAC.test(mac) ? mac : undefined;
}

/**
 * The script a PXE ROM or iPXE is pointed at: it asks again with the MAC of the interface it
 * booted from (netX: the one last opened, not always the first), and boots the local disk when
 * the server cannot be reached.
 */
export function chainScript(baseUrl: string): string {
  checkUrl(baseUrl);
  return lines([
    '#!ipxe',
    '# imgctl: ask for the script of the system with this interface MAC address',
    `chain ${baseUrl}/v1/boot/ipxe?mac=\${netX/mac} || goto local`,
    'exit',
    ':local',
    ...LOCAL_BOOT,
  ]);
}

/**
 * The script that boots the first disk (BIOS drive 0x80) and, where that is not possible (UEFI
 * without a SAN boot of it), returns to the firmware, which tries its next boot device.
 * `reason` is one of this module's callers' fixed sentences, never request input.
 */
export function localBootScript(reason: string): string {
  if (/[\r\n]/.test(reason)) throw new Error('a reason is one line');
  return lines(['#!ipxe', `# imgctl: local boot: ${reason}`, ...LOCAL_BOOT]);
}

const LOCAL_BOOT = ['sanboot --no-describe --drive 0x80 || exit', 'exit'];

export interface RamdiskBoot {
  baseUrl: string;
  system: string;
  /** the interface MAC iPXE asked with: the ramdisk takes its address on that one */
  mac: string;
  token: string;
  kernelSha256: string;
  initrdSha256: string;
  /** the ramdisk's own kernel arguments */
  cmdline: string;
  /** the store's signing public key (PEM): the ramdisk then accepts only plans it signed */
  trustPem?: string;
}

/**
 * The script that boots the provisioning ramdisk for `system`: its kernel and initrd by their
 * digests (a ramdisk rebuilt meanwhile is not mixed with this one), and its instructions on the
 * kernel command line (`imgctl.server`, `imgctl.system`, `imgctl.token`, `imgctl.trust`,
 * `BOOTIF`, read by the ramdisk's init).
 */
export function ramdiskScript(boot: RamdiskBoot): string {
  checkUrl(boot.baseUrl);
  for (const [what, value, pattern] of [
    ['system', boot.system, /^[a-z0-9][a-z0-9._-]{0,62}$/],
    ['mac', boot.mac, MAC],
    ['token', boot.token, /^[a-z-]+[0-9a-f]{64}$/],
    ['kernel', boot.kernelSha256, /^[0-9a-f]{64}$/],
    ['initrd', boot.initrdSha256, /^[0-9a-f]{64}$/],
  ] as const) {
    if (!pattern.test(value)) throw new Error(`not a ${what} for an iPXE script`);
  }
  if (!isScriptCmdline(boot.cmdline))
    throw new Error('kernel arguments an iPXE script cannot hold');
  const args = [
    'initrd=initrd',
    ...(boot.cmdline === '' ? [] : [boot.cmdline]),
    `BOOTIF=01-${boot.mac.replaceAll(':', '-')}`,
    `imgctl.server=${boot.baseUrl}`,
    `imgctl.system=${boot.system}`,
    `imgctl.token=${boot.token}`,
    ...(boot.trustPem === undefined
      ? []
      : [`imgctl.trust=${Buffer.from(boot.trustPem).toString('base64')}`]),
  ];
  const url = `${boot.baseUrl}/v1/boot`;
  return lines([
    '#!ipxe',
    `# imgctl: provisioning ramdisk for system ${boot.system}`,
    `kernel ${url}/kernel?sha256=${boot.kernelSha256} ${args.join(' ')}`,
    `initrd --name initrd ${url}/initrd?sha256=${boot.initrdSha256}`,
    'boot',
  ]);
}

function checkUrl(url: string): void {
  if (!isScriptUrl(url)) throw new Error('a URL an iPXE script cannot hold');
}

function lines(list: string[]): string {
  return `${list.join('\n')}\n`;
}
