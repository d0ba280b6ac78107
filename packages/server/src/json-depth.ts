/**
 * How many levels of arrays and objects a message's `data` may nest. JSON.parse
 * takes any depth, but JSON.stringify (the store encodes `data` with it) is
 * recursive: ten thousand levels overflow the stack, and in a group commit that
 * would fail every publish written with it. Deeper `data` is refused as
 * `bad_request` before it reaches the store (WebSocket `publish`,
 * POST /rooms/{room}/messages, POST /publish/{channel}).
 */
export const MAX_DATA_DEPTH = 64;

export const DATA_TOO_DEEP = `data is nested too deeply (at most ${MAX_DATA_DEPTH} levels of arrays and objects)`;

/**
 * Whether a parsed JSON value nests arrays and objects more than `limit`
 * levels deep (a scalar is 0 levels, `{"text":"hi"}` is 1). Iterative, so it
 * cannot overflow the stack itself, and it visits each container at most once.
 */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  const pending: unknown[] = [value];
  const depths: number[] = [0];
  while (pending.length > 0) {
    const current = pending.pop();
    const depth = depths.pop() as number;
    if (typeof current !== 'object' || current === null) continue;
    if (depth >= limit) return true;
    for (const child of Array.isArray(current) ? current : Object.values(current)) {
      if (typeof child === 'object' && child !== null) {
        pending.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return false;
}
