import { writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { minimalImageYaml } from '../../../../test/helpers/base-store.ts';
import { makeStore } from '../../../../test/helpers/index.ts';
import { putBlob } from '../../../../test/helpers/validate-documents.ts';
import { HttpError } from './files.ts';
import { createRouter, type Reply, type Route, type RouteRequest } from './route-table.ts';
import { createRoutes, type Routes } from './routes.ts';
import { createRelease, withdrawRelease } from '../store/releases.ts';
import { setImage } from '../store/images.ts';

function request(method: string, target: string): RouteRequest {
  const url = new URL(target, 'http://x');
  return {
    method,
    segments: url.pathname.split('/').filter((s) => s !== ''),
    query: url.searchParams,
    authed: false,
    // Only the blob route streams through these; no test here reaches it.
    req: undefined as unknown as IncomingMessage,
    res: undefined as unknown as ServerResponse,
  };
}

async function refusal(reply: Promise<Reply>): Promise<HttpError> {
  const error = await reply.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HttpError);
  return error as HttpError;
}

describe('createRouter', () => {
  const echo =
    (name: string): Route['handle'] =>
    async (_request, match) => ({
      status: 200,
      type: 'text/plain',
      body: `${name} ${match.rest.join('/')}`,
    });
  const router = createRouter([
    { method: 'GET', path: '/', handle: echo('root') },
    { method: 'GET', path: '/v1/things/:thing/parts/*path', handle: echo('parts') },
    {
      method: 'GET',
      path: '/v1/things/:thing',
      handle: async (_request, match) => ({
        status: 200,
        type: 'text/plain',
        body: `thing ${match.param('thing')}`,
      }),
    },
    { method: 'POST', path: '/v1/things/:thing', handle: echo('post') },
    { method: 'GET', path: '/v1/things/:thing/*rest', handle: echo('below') },
  ]);
  const body = async (method: string, target: string) => {
    const reply = await router.handle(request(method, target));
    return 'body' in reply ? String(reply.body) : '';
  };

  it('answers with the first route whose method and pattern fit, HEAD as GET', async () => {
    expect(await body('GET', '/')).toBe('root ');
    expect(await body('HEAD', '/v1/things/a')).toBe('thing a');
    expect(await body('POST', '/v1/things/a')).toBe('post ');
    expect(await body('GET', '/v1/things/a/parts/b/c')).toBe('parts b/c');
    expect(await body('GET', '/v1/things/a/parts')).toBe('below parts');
  });

  it('gives 404 naming the path when no route fits', async () => {
    const error = await refusal(router.handle(request('GET', '/v1/nothing/here')));
    expect(error.status).toBe(404);
    expect(error.message).toBe('no such route /v1/nothing/here');
    expect((await refusal(router.handle(request('DELETE', '/v1/things/a')))).status).toBe(404);
  });

  it('derives the methods a path takes from every route matching it', () => {
    expect(router.methodsFor([])).toEqual(['GET', 'HEAD']);
    expect(router.methodsFor(['v1', 'things', 'a'])).toEqual(['GET', 'HEAD', 'POST']);
    expect(router.methodsFor(['v1', 'things', 'a', 'parts', 'b'])).toEqual(['GET', 'HEAD']);
    expect(router.methodsFor(['v1', 'things'])).toEqual([]);
  });
});

const IMAGE = minimalImageYaml({
  name: 'web',
  disks: [{ id: 'root', use: 'system' }],
  extra: `parameters:
  motd:
    default: hello
  admin_password:
    default: changeme
    secret: true
`,
});

async function storeRoutes(image = IMAGE): Promise<Routes & { dir: string }> {
  const { dir } = await makeStore({
    'images/web/image.yaml': image,
    'images/web/provision.sh': '#!/bin/sh\n',
    'images/web/records/default.yaml':
      'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: web\n',
  });
  const routes = createRoutes(dir, () => new Date('2026-01-05T10:00:00Z'));
  onTestFinished(() => routes.close());
  return Object.assign(routes, { dir });
}

