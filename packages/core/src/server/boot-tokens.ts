/**
 * The one-time tokens of network boots (docs/server.md, Network boot): each boot script of a
 * netboot system carries a fresh token that lets the ramdisk read that system's plan, image
 * files and blobs and post its events — nothing else. Kept in memory only, as the SHA-256 of
 * the token: a restarted server accepts none of the tokens it gave out (the machine boots
 * again and gets a new one), and nothing on disk can be replayed.
 */
import { createHash, randomBytes } from 'node:crypto';

/** Boot tokens start with this, so one that expired is told apart from a wrong token. */
export const BOOT_TOKEN_PREFIX = 'imgctl-boot-';
export const DEFAULT_BOOT_TOKEN_TTL_MS = 60 * 60_000;
/** tokens kept per system: a machine (or someone) fetching its script again and again */
const PER_SYSTEM = 8;

export interface BootTokens {
  /** A fresh token for `system`, valid for the TTL from now, and when it expires. */
  issue(system: string): { token: string; expires: Date };
  /**
   * The system a token was issued for; undefined when it is not one of ours, has expired or
   * was ended.
   */
  systemOf(token: string): string | undefined;
  /** Ends every token of `system` (it posted `done` or `failed`). */
  end(system: string): void;
}

interface Issued {
  system: string;
  expires: number;
}

export function isBootToken(token: string): boolean {
  return token.startsWith(BOOT_TOKEN_PREFIX);
}

export function createBootTokens(
  now: () => Date,
  ttlMs: number = DEFAULT_BOOT_TOKEN_TTL_MS,
): BootTokens {
  /** token digest (hex) → its system and expiry; in issue order */
  const issued = new Map<string, Issued>();

  const prune = (at: number) => {
    for (const [digest, entry] of issued) if (entry.expires <= at) issued.delete(digest);
  };

  return {
    issue(system) {
      const at = now().getTime();
      prune(at);
      const own = [...issued].filter(([, entry]) => entry.system === system);
      for (const [digest] of own.slice(0, Math.max(0, own.length - PER_SYSTEM + 1)))
        issued.delete(digest);
      const token = `${BOOT_TOKEN_PREFIX}${randomBytes(32).toString('hex')}`;
      issued.set(digestOf(token), { system, expires: at + ttlMs });
      return { token, expires: new Date(at + ttlMs) };
    },
    systemOf(token) {
      if (!isBootToken(token)) return undefined;
      const entry = issued.get(digestOf(token));
      if (entry === undefined) return undefined;
      if (entry.expires <= now().getTime()) {
        issued.delete(digestOf(token));
        return undefined;
      }
      return entry.system;
    },
    end(system) {
      for (const [digest, entry] of issued) if (entry.system === system) issued.delete(digest);
    },
  };
}

/**
 * A Map look-up by the token's SHA-256: what is compared is a digest of 256 random bits, so
 * its timing tells nothing about any token.
 */
function digestOf(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
