// Test support: the e2e harness (a throwaway PostgreSQL and a real proxy,
// see tests/e2e/harness.js) and a ShapeProxyStream opened against it, built
// from dist/ exactly as an application imports the package. Every client
// records its status events, errors and the status requests it made.
import { maxAgeMs, ShapeProxyStream } from '../dist/index.js'

export { freePort, useHarness, waitFor } from '../../../tests/e2e/harness.js'

// Opens a client on the harness's proxy; closed at harness teardown.
// Returns { client, events, errors, statusRequests, waitForRows, rowsById }.
export function openClient(h, params, options = {}) {
  const statusRequests = [] // {at, ifNoneMatch, status, etag, maxAgeMs}
  const recordingFetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input)
    if (!new URL(url).pathname.endsWith('/v1/status')) return fetch(input, init)
    const entry = { at: Date.now(), ifNoneMatch: new Headers(init?.headers).get('if-none-match') }
    statusRequests.push(entry)
    const response = await fetch(input, init)
    entry.status = response.status
    entry.etag = response.headers.get('etag')
    entry.maxAgeMs = maxAgeMs(response.headers.get('cache-control'))
    return response
  }
  const client = new ShapeProxyStream({ url: h.shapeUrl, params, fetchClient: recordingFetch, ...options })
  const sub = { client, events: [], errors: [], statusRequests }
  client.onStatus((event) => sub.events.push(event))
  client.onError((event) => sub.errors.push(event))
  sub.statuses = () => sub.events.map((event) => event.status)
  sub.rowsById = () => new Map(client.shape.currentRows.map((row) => [String(row.id), row]))
  // Resolves once `predicate(rows)` holds on the Shape's rows (checked now and
  // on every update); rejects after timeoutMs with what the shape holds.
  sub.waitForRows = (predicate, timeoutMs, what) =>
    new Promise((resolve, reject) => {
      const { shape } = client
      let unsubscribe = () => {}
      const timer = setTimeout(() => {
        unsubscribe()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${shape.currentRows.length} rows, ` +
          `status ${client.status}, errors ${JSON.stringify(sub.errors.map((e) => e.error.message))})`))
      }, timeoutMs)
      const check = (rows) => {
        if (!predicate(rows)) return false
        clearTimeout(timer)
        unsubscribe()
        resolve()
        return true
      }
      if (shape.isUpToDate && check(shape.currentRows)) return
      unsubscribe = shape.subscribe(({ rows }) => check(rows))
    })
  h.onCleanup(() => client.close())
  return sub
}

// Rows sorted by id as plain JSON (BigInt as text), to compare with SELECT.
export function canonical(rows) {
  const sorted = [...rows].map((row) => ({ id: Number(row.id), title: String(row.title) }))
  sorted.sort((a, b) => a.id - b.id)
  return JSON.stringify(sorted)
}
