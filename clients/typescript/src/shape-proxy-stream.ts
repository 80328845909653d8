// ShapeProxyStream: the stock ShapeStream of @electric-sql/client, made aware
// of shapeproxy's degraded mode. It watches every shape response for the
// `electric-fallback-mode` header, polls GET /v1/status while the proxy is not
// live (never sooner than the answer's max-age, with If-None-Match), refreshes
// the stream when the proxy is live again, and emits typed status and error
// events. The application keeps reading the stream (or `shape`) as usual and
// needs no recovery code of its own.
//
// Who decides the status: GET /v1/status is authoritative. A flagged
// response moves a live stream to `fallback` at once, except shortly after
// the status endpoint said `live` (responses can lag the status by a moment,
// and a CDN can serve a status up to max-age old): then it asks the status
// endpoint again instead of flapping. An unflagged response while not live
// asks the status endpoint (as soon as max-age allows) whether the proxy is
// live again. Only when the status endpoint cannot be reached do headers
// alone decide.

import { Shape, ShapeStream, type GetExtensions, type Row, type ShapeStreamOptions } from '@electric-sql/client'

import { systemClock, type Clock } from './clock.js'
import { observingFetch, type ShapeRequestObservation } from './fallback-header.js'
import { Listeners } from './listeners.js'
import type { ServingStatus, StatusReport } from './serving-status.js'
import { StatusPoller } from './status-poller.js'
import { statusUrlFor } from './status-url.js'

/** Default time between status polls while not live (the proxy's max-age can raise it). */
export const DEFAULT_STATUS_POLL_INTERVAL_MS = 10_000
/** Default limit on one status request. */
export const DEFAULT_STATUS_REQUEST_TIMEOUT_MS = 10_000
// Shortest time after the status endpoint said `live` during which a flagged
// response asks the endpoint again rather than switching to fallback.
const MIN_SETTLE_MS = 1_000

export interface ShapeProxyStreamOptions<T extends Row<unknown> = Row>
  extends ShapeStreamOptions<GetExtensions<T>> {
  /** GET /v1/status of the proxy; by default derived from `url` (…/v1/shape → …/v1/status). */
  statusUrl?: string
  /**
   * Time between status polls while the proxy is in fallback or starting
   * (default 10 s). Never shorter than the status answer's Cache-Control max-age.
   */
  statusPollIntervalMs?: number
  /** A status request taking longer is abandoned and reported as an error (default 10 s). */
  statusRequestTimeoutMs?: number
  /** Also poll while live (default false: while live, response headers are watched). */
  pollStatusWhileLive?: boolean
  /** Time source and timers (tests); the system clock by default. */
  clock?: Clock
}

/** Where a status change was learnt. */
export type StatusSource = 'status-endpoint' | 'response-header'

export interface StatusChangeEvent {
  status: ServingStatus
  /** The status before; undefined for the first status known. */
  previous: ServingStatus | undefined
  source: StatusSource
  /** clock.now() when the change was noticed. */
  at: number
  /** The latest GET /v1/status report, if any was received. */
  report: StatusReport | undefined
}

/** What failed. */
export type ErrorSource =
  | 'status-endpoint' // a status poll failed; polling goes on
  | 'shape-request' // a shape request failed (network, 5xx, 429); the stream retries with backoff
  | 'stream' // the stream's onError was called (e.g. a 4xx)
  | 'refresh' // the refresh after returning to live failed

export interface ShapeProxyErrorEvent {
  source: ErrorSource
  error: Error
  /** False when nothing will retry: the stream has stopped for good. */
  willRetry: boolean
}

export class ShapeProxyStream<T extends Row<unknown> = Row> {
  /** The underlying stock stream: subscribe to it, read its offset and handle. */
  readonly stream: ShapeStream<T>
  /** The GET /v1/status URL in use. */
  readonly statusUrl: string

  readonly #abort = new AbortController()
  readonly #poller: StatusPoller
  readonly #clock: Clock
  readonly #pollWhileLive: boolean
  readonly #statusListeners = new Listeners<StatusChangeEvent>()
  readonly #errorListeners = new Listeners<ShapeProxyErrorEvent>()
  #shape: Shape<T> | undefined
  #status: ServingStatus | undefined
  #liveReportedAt: number | undefined
  #sawRequest = false
  #lastResponseFlagged: boolean | undefined
  #stopped = false

