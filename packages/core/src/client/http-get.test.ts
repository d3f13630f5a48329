import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { httpGet, type RawResponse } from './http-get.ts';
import { ImgctlError } from '../util/errors.ts';

// Raw sockets, so that each test writes exactly the bytes a server or a proxy would.
type Respond = (socket: Socket, requestHead: string) => void;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

async function listen(server: Server | HttpServer): Promise<URL> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  cleanups.push(() => {
    sockets.forEach((socket) => socket.destroy());
    return new Promise((resolve) => server.close(resolve));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/blobs/x`);
}

/** A server that answers each request head with `respond`; the heads it received, in order. */
async function rawServer(respond: Respond): Promise<{ url: URL; heads: string[] }> {
  const heads: string[] = [];
  const server = createServer((socket) => {
    let received = '';
    socket.on('data', (data) => {
      received += data.toString('latin1');
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return;
      heads.push(received.slice(0, end));
      respond(socket, received.slice(0, end));
      received = '';
    });
    socket.on('error', () => undefined);
  });
  return { url: await listen(server), heads };
}

const get = (url: URL, headers: Record<string, string> = {}) =>
  httpGet(url, headers, { stallMs: 5_000 });

async function readAll(response: RawResponse, slow = false): Promise<Buffer> {
  const parts: Buffer[] = [];
  await response.read((chunk) => {
    parts.push(Buffer.from(chunk));
    if (slow) return new Promise((resolve) => setImmediate(resolve));
  });
  return Buffer.concat(parts);
}

/** `body` as chunks of uneven sizes, with an extension and a trailer field a proxy may add. */
function chunked(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0, n = 0; at < body.length; n++) {
    const size = Math.min(body.length - at, 1 + ((n * 48_271) % 70_000));
    parts.push(Buffer.from(`${size.toString(16).toUpperCase()};ext=1\r\n`));
    parts.push(body.subarray(at, at + size), Buffer.from('\r\n'));
    at += size;
  }
  parts.push(Buffer.from('0\r\nx-trailer: 1\r\n\r\n'));
  return Buffer.concat(parts);
}

const head = (lines: string[]) => `HTTP/1.1 ${lines.join('\r\n')}\r\n\r\n`;
const blob = randomBytes(3 * 1024 * 1024 + 17);

describe('httpGet', () => {
  it('reads a body of Content-Length bytes and sends the headers it is given', async () => {
    const { url, heads } = await rawServer((socket) => {
      socket.write(head(['200 OK', `Content-Length: ${blob.length}`]));
      socket.end(blob);
    });
    const response = await get(url, { range: 'bytes=5-', authorization: 'Bearer t0ken' });
    expect(response.status).toBe(200);
    expect(response.framing).toBe('length');
    expect((await readAll(response)).equals(blob)).toBe(true);
    expect(heads[0]).toMatch(/^GET \/v1\/blobs\/x HTTP\/1\.1\r\n/);
    expect(heads[0]).toContain('\r\nrange: bytes=5-');
    expect(heads[0]).toContain('\r\nauthorization: Bearer t0ken');
  });

  it('hands on a 206 of a Range request as it arrives, pausing for a slow reader', async () => {
    const { url } = await rawServer((socket) => {
      const rest = blob.subarray(1000);
      socket.write(
        head([
          '206 Partial Content',
          `Content-Range: bytes 1000-${blob.length - 1}/${blob.length}`,
          `Content-Length: ${rest.length}`,
        ]),
      );
      socket.end(rest);
    });
    const response = await get(url, { range: 'bytes=1000-' });
    expect(response.status).toBe(206);
    expect((await readAll(response, true)).equals(blob.subarray(1000))).toBe(true);
  });

  it('stops at Content-Length and drops what follows', async () => {
    const { url } = await rawServer((socket) => {
      socket.end(Buffer.concat([Buffer.from(head(['200 OK', 'Content-Length: 5'])), blob]));
    });
    expect(await readAll(await get(url))).toEqual(blob.subarray(0, 5));
  });

  it('fails a body that ends before its Content-Length', async () => {
    const { url } = await rawServer((socket) => {
      socket.write(head(['200 OK', `Content-Length: ${blob.length}`]));
      socket.end(blob.subarray(0, 100_000));
    });
    await expect(readAll(await get(url))).rejects.toThrow(
      `the body ended at 100000 of ${blob.length} bytes`,
    );
  });

  it('fails a body when the server drops the connection in the middle', async () => {
    const { url } = await rawServer((socket) => {
      socket.write(head(['200 OK', `Content-Length: ${blob.length}`]));
      socket.write(blob.subarray(0, 70_000), () => socket.resetAndDestroy());
    });
    await expect(readAll(await get(url))).rejects.toThrow(/ECONNRESET|the body ended/);
  });

  it('decodes a chunked body, however its framing is split, for a fast and a slow reader', async () => {
    const { url } = await rawServer((socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked']));
      socket.end(chunked(blob));
    });
    for (const slow of [false, true]) {
      const response = await get(url);
      expect(response.framing).toBe('chunked');
      expect((await readAll(response, slow)).equals(blob)).toBe(true);
    }
  });

  it('decodes the chunked body that node:http sends, whatever Content-Length a proxy left', async () => {
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, { 'transfer-encoding': 'chunked' });
      res.write(blob.subarray(0, 12345));
      res.end(blob.subarray(12345));
    });
    const url = await listen(server);
    expect((await readAll(await get(url))).equals(blob)).toBe(true);

    const { url: lying } = await rawServer((socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked', 'Content-Length: 10']));
      socket.end(chunked(blob));
    });
    expect((await readAll(await get(lying))).equals(blob)).toBe(true);
  });

  it('decodes a chunked body whose lines are split between reads', async () => {
    // Each part is sent once the data before it was handed on: the next read starts mid-line.
    const [first, second, last] = [
      '5\r\nhello\r\n1',
      '0;ext=1\r\nsixteen bytes!!!\r',
      '\n0\r\nx-trailer: 1\r\n\r\n',
    ];
    const handed: Buffer[] = [];
    let onHanded: () => void = () => undefined;
    const { url } = await rawServer(async (socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked']) + first);
      await new Promise<void>((resolve) => (onHanded = resolve));
      socket.write(second);
      await new Promise<void>((resolve) => (onHanded = resolve));
      socket.end(last);
    });
    await (
      await get(url)
    ).read((chunk) => {
      handed.push(Buffer.from(chunk));
      onHanded();
    });
    expect(Buffer.concat(handed).toString()).toBe('hellosixteen bytes!!!');
  });

  it('fails a chunked body that ends before its last chunk', async () => {
    const { url } = await rawServer((socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked']));
      const whole = chunked(blob);
      socket.end(whole.subarray(0, whole.length - 5)); // all the data, not the last chunk
    });
    await expect(readAll(await get(url))).rejects.toThrow(
      `the body ended at ${blob.length} bytes, before its last chunk`,
    );
  });

  it('fails a chunked body whose framing is broken', async () => {
    const { url } = await rawServer((socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked']));
      socket.end('4\r\nabcdef\r\n0\r\n\r\n');
    });
    await expect(readAll(await get(url))).rejects.toThrow('longer than its size says');
    const { url: bad } = await rawServer((socket) => {
      socket.write(head(['200 OK', 'Transfer-Encoding: chunked']));
      socket.end('zz\r\nabcdef\r\n0\r\n\r\n');
    });
    await expect(readAll(await get(bad))).rejects.toThrow('invalid chunk size line');
  });

  it('refuses a transfer or content coding other than chunked, naming it and the proxy', async () => {
    for (const header of ['Transfer-Encoding: gzip, chunked', 'Content-Encoding: gzip']) {
      const { url } = await rawServer((socket) => {
        socket.end(head(['200 OK', header, 'Content-Length: 4']) + 'abcd');
      });
      const refused = get(url);
      await expect(refused).rejects.toBeInstanceOf(ImgctlError);
      await expect(refused).rejects.toMatchObject({
        code: 'FAILED',
        message: expect.stringContaining(header.split(': ')[1]!) as unknown,
        hint: expect.stringContaining('proxy') as unknown,
      });
    }
  });

  it('refuses a redirect, saying where to, and sends nothing (no token) there', async () => {
    const elsewhere = await rawServer((socket) =>
      socket.end(head(['200 OK', 'Content-Length: 0'])),
    );
    for (const status of [301, 302, 303, 307, 308]) {
      const target = new URL(`/v1/blobs/x?signature=s3cret`, elsewhere.url);
      const { url } = await rawServer((socket) => {
        socket.end(head([`${status} Moved`, `Location: ${target.href}`, 'Content-Length: 0']));
      });
      const refused = get(url, { authorization: 'Bearer t0ken' });
      await expect(refused).rejects.toMatchObject({
        code: 'USAGE',
        message: `${url.origin}/v1/blobs/x redirects (HTTP ${status}) to ${elsewhere.url.origin}/v1/blobs/x; blob downloads do not follow redirects`,
      });
    }
    expect(elsewhere.heads).toEqual([]);
  });

  it('fails when the server closes before the head, or stays silent', async () => {
    const { url } = await rawServer((socket) => socket.end());
    await expect(get(url)).rejects.toThrow('the connection closed');
    const { url: silent } = await rawServer(() => undefined);
    await expect(httpGet(silent, {}, { stallMs: 100 })).rejects.toThrow('no data for 100 ms');
  });
});
