// The helper against a live proxy: the shape syncs and follows inserts,
// updates and deletes; the first status comes from GET /v1/status; status
// polls respect Cache-Control max-age and revalidate with the ETag; a bad
// request ends in an error event, not an exception.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { FetchError } from '@electric-sql/client'
import { canonical, openClient, useHarness } from './support.js'

const MAX_AGE_S = 1
const h = useHarness({ name: 'ts_live', proxyArgs: ['--status-max-age-s', String(MAX_AGE_S)] })

before(async () => {
  await h.ready
  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO items SELECT g, 'seed ' || g FROM generate_series(1, 50) g`)
})

test('status polls are never closer than max-age and revalidate with the ETag', async () => {
  // First, while nothing is written (the status body, hence its ETag, stays
  // the same). Asks for a poll every 50 ms; the proxy's max-age must win.
  const sub = openClient(h, { table: 'items' }, { pollStatusWhileLive: true, statusPollIntervalMs: 50 })
  await sub.client.shape.rows
  await sub.client.waitForStatus('live', { timeoutMs: 10_000 })
  const maxAge = sub.statusRequests[0].maxAgeMs
  assert.equal(maxAge, MAX_AGE_S * 1000)
  // The requests made in 2.6 max-age from the first: at 0, 1 and 2 max-age.
  const windowEnd = sub.statusRequests[0].at + 2.6 * maxAge
  await new Promise((resolve) => setTimeout(resolve, windowEnd - Date.now()))
  const requests = sub.statusRequests.filter((r) => r.at <= windowEnd)
  assert.ok(requests.length >= 2 && requests.length <= 3, `${requests.length} status requests in 2.6 max-age`)
  for (let i = 1; i < requests.length; i++) {
    const gap = requests[i].at - requests[i - 1].at
    // The poller times max-age from just before it calls fetch; this test's
    // fetch wrapper stamps a little later, by as much as a loaded event loop
    // delays it (8 ms seen in CI's sanitizer pass). Polling at the asked 50 ms
    // would still fail this by far.
    assert.ok(gap >= maxAge - 50, `status requests ${gap} ms apart`)
    // Conditional on the previous answer's ETag; 304 when nothing changed.
    assert.equal(requests[i].ifNoneMatch, requests[i - 1].etag)
    assert.ok([200, 304].includes(requests[i].status), `status answered ${requests[i].status}`)
  }
  assert.equal(requests[0].ifNoneMatch, null)
  assert.ok(requests.slice(1).some((r) => r.status === 304), `no 304 among ${JSON.stringify(requests)}`)
  assert.equal(sub.client.status, 'live')
  assert.equal(sub.events.length, 1, 'a 304 is not a status change')
})

test('syncs the shape, reports live, and follows live changes', async () => {
  const sub = openClient(h, { table: 'items' })
  const rows = await sub.client.shape.rows
  assert.equal(rows.length, 50)
  await sub.client.waitForStatus('live', { timeoutMs: 10_000 })
  assert.equal(sub.client.status, 'live')
  assert.equal(sub.client.isFallback, false)
  assert.deepEqual(
    sub.events.map(({ status, previous, source }) => ({ status, previous, source })),
    [{ status: 'live', previous: undefined, source: 'status-endpoint' }],
  )
  assert.equal(sub.client.statusReport?.status, 'live')

  await h.sql(`INSERT INTO items VALUES (51, 'new')`)
  await h.sql(`UPDATE items SET title = 'changed' WHERE id = 1`)
  await h.sql(`DELETE FROM items WHERE id = 2`)
  await sub.waitForRows(
    (rows) => rows.some((r) => r.id === 51) && rows.find((r) => r.id === 1)?.title === 'changed' &&
      !rows.some((r) => r.id === 2),
    10_000, 'insert, update and delete')
  const { rows: expected } = await h.sql('SELECT id, title FROM items')
  assert.equal(canonical(sub.client.shape.currentRows), canonical(expected))
  assert.deepEqual(sub.errors, [])
  // Live: no status polling beyond the first request.
  assert.equal(sub.statusRequests.length, 1)
})

test('a bad request is an error event and stops the stream, nothing is thrown', async () => {
  const sub = openClient(h, { table: 'items', where: 'no_such_column = 1' })
  sub.client.stream.subscribe(() => {})
  await assert.rejects(sub.client.waitForStatus('fallback', { timeoutMs: 10_000 }), /stream stopped/)
  const streamErrors = sub.errors.filter((e) => e.source === 'stream')
  assert.equal(streamErrors.length, 1)
  assert.equal(streamErrors[0].willRetry, false)
  assert.ok(streamErrors[0].error instanceof FetchError)
  assert.equal(streamErrors[0].error.status, 400)
})

test('a user onError that retries is honoured', async () => {
  let calls = 0
  const sub = openClient(h, { table: 'items', where: 'no_such_column = 1' }, {
    backoffOptions: { initialDelay: 10, maxDelay: 20, multiplier: 1 },
    onError: () => (++calls < 3 ? {} : undefined),
  })
  sub.client.stream.subscribe(() => {})
  await assert.rejects(sub.client.waitForStatus('fallback', { timeoutMs: 10_000 }), /stream stopped/)
  assert.equal(calls, 3)
  assert.deepEqual(sub.errors.filter((e) => e.source === 'stream').map((e) => e.willRetry), [true, true, false])
})

test("aborting the application's signal closes the stream and stops status polling", async () => {
  const controller = new AbortController()
  const sub = openClient(h, { table: 'items' }, {
    signal: controller.signal, pollStatusWhileLive: true, statusPollIntervalMs: 50,
  })
  await sub.client.shape.rows
  controller.abort()
  await assert.rejects(sub.client.waitForStatus('fallback'), /stopped|closed/)
  const polls = sub.statusRequests.length
  await new Promise((resolve) => setTimeout(resolve, sub.statusRequests[0].maxAgeMs + 300))
  assert.equal(sub.statusRequests.length, polls, 'no status request after abort')
})
