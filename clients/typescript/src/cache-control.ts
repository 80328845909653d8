// Reads max-age from a Cache-Control header: the status endpoint's promise of
// how long an answer stays valid, so pollers never ask more often than that.

/** max-age in milliseconds, or undefined when the header has none. */
export function maxAgeMs(cacheControl: string | null | undefined): number | undefined {
  if (!cacheControl) return undefined
  for (const directive of cacheControl.split(',')) {
    const [name, value] = directive.trim().split('=', 2)
    if (name?.trim().toLowerCase() !== 'max-age' || value === undefined) continue
    const seconds = Number(value.trim().replace(/^"|"$/g, ''))
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  }
  return undefined
}
