/**
 * Network boot (docs/server.md, Network boot): GET /v1/boot/ipxe answers iPXE a script — the
 * provisioning ramdisk with a one-time token for a system with `netboot: true`, the local disk
 * for any other machine — and /v1/boot/kernel and /v1/boot/initrd serve the ramdisk's files
 * from the store's blobs. These routes are open (iPXE sends no token) and give away nothing but
 * what a netboot system's machine needs.
 */
import type { TLSSocket } from 'node:tls';
import type { ImgctlError } from '../util/errors.ts';
import { RAMDISK_FILE, type RamdiskDoc, readRamdisk } from '../disks/ramdisk.ts';
import {
  canonicalMac,
  chainScript,
  isScriptCmdline,
  isScriptUrl,
  localBootScript,
  ramdiskScript,
} from './boot-script.ts';
import { systemFileDigest } from './events.ts';
import { blobSegments, HttpError, lstatInStore, sendBlob } from './files.ts';
import type { RouteContext } from './route-context.ts';
import { errorText, json, noStore, queryOf, segmentName } from './route-helpers.ts';
import { notFoundBelow, type Reply, type Route, type RouteRequest } from './route-table.ts';

/** A host and port as a Host header gives them, checked before they go into a script. */
const HOST_HEADER = /^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?$/;