  constructor(options: ShapeProxyStreamOptions<T>) {
    const {
      statusUrl,
      statusPollIntervalMs = DEFAULT_STATUS_POLL_INTERVAL_MS,
      statusRequestTimeoutMs = DEFAULT_STATUS_REQUEST_TIMEOUT_MS,
      pollStatusWhileLive = false,
      clock = systemClock,
      ...streamOptions
    } = options
    this.#clock = clock
    this.#pollWhileLive = pollStatusWhileLive
    this.statusUrl = statusUrl ?? statusUrlFor(String(streamOptions.url))
    const baseFetch: typeof fetch = streamOptions.fetchClient ?? ((input, init) => fetch(input, init))

    this.#poller = new StatusPoller({
      url: this.statusUrl,
      fetchClient: baseFetch,
      intervalMs: statusPollIntervalMs,
      requestTimeoutMs: statusRequestTimeoutMs,
      clock,
      onReport: (report) => this.#onStatusReport(report),
      onError: (error) => this.#onStatusError(error),
    })

    const userSignal = streamOptions.signal
    if (userSignal?.aborted) this.close()
    else if (userSignal) {
      const onAbort = () => this.close()
      userSignal.addEventListener('abort', onAbort, { once: true })
      this.#abort.signal.addEventListener('abort', () => userSignal.removeEventListener('abort', onAbort), {
        once: true,
      })
    }

    const userOnError = streamOptions.onError
    this.stream = new ShapeStream<T>({
      ...streamOptions,
      signal: this.#abort.signal,
      fetchClient: observingFetch(baseFetch, (observation) => this.#onShapeRequest(observation)),
      onError: async (error) => {
        const retry = userOnError ? await userOnError(error) : undefined
        const willRetry = typeof retry === 'object' && retry !== null
        this.#emitError('stream', error, willRetry)
        if (!willRetry) this.#stop()
        return retry
      },
    })
  }

  /** A Shape (current rows, `rows` promise, subscribe) over this stream; created on first use. */
  get shape(): Shape<T> {
    this.#shape ??= new Shape<T>(this.stream)
    return this.#shape
  }

  /** The proxy's status as last learnt; undefined until the first answer. */
  get status(): ServingStatus | undefined {
    return this.#status
  }

  /** True while the proxy serves this shape from direct queries. */
  get isFallback(): boolean {
    return this.#status === 'fallback'
  }

  /** The last GET /v1/status report received. */
  get statusReport(): StatusReport | undefined {
    return this.#poller.report
  }

  /** Calls `listener` on every status change; returns the unsubscribe function. */
  onStatus(listener: (event: StatusChangeEvent) => void): () => void {
    return this.#statusListeners.add(listener)
  }

  /** Calls `listener` on every error seen; returns the unsubscribe function. */
  onError(listener: (event: ShapeProxyErrorEvent) => void): () => void {
    return this.#errorListeners.add(listener)
  }

  /**
   * Resolves once the status is `status` (at once if it already is); rejects
   * after `timeoutMs` (default: no limit) or when the stream is closed.
   */
  waitForStatus(status: ServingStatus, { timeoutMs }: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#status === status) return Promise.resolve()
    if (this.#stopped) return Promise.reject(new Error(`stream stopped before status "${status}"`))
    return new Promise((resolve, reject) => {
      let timer: unknown
      const finish = (error?: Error) => {
        removeStatus()
        removeError()
        if (timer !== undefined) this.#clock.clearTimeout(timer)
        this.#abort.signal.removeEventListener('abort', onClose)
        if (error) reject(error)
        else resolve()
      }
      const onClose = () => finish(new Error(`stream closed before status "${status}"`))
      const removeStatus = this.onStatus((event) => {
        if (event.status === status) finish()
      })
      const removeError = this.onError((event) => {
        if (!event.willRetry) finish(new Error(`stream stopped before status "${status}": ${event.error.message}`))
      })
      this.#abort.signal.addEventListener('abort', onClose, { once: true })
      if (timeoutMs !== undefined) {
        timer = this.#clock.setTimeout(
          () => finish(new Error(`timed out after ${timeoutMs} ms waiting for status "${status}" (now ${this.#status})`)),
          timeoutMs,
        )
      }
    })
  }

  /** Stops the stream, status polling and the Shape; listeners are dropped. */
  close(): void {
    this.#stop()
    this.#abort.abort()
    this.#shape?.unsubscribeAll()
    this.stream?.unsubscribeAll()
    this.#statusListeners.clear()
    this.#errorListeners.clear()
  }

  #stop(): void {
    this.#stopped = true
    this.#poller.stop()
  }

  #onShapeRequest(observation: ShapeRequestObservation): void {
    if (this.#stopped) return
    switch (observation.kind) {
      case 'request':
        if (!this.#sawRequest) {
          // The first shape request: learn the status alongside it.
          this.#sawRequest = true
          this.#poller.checkSoon()
          if (this.#pollWhileLive) this.#poller.setRepeating(true)
        }
        return
      case 'response':
        if (observation.fallback) {
          this.#lastResponseFlagged = true
          this.#onFlaggedResponse()
        } else if (observation.status < 300) {
          this.#lastResponseFlagged = false
          this.#onUnflaggedResponse()
        }
        if (observation.status >= 500 || observation.status === 429) {
          this.#emitError('shape-request', new Error(`GET ${observation.url} answered ${observation.status}`), true)
        }
        return
      case 'failure':
        if (!observation.aborted) {
          const { error } = observation
          const message = error instanceof Error ? error.message : String(error)
          this.#emitError('shape-request', new Error(`GET ${observation.url} failed: ${message}`, { cause: error }), true)
        }
        return
    }
  }

  #onFlaggedResponse(): void {
    if (this.#status === 'fallback') return
    const settleMs = Math.max(MIN_SETTLE_MS, this.#poller.maxAgeMs)
    if (this.#liveReportedAt !== undefined && this.#clock.now() - this.#liveReportedAt < settleMs) {
      this.#poller.checkSoon() // the status said live a moment ago: ask again
      return
    }
    this.#setStatus('fallback', 'response-header')
  }

  #onUnflaggedResponse(): void {
    if (this.#status === 'live') return
    if (this.#poller.lastFailed) {
      // The status endpoint cannot be reached: the header is all there is.
      if (this.#status !== 'starting') this.#setStatus('live', 'response-header')
      return
    }
    if (this.#status !== undefined) this.#poller.checkSoon() // live again? (first status is on its way)
  }

  #onStatusError(error: Error): void {
    this.#emitError('status-endpoint', error, true)
    // No status endpoint: the first status comes from the last response seen.
    if (this.#status === undefined && this.#lastResponseFlagged === false) this.#setStatus('live', 'response-header')
  }

  #onStatusReport(report: StatusReport): void {
    if (report.status === 'live') this.#liveReportedAt = this.#clock.now()
    if (report.status !== this.#status) this.#setStatus(report.status, 'status-endpoint')
  }

  #setStatus(status: ServingStatus, source: StatusSource): void {
    const previous = this.#status
    this.#status = status
    this.#poller.setRepeating(status !== 'live' || this.#pollWhileLive)
    this.#statusListeners.emit({ status, previous, source, at: this.#clock.now(), report: this.#poller.report })
    if (status === 'live' && previous !== undefined) this.#refresh()
  }

  // Back to live: cut a long-poll parked while in fallback short, so the
  // stream catches up from the live log now rather than at its next wake-up.
  #refresh(): void {
    if (this.#stopped || !this.stream.hasStarted()) return
    this.stream.forceDisconnectAndRefresh().catch((error: unknown) => {
      if (this.#stopped) return // a refresh interrupted by close()
      const cause = error instanceof Error ? error : new Error(`refresh interrupted: ${String(error)}`)
      this.#emitError('refresh', cause, true)
    })
  }

  #emitError(source: ErrorSource, error: Error, willRetry: boolean): void {
    this.#errorListeners.emit({ source, error, willRetry })
  }
}
