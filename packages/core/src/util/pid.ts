/**
 * Whether process `pid` exists. EPERM means it does but belongs to another user: alive. Anything
 * but a positive integer is no process.
 */
export function isAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