export function bootRoutes(ctx: RouteContext): Route[] {
  const { storeDir } = ctx;

  /**
   * The URL the machine reaches this server at: store.yaml's `server.url` when set (behind a
   * proxy), else the scheme of this connection and the Host header it sent, else the address
   * it reached.
   */
  async function baseUrl(request: RouteRequest): Promise<string> {
    await ctx.watch.settled();
    const configured = (await ctx.storeConfig())?.server?.url;
    if (configured !== undefined) return configured.replace(/\/+$/, '');
    const { req } = request;
    const scheme = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
    const host = req.headers.host;
    if (host !== undefined && HOST_HEADER.test(host)) return `${scheme}://${host}`;
    const address = (req.socket.localAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
    const shown = address.includes(':') ? `[${address}]` : address;
    return `${scheme}://${shown}:${req.socket.localPort ?? ''}`;
  }

  /**
   * The ramdisk of the store (its file not a symlink); NOT_FOUND when none is built,
   * VALIDATION when ramdisk.yaml is not valid.
   */
  function ramdisk(): Promise<RamdiskDoc> {
    lstatInStore(storeDir, RAMDISK_FILE.split('/'));
    return readRamdisk(storeDir);
  }

  /** The script for `mac`, and a line for the log saying what it does. */
  async function scriptFor(request: RouteRequest, mac: string): Promise<[string, string]> {
    const local = (reason: string): [string, string] => [
      localBootScript(reason),
      `local boot: ${reason}`,
    ];
    await ctx.watch.settled();
    let system;
    try {
      system = await ctx.lookupSystem(mac);
    } catch (error) {
      const code = (error as ImgctlError).code;
      if (code === 'NOT_FOUND') return local('no system has this MAC address');
      if (code === 'CONFLICT') return local('several systems have this MAC address');
      throw error;
    }
    if (!system.netboot) return local('its system has netboot: false');
    const held = ctx.netbootHeld.get(system.name);
    if (held !== undefined) {
      if (held === (await systemFileDigest(storeDir, system.name)))
        return local('its system posted done, but netboot: true could not be cleared in its file');
      ctx.netbootHeld.delete(system.name);
    }
    if (!ctx.acceptsEvents)
      return local(
        'this server has no write token: it could not clear netboot once the system is provisioned',
      );
    let found: RamdiskDoc;
    try {
      found = await ramdisk();
    } catch (error) {
      if ((error as ImgctlError).code === 'NOT_FOUND')
        return local('no ramdisk is built in this store');
      throw error;
    }
    for (const hex of [found.kernel.sha256, found.initrd.sha256]) {
      if (!lstatInStore(storeDir, blobSegments(hex))?.isFile())
        return local("the ramdisk's kernel or initrd is missing from .blobs/");
    }
    if (!isScriptCmdline(found.cmdline))
      return local("ramdisk/ramdisk.yaml's cmdline holds characters an iPXE script cannot");
    const url = await baseUrl(request);
    if (!isScriptUrl(url)) return local("store.yaml's server.url cannot go into an iPXE script");
    const signer = await ctx.signer();
    const { token } = ctx.bootTokens.issue(system.name);
    const script = ramdiskScript({
      baseUrl: url,
      system: system.name,
      mac,
      token,
      kernelSha256: found.kernel.sha256,
      initrdSha256: found.initrd.sha256,
      cmdline: found.cmdline,
      trustPem: signer?.publicKeyPem,
    });
    return [script, `provisioning ramdisk for system ${system.name}`];
  }

  async function ipxe(request: RouteRequest): Promise<Reply> {
    const q = queryOf(request.query, ['mac']);
    const given = q.one('mac');
    let script: string;
    if (given === undefined) {
      const url = await baseUrl(request);
      script = isScriptUrl(url)
        ? chainScript(url)
        : localBootScript("store.yaml's server.url cannot go into an iPXE script");
    } else {
      const mac = canonicalMac(given);
      let line: string;
      if (mac === undefined) {
        script = localBootScript('the mac parameter is not a MAC address');
        line = 'local boot: the mac parameter is not a MAC address';
      } else {
        // Whatever goes wrong, iPXE gets a script: an error page would stop the machine.
        try {
          [script, line] = await scriptFor(request, mac);
        } catch (error) {
          ctx.log(`boot ${mac}: ${errorText(error)}`);
          const reason = 'its system or the ramdisk cannot be read (the server log says why)';
          script = localBootScript(reason);
          line = `local boot: ${reason}`;
        }
      }
      ctx.log(`boot ${mac ?? '(not a MAC)'}: ${line}`);
    }
    return { status: 200, body: script, type: 'text/plain; charset=utf-8', headers: noStore };
  }

  /** The kernel or initrd of the ramdisk, as a blob is served (Range, ETag). */
  function file(which: 'kernel' | 'initrd'): Route['handle'] {
    return async (request) => {
      const q = queryOf(request.query, ['sha256']);
      const wanted = q.one('sha256');
      const found = await ramdisk().catch((error: unknown) => {
        throw (error as ImgctlError).code === 'NOT_FOUND' ? noRamdisk() : error;
      });
      const hex = found[which].sha256;
      if (wanted !== undefined && wanted !== hex)
        throw new HttpError(404, 'NOT_FOUND', `the ramdisk's ${which} is no longer that one`, {
          hint: 'the ramdisk was built again since the boot script was made: boot again',
        });
      return { streamed: true, bytes: await sendBlob(request.req, request.res, storeDir, hex) };
    };
  }

  /** GET /v1/boot/ramdisk: what imgagent --via-ramdisk fetches and stages its instructions into. */
  async function ramdiskInfo(request: RouteRequest): Promise<Reply> {
    queryOf(request.query, []);
    const { kernel, initrd, cmdline } = await ramdisk().catch((error: unknown) => {
      throw (error as ImgctlError).code === 'NOT_FOUND' ? noRamdisk() : error;
    });
    return json(200, { kernel, initrd, cmdline }, noStore);
  }

  /**
   * POST /v1/boot/tokens {"system": NAME}: a boot token for a machine switched into the ramdisk
   * without a network boot (imgagent --via-ramdisk). The write token only: a boot token never
   * makes another.
   */
  async function issueToken(request: RouteRequest): Promise<Reply> {
    queryOf(request.query, []);
    const body = request.body as Record<string, unknown> | null;
    const keys = body !== null && typeof body === 'object' ? Object.keys(body) : [];
    if (keys.length !== 1 || keys[0] !== 'system' || typeof body!.system !== 'string')
      throw new HttpError(400, 'USAGE', 'the body is {"system": NAME}');
    const name = segmentName('system', body!.system);
    if (!lstatInStore(storeDir, ['systems', `${name}.yaml`]))
      throw new HttpError(404, 'NOT_FOUND', `system '${name}' does not exist`);
    const { token, expires } = ctx.bootTokens.issue(name);
    ctx.log(`boot token issued for system ${name}, until ${expires.toISOString()}`);
    return json(201, { token, expires: expires.toISOString() }, noStore);
  }

  return [
    { method: 'GET', path: '/v1/boot/ipxe', open: true, handle: ipxe },
    { method: 'GET', path: '/v1/boot/ramdisk', open: true, handle: ramdiskInfo },
    { method: 'POST', path: '/v1/boot/tokens', handle: issueToken },
    { method: 'GET', path: '/v1/boot/kernel', open: true, handle: file('kernel') },
    { method: 'GET', path: '/v1/boot/initrd', open: true, handle: file('initrd') },
    { ...notFoundBelow('/v1/boot'), open: true },
  ];
}

function noRamdisk(): HttpError {
  return new HttpError(404, 'NOT_FOUND', 'no ramdisk is built in this store', {
    hint: "build it with 'imgctl ramdisk build'",
  });
}
