// The proxy's serving states and the body of GET /v1/status, checked at the
// boundary: a malformed body is an Error value, never a half-typed object.

/** What the proxy serves from: see shapeproxy's degraded-mode notes. */
export type ServingStatus = 'starting' | 'live' | 'fallback'

export const SERVING_STATUSES: readonly ServingStatus[] = ['starting', 'live', 'fallback']

export function isServingStatus(value: unknown): value is ServingStatus {
  return typeof value === 'string' && (SERVING_STATUSES as readonly string[]).includes(value)
}

/**
 * The body of `GET /v1/status`. Only `status` is required by this package;
 * the other documented fields are typed for convenience and may be absent on
 * older proxies.
 */
export interface StatusReport {
  status: ServingStatus
  replication_available?: boolean
  /** `ok` or `unreachable`: whether the proxy reaches the database. */
  connection?: string
  last_transition_at?: string
  cause?: string
  transitions?: number
  replication?: {
    slot?: string
    wal_status?: string | null
    lag_bytes?: number | null
    lag_seconds?: number | null
    last_error?: string | null
  }
  fallback?: {
    queries_in_flight?: number
    queued?: number
    refused?: number
    source?: string
  }
  shapes?: number
  version?: string
  [field: string]: unknown
}

/** Checks a parsed JSON body; returns the report or an Error naming the problem. */
export function parseStatusReport(body: unknown): StatusReport | Error {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return new Error('status body is not a JSON object')
  }
  const status = (body as { status?: unknown }).status
  if (!isServingStatus(status)) {
    return new Error(`status body has no valid "status" (got ${JSON.stringify(status)})`)
  }
  return body as StatusReport
}
