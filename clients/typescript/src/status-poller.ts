// Polls GET /v1/status: one request at a time, never sooner than the last
// answer's Cache-Control max-age allows, conditional on the last ETag (a 304
// reuses the last report). Either repeating (`setRepeating(true)`, every
// max(interval, max-age)) or one-shot (`checkSoon()`, as soon as max-age
// allows). Reports and failures go to callbacks; nothing throws out.

import { maxAgeMs } from './cache-control.js'
import type { Clock } from './clock.js'
import { parseStatusReport, type StatusReport } from './serving-status.js'

export interface StatusPollerOptions {
  url: string
  fetchClient: typeof fetch
  /** Wanted time between repeated polls; max-age raises it, never lowers it. */
  intervalMs: number
  /** A status request taking longer than this is abandoned (an error). */
  requestTimeoutMs: number
  clock: Clock
  onReport: (report: StatusReport, details: StatusFetchDetails) => void
  onError: (error: Error) => void
}

export interface StatusFetchDetails {
  /** True when the proxy answered 304 and the previous report was reused. */
  notModified: boolean
  /** The answer's max-age in ms (0 when the header had none). */
  maxAgeMs: number
  at: number
}

export class StatusPoller {
  readonly #options: StatusPollerOptions
  #etag: string | undefined
  #report: StatusReport | undefined
  #maxAgeMs = 0
  #lastRequestAt: number | undefined
  #lastFailed = false
  #repeating = false
  #inFlight: AbortController | undefined
  #timer: unknown
  #timerDueAt: number | undefined
  #checkWanted = false
  #stopped = false

  constructor(options: StatusPollerOptions) {
    this.#options = options
  }

  /** The last report received (undefined before the first). */
  get report(): StatusReport | undefined {
    return this.#report
  }

  /** max-age of the last answer, in ms. */
  get maxAgeMs(): number {
    return this.#maxAgeMs
  }

  /** True when the last request failed. */
  get lastFailed(): boolean {
    return this.#lastFailed
  }

  /** Polls every max(interval, max-age) while true. */
  setRepeating(repeating: boolean): void {
    if (this.#stopped || this.#repeating === repeating) return
    this.#repeating = repeating
    if (!repeating && !this.#checkWanted) this.#cancelTimer()
    this.#schedule()
  }

  /** One request as soon as the last answer's max-age allows. */
  checkSoon(): void {
    if (this.#stopped) return
    this.#checkWanted = true
    this.#schedule()
  }

  /** Stops for good: cancels the timer and any request in flight. */
  stop(): void {
    this.#stopped = true
    this.#cancelTimer()
    this.#inFlight?.abort()
  }

  // The earliest time the next request may start.
  #earliest(): number {
    return this.#lastRequestAt === undefined ? this.#options.clock.now() : this.#lastRequestAt + this.#maxAgeMs
  }

  #schedule(): void {
    if (this.#stopped || this.#inFlight) return // rescheduled when the request ends
    let dueAt: number
    if (this.#checkWanted) {
      dueAt = this.#earliest()
    } else if (this.#repeating) {
      dueAt =
        this.#lastRequestAt === undefined
          ? this.#options.clock.now()
          : this.#lastRequestAt + Math.max(this.#options.intervalMs, this.#maxAgeMs)
    } else {
      return
    }
    if (this.#timerDueAt !== undefined && this.#timerDueAt <= dueAt) return
    this.#cancelTimer()
    const delay = Math.max(0, dueAt - this.#options.clock.now())
    this.#timerDueAt = dueAt
    this.#timer = this.#options.clock.setTimeout(() => {
      this.#timer = undefined
      this.#timerDueAt = undefined
      // Timers can fire a little early against the wall clock (Node measures
      // from the event loop's cached time): never poll before max-age is over.
      if (this.#options.clock.now() < dueAt) this.#schedule()
      else void this.#poll()
    }, delay)
  }

  #cancelTimer(): void {
    if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerDueAt = undefined
  }

  async #poll(): Promise<void> {
    if (this.#stopped || this.#inFlight) return
    this.#checkWanted = false
    const controller = new AbortController()
    this.#inFlight = controller
    const { clock } = this.#options
    this.#lastRequestAt = clock.now()
    const timeout = clock.setTimeout(() => controller.abort(), this.#options.requestTimeoutMs)
    try {
      const outcome = await this.#request(controller.signal)
      if (this.#stopped) return
      this.#lastFailed = outcome instanceof Error
      if (outcome instanceof Error) this.#options.onError(outcome)
      else this.#options.onReport(outcome.report, outcome.details)
    } finally {
      clock.clearTimeout(timeout)
      this.#inFlight = undefined
      this.#schedule()
    }
  }

  async #request(
    signal: AbortSignal,
  ): Promise<{ report: StatusReport; details: StatusFetchDetails } | Error> {
    const { url, fetchClient, clock } = this.#options
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.#etag !== undefined && this.#report !== undefined) headers['if-none-match'] = this.#etag
    let response: Response
    try {
      response = await fetchClient(url, { headers, signal })
    } catch (error) {
      const reason = signal.aborted ? `timed out after ${this.#options.requestTimeoutMs} ms` : describe(error)
      return new Error(`GET ${url} failed: ${reason}`, { cause: error })
    }
    const age = maxAgeMs(response.headers.get('cache-control'))
    this.#maxAgeMs = age ?? 0
    const details = (notModified: boolean): StatusFetchDetails => ({
      notModified,
      maxAgeMs: this.#maxAgeMs,
      at: clock.now(),
    })
    if (response.status === 304 && this.#report !== undefined) {
      await response.body?.cancel().catch(() => {})
      return { report: this.#report, details: details(true) }
    }
    let text: string
    try {
      text = await response.text()
    } catch (error) {
      return new Error(`GET ${url}: reading the body failed: ${describe(error)}`, { cause: error })
    }
    if (!response.ok) {
      return new Error(`GET ${url} answered ${response.status}: ${text.slice(0, 200)}`)
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      return new Error(`GET ${url}: the body is not JSON: ${text.slice(0, 200)}`)
    }
    const report = parseStatusReport(body)
    if (report instanceof Error) return new Error(`GET ${url}: ${report.message}`)
    this.#report = report
    this.#etag = response.headers.get('etag') ?? undefined
    return { report, details: details(false) }
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : ''
    return `${error.message}${cause}`
  }
  return String(error)
}
