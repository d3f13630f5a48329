import { describe, expect, it } from 'vitest';
import { parameterEnv } from './build.ts';

describe('parameterEnv', () => {
  it('gives every parameter as PARAM_<NAME>: strings as they are, the rest as JSON', () => {
    expect(
      parameterEnv({
        parameters: {
          http_port: 8080,
          greeting: 'hello world',
          stay_up: false,
          tags: ['a', 'b'],
          nothing: null,
        },
      }),
    ).toEqual({
      PARAM_HTTP_PORT: '8080',
      PARAM_GREETING: 'hello world',
      PARAM_STAY_UP: 'false',
      PARAM_TAGS: '["a","b"]',
      PARAM_NOTHING: '',
    });
  });

  it('refuses two parameters that upper-case to the same variable', () => {
    expect(() => parameterEnv({ parameters: { port: 1, PORT: 2 } })).toThrow(
      "parameters 'port' and 'PORT' both become PARAM_PORT in the build environment",
    );
  });
});
