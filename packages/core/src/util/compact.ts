/** Drops undefined members, so a document prints the same way every time (and YAML/JSON agree). */
export function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
