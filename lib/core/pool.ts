// A few asynchronous jobs at a time: layer downloads, layer unpacking.

/**
 * Run fn on each item, n at a time. The first failure stops the others from
 * starting (and aborts the controller, for those running that listen to it)
 * and is thrown once all have settled, so nothing runs on after we return.
 */
export async function pool<T>(
  items: readonly T[],
  n: number,
  controller: AbortController,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  let first: unknown;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (e) {
        if (!failed) {
          failed = true;
          first = e;
          controller.abort();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failed) throw first;
}
