import { describe, expect, it } from 'vitest';
import { checkServerUrl } from './server-url.ts';

describe('checkServerUrl', () => {
  it('takes http:// and https:// URLs as given', () => {
    expect(checkServerUrl('http://imgsrv:8460')).toBe('http://imgsrv:8460');
    expect(checkServerUrl('https://[::1]:8460/')).toBe('https://[::1]:8460/');
  });

  it('refuses anything else as USAGE, naming where the URL came from', () => {
    expect(() => checkServerUrl('imgsrv:8460x')).toThrowError(
      expect.objectContaining({ code: 'USAGE' }),
    );
    expect(() => checkServerUrl('not a url\x1b[2J')).toThrowError(
      "--server: not a URL: 'not a url\\x1b[2J'",
    );
    expect(() => checkServerUrl('ftp://imgsrv/', '$IMGCTL_SERVER')).toThrowError(
      '$IMGCTL_SERVER: only http:// and https:// URLs are supported',
    );
  });
});
