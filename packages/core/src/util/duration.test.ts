import { describe, expect, it } from 'vitest';
import { parseDuration } from './duration.ts';

describe('parseDuration', () => {
  it('reads ms, s, m, h, d and bare seconds into milliseconds', () => {
    expect(['500ms', '90s', '10m', '2h', '30d', '5', '1.5s'].map((t) => parseDuration(t))).toEqual([
      500, 90_000, 600_000, 7_200_000, 2_592_000_000, 5000, 1500,
    ]);
    for (const bad of ['soon', '-1h', '1H', '1w', 'h', ''])
      expect(() => parseDuration(bad, '--ttl'), bad).toThrow(
        expect.objectContaining({ code: 'USAGE', message: `--ttl '${bad}' is not a duration` }),
      );
  });
});
