// Where GET /v1/status lives for a given shape URL: the same origin and
// mount point, with the last path segment `shape` replaced by `status`
// (http://host/v1/shape -> http://host/v1/status, also behind a path prefix).
// Any other path (an application route in front of the proxy) gets the
// origin's /v1/status; pass `statusUrl` explicitly when that is wrong.

export function statusUrlFor(shapeUrl: string): string {
  const url = new URL(shapeUrl)
  url.search = ''
  url.hash = ''
  const path = url.pathname.replace(/\/+$/, '')
  url.pathname = path.endsWith('/shape')
    ? `${path.slice(0, -'/shape'.length)}/status`
    : '/v1/status'
  return url.toString()
}
