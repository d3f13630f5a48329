import { type WithdrawAction, withdrawRelease } from '@imgctl/core/store/releases';
import { terminalSafe } from '@imgctl/core/util/names';
import type { Result } from '../command.ts';

/** `release deprecate` and `release revoke`: one core call, and the line that says what it did. */
export async function withdraw(
  storeDir: string,
  ref: string,
  action: WithdrawAction,
  reason: string | undefined,
): Promise<Result> {
  const release = await withdrawRelease(storeDir, ref, action, { reason });
  const state = action === 'revoke' ? 'revoked' : 'deprecated';
  const why = reason ? `: ${terminalSafe(reason)}` : '';
  return { data: release, text: `${state} ${release.image}@${release.revision}${why}` };
}
