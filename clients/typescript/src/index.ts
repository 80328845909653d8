// @shapeproxy/client: a fallback-aware wrapper around @electric-sql/client's
// ShapeStream for shapeproxy. See README.md.

export {
  DEFAULT_STATUS_POLL_INTERVAL_MS,
  DEFAULT_STATUS_REQUEST_TIMEOUT_MS,
  ShapeProxyStream,
  type ErrorSource,
  type ShapeProxyErrorEvent,
  type ShapeProxyStreamOptions,
  type StatusChangeEvent,
  type StatusSource,
} from './shape-proxy-stream.js'
export { isServingStatus, parseStatusReport, SERVING_STATUSES, type ServingStatus, type StatusReport } from './serving-status.js'
export { FALLBACK_MODE_HEADER, isFallbackResponse } from './fallback-header.js'
export { statusUrlFor } from './status-url.js'
export { maxAgeMs } from './cache-control.js'
export { systemClock, type Clock } from './clock.js'
