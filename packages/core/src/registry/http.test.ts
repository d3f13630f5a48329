import { type AddressInfo, createServer, type Server } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { makeHttp, type StreamedBody } from './http.ts';

const MiB = 1024 * 1024;
let server: Server | undefined;

afterEach(() => {
  server?.close();
  server = undefined;
});

it('stops sending a streamed body the server answered before reading it, closing its source', async () => {
  // a server that answers 401 once it has the headers, then reads nothing more
  server = createServer((socket) => {
    let head = '';
    const onData = (data: Buffer) => {
      head += data.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.write('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
      socket.pause();
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  let read = 0;
  let closed = false;
  const body: StreamedBody = {
    length: 256 * MiB,
    async *read() {
      try {
        for (; read < 256 * MiB; read += MiB) yield Buffer.alloc(MiB);
      } finally {
        closed = true;
      }
    },
  };
  const http = makeHttp(host, { insecureHttp: true });
  try {
    const res = await http.send('PATCH', new URL(`http://${host}/v2/x`), {}, body);
    expect(res.statusCode).toBe(401);
    res.resume();
    await expect.poll(() => closed, { timeout: 5_000 }).toBe(true);
    expect(read).toBeLessThan(256 * MiB);
  } finally {
    http.close();
  }
});
