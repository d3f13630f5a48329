import { describe, expect, it } from 'vitest';
import { BOOT_TOKEN_PREFIX, createBootTokens } from './boot-tokens.ts';

describe('boot tokens', () => {
  it('are fresh, random, and name the system they were issued for', () => {
    const tokens = createBootTokens(() => new Date(0));
    const a = tokens.issue('web01').token;
    const b = tokens.issue('web01').token;
    expect(a).toMatch(new RegExp(`^${BOOT_TOKEN_PREFIX}[0-9a-f]{64}$`));
    expect(b).not.toBe(a);
    expect(tokens.systemOf(a)).toBe('web01');
    expect(tokens.systemOf(b)).toBe('web01');
    expect(tokens.systemOf(`${BOOT_TOKEN_PREFIX}${'0'.repeat(64)}`)).toBeUndefined();
    expect(tokens.systemOf(a.slice(BOOT_TOKEN_PREFIX.length))).toBeUndefined();
  });

  it('end at their expiry', () => {
    let now = 1_000_000;
    const tokens = createBootTokens(() => new Date(now), 60_000);
    const { token, expires } = tokens.issue('web01');
    expect(expires.getTime()).toBe(now + 60_000);
    now += 59_999;
    expect(tokens.systemOf(token)).toBe('web01');
    now += 1;
    expect(tokens.systemOf(token)).toBeUndefined();
  });

  it("end together when their system ends them, leaving other systems' tokens", () => {
    const tokens = createBootTokens(() => new Date(0));
    const one = tokens.issue('web01').token;
    const two = tokens.issue('web01').token;
    const other = tokens.issue('web02').token;
    tokens.end('web01');
    expect(tokens.systemOf(one)).toBeUndefined();
    expect(tokens.systemOf(two)).toBeUndefined();
    expect(tokens.systemOf(other)).toBe('web02');
  });

  it('keep at most 8 per system: a script fetched again and again does not grow memory', () => {
    const tokens = createBootTokens(() => new Date(0));
    const issued = Array.from({ length: 20 }, () => tokens.issue('web01').token);
    expect(issued.filter((t) => tokens.systemOf(t) === 'web01')).toEqual(issued.slice(12));
  });
});
