import { describe, expect, it } from 'vitest';
import { parseRange } from './server-files.ts';
import { parseTarget } from './server.ts';

describe('parseRange', () => {
  it.each([
    ['bytes=0-99', 1000, { start: 0, end: 99 }],
    ['bytes=900-', 1000, { start: 900, end: 999 }],
    ['bytes=900-5000', 1000, { start: 900, end: 999 }],
    ['bytes=-100', 1000, { start: 900, end: 999 }],
    ['bytes=-5000', 1000, { start: 0, end: 999 }],
    ['bytes=1000-', 1000, 'unsatisfiable'],
    ['bytes=0-', 0, 'unsatisfiable'],
    ['bytes=-0', 1000, 'unsatisfiable'],
    ['bytes=5-1', 1000, undefined],
    ['bytes=0-1,5-6', 1000, undefined],
    ['items=0-1', 1000, undefined],
    [undefined, 1000, undefined],
  ])('%s of %d bytes', (header, size, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});

describe('parseTarget', () => {
  it('decodes segments without normalizing them', () => {
    expect(parseTarget('/v1/images/web/files/custom_scripts/base/10-a.sh?x=1').segments).toEqual([
      'v1',
      'images',
      'web',
      'files',
      'custom_scripts',
      'base',
      '10-a.sh',
    ]);
  });
  it.each([
    '/v1/images/../etc',
    '/v1/images/%2e%2e/x',
    '/v1/images/a%2fb',
    '/v1/images/a%00b',
    '/v1/images//etc',
    '/v1/images/%zz',
    'http://example.com/v1',
  ])('refuses %s', (target) => {
    expect(() => parseTarget(target)).toThrow(expect.objectContaining({ status: 400 }));
  });
});
