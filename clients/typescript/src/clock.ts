// Time and timers, injectable so that scheduling rules can be exercised
// without waiting (and so that nothing reads global time directly).

export interface Clock {
  /** Milliseconds, monotonic enough for scheduling (Date.now by default). */
  now(): number
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => {
    const handle = globalThis.setTimeout(callback, ms)
    // In Node, a pending status poll must not keep the process alive by itself.
    ;(handle as { unref?: () => void }).unref?.()
    return handle
  },
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
}