async function jsonOf(reply: Promise<Reply>): Promise<unknown> {
  const r = await reply;
  if (!('body' in r)) throw new Error('streamed');
  expect(r.type).toBe('application/json');
  return JSON.parse(String(r.body));
}

describe('the route table of imgctl serve', () => {
  it('serves the server, an image with its secret redacted, and a provisioning script', async () => {
    const routes = await storeRoutes();
    expect(await jsonOf(routes.handle(request('GET', '/v1')))).toEqual({
      apiVersion: 'imgctl/v1',
      kind: 'Server',
      store: 'test',
      signing: null,
    });
    const shown = (await jsonOf(routes.handle(request('GET', '/v1/images/web')))) as {
      image: { parameters: Record<string, { default: unknown }> };
      records: string[];
    };
    expect(shown.image.parameters.admin_password!.default).toBe('<redacted>');
    expect(shown.image.parameters.motd!.default).toBe('hello');
    expect(shown.records).toEqual(['default']);
    const script = await routes.handle(request('GET', '/v1/images/web/files/provision.sh'));
    expect(script).toMatchObject({ status: 200, body: Buffer.from('#!/bin/sh\n') });
  });

  it('takes GET and HEAD under each resource, POST at /v1/events only', async () => {
    const routes = await storeRoutes();
    const methods = (path: string) => routes.methodsFor(path.split('/').filter(Boolean));
    expect(methods('/')).toEqual(['GET', 'HEAD']);
    expect(methods('/v1/images')).toEqual(['GET', 'HEAD']);
    expect(methods('/v1/images/web/records/default/x')).toEqual(['GET', 'HEAD']);
    expect(methods('/v1/plan/x')).toEqual(['GET', 'HEAD']);
    expect(methods('/v1/blobs/sha256/ab')).toEqual(['GET', 'HEAD']);
    expect(methods('/v1/events')).toEqual(['POST']);
    expect(methods('/v1/events/x')).toEqual([]);
    expect(methods('/v1/blobs')).toEqual([]);
    expect(methods('/v2')).toEqual([]);
  });

  it('checks what a deeper path extends before saying it does not exist', async () => {
    const routes = await storeRoutes();
    const bad = await refusal(routes.handle(request('GET', '/v1/images/Bad!/anything')));
    expect([bad.status, bad.message]).toEqual([400, "invalid image name 'Bad!'"]);
    const query = await refusal(routes.handle(request('GET', '/v1/images/web/records/a/b?x=1')));
    expect([query.status, query.message]).toEqual([400, "unknown query parameter 'x'"]);
    const below = await refusal(routes.handle(request('GET', '/v1/images/web/records/a/b')));
    expect([below.status, below.message]).toEqual([
      404,
      'no such route /v1/images/web/records/a/b',
    ]);
  });

  it('serves a release from its frozen copy and refuses a revoked one with 410 and the reason', async () => {
    const [a, b] = ['a'.repeat(64), 'b'.repeat(64)];
    const image = minimalImageYaml({
      name: 'web',
      disks: [{ id: 'root', use: 'system', sha256: a, blob: true }],
    });
    const routes = await storeRoutes(image);
    for (const hex of [a, b]) await putBlob(routes.dir, hex);
    await createRelease(routes.dir, 'web');
    await writeFile(join(routes.dir, 'images/web/provision.sh'), '#!/bin/sh\necho 2\n');
    await setImage(routes.dir, 'web', [`disks[0].sha256=${b}`]);
    const script = await routes.handle(request('GET', '/v1/images/web@1/files/provision.sh'));
    expect(script).toMatchObject({ status: 200, body: Buffer.from('#!/bin/sh\n') });

    await withdrawRelease(routes.dir, 'web@1', 'revoke', { reason: 'CVE-2026-7' });
    for (const target of [
      '/v1/plan?image=web@1',
      '/v1/images/web@1',
      '/v1/images/web@1/files/provision.sh',
      `/v1/blobs/sha256/${a}`,
    ]) {
      const refused = await refusal(routes.handle(request('GET', target)));
      expect([refused.status, refused.code], target).toEqual([410, 'INTEGRITY']);
      expect(refused.message, target).toContain('CVE-2026-7');
    }
  });
});
