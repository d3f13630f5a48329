import { describe, expect, it } from 'vitest';
import { parseDuration } from './duration.ts';

describe('parseDuration', () => {
  it('reads a number and a unit, and refuses anything else', () => {
    expect(parseDuration('90s', 'x')).toBe(90);
    expect(parseDuration('15m', 'x')).toBe(900);
    expect(parseDuration('1h', 'x')).toBe(3600);
    expect(parseDuration('30d', 'x')).toBe(2_592_000);
    for (const bad of ['0s', '1', 'h', '1.5h', '-1h', '1H', '1w', ' 1h'])
      expect(() => parseDuration(bad, '--ttl'), bad).toThrow(
        expect.objectContaining({ code: 'USAGE', message: `--ttl: invalid duration '${bad}'` }),
      );
  });
});
