// The proxy restarts while PostgreSQL is down: shapes saved under
// --data-dir are served from disk (same handle, same rows) by the restarted
// proxy, a request for a shape it does not have is answered 503 with
// retry-after promptly, and once PostgreSQL is back the clients that were
// open before the outage receive new changes live (replication resumes).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useHarness } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const h = useHarness({ name: 'db_down' })

const backoffOptions = { initialDelay: 100, maxDelay: 1_000, multiplier: 1.5 }
const WHERE = "kind = 'a'"
// The proxy must answer a shape request while PostgreSQL is down within this.
const ANSWER_WITHIN_MS = 5_000
// Reconnection after PostgreSQL returns: the proxy backs off up to 30 s.
const RESUME_TIMEOUT_MS = 60_000

// A fetch that records every status the client got.
function recordingFetch(log, label) {
  return async (input, init) => {
    const response = await fetch(input, init)
    log.push({ label, status: response.status, url: String(input) })
    return response
  }
}

// GET with a deadline; resolves {status, headers, body, ms}, or
// {status: 'timeout'} when nothing came back in time.
async function timedGet(url, timeoutMs = 3 * ANSWER_WITHIN_MS) {
  const started = Date.now()
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    const body = await response.text()
    return { status: response.status, headers: response.headers, body, ms: Date.now() - started }
  } catch (error) {
    return { status: error.name === 'TimeoutError' ? 'timeout' : `error ${error.message}`, ms: Date.now() - started }
  }
}

const shapeQuery = (params) => `${h.shapeUrl}?${new URLSearchParams({ ...params, offset: '-1' })}`

const statuses = []
let all, filtered // long-lived clients opened before the outage
let pending // a stock client for a new shape, opened while PostgreSQL is down
let handles, expectedAll, expectedFiltered

test('two shapes synced before the outage', async () => {
  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL, kind text NOT NULL)')
  await h.sql(
    `INSERT INTO items SELECT g, 'item ' || g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 200) g`,
  )
  all = openShape(h, { table: 'items' }, { streamOptions: { backoffOptions, fetchClient: recordingFetch(statuses, 'all') } })
  filtered = openShape(
    h,
    { table: 'items', where: WHERE },
    { streamOptions: { backoffOptions, fetchClient: recordingFetch(statuses, 'filtered') } },
  )
  assert.equal((await all.shape.rows).length, 200)
  assert.equal((await filtered.shape.rows).length, 100)
  // Live changes too, so both logs hold more than the snapshot.
  await h.sql(`INSERT INTO items VALUES (201, 'live', 'a'), (202, 'live', 'b')`)
  await h.sql(`UPDATE items SET title = 'changed' WHERE id IN (2, 3)`)
  await h.sql('DELETE FROM items WHERE id IN (4, 5)')
  expectedAll = (await h.sql('SELECT * FROM items ORDER BY id')).rows
  expectedFiltered = (await h.sql(`SELECT * FROM items WHERE ${WHERE} ORDER BY id`)).rows
  await all.waitForRows((rows) => canonicalRows(rows) === canonicalRows(expectedAll), 5_000, 'all rows')
  await filtered.waitForRows((rows) => canonicalRows(rows) === canonicalRows(expectedFiltered), 5_000, 'filtered rows')
  handles = { all: all.stream.shapeHandle, filtered: filtered.stream.shapeHandle }
  assert.ok(handles.all && handles.filtered && handles.all !== handles.filtered)
})

test('restarted with PostgreSQL down, saved shapes are served from disk', async (t) => {
  assert.ok(handles, 'the first test ran')
  const code = await h.stopProxy()
  assert.equal(code, 0, 'the proxy stopped cleanly on SIGTERM')
  await h.stopPostgres()
  const mark = h.proxy.mark()
  const started = Date.now()
  // With no database the proxy reports "starting" (202), not "active".
  await h.startProxy({ healthStatuses: [200, 202] })
  t.diagnostic(`proxy up without PostgreSQL in ${Date.now() - started} ms`)
  const health = await h.health()
  assert.equal(health.status, 202, 'health is 202 while the database is down')
  assert.deepEqual(health.body, { status: 'starting' })
  const lines = h.proxy.logsSince(mark)
  assert.ok(
    lines.some((line) => /shapes: 2 loaded/.test(line)),
    `the log says "shapes: 2 loaded":\n${lines.join('\n')}`,
  )

  // Plain requests from scratch: 200 with the saved handles.
  for (const [name, params] of [
    ['all', { table: 'items' }],
    ['filtered', { table: 'items', where: WHERE }],
  ]) {
    const response = await timedGet(shapeQuery(params))
    assert.equal(response.status, 200, `GET ${name} offset=-1: ${response.status} ${response.body ?? ''}`)
    assert.equal(response.headers.get('electric-handle'), handles[name], `${name}: the saved handle`)
    assert.ok(Array.isArray(JSON.parse(response.body)), `${name}: a JSON array body`)
  }

  // Fresh stock clients get the same rows and handles.
  for (const [name, params, expected] of [
    ['all', { table: 'items' }, expectedAll],
    ['filtered', { table: 'items', where: WHERE }, expectedFiltered],
  ]) {
    const fresh = openShape(h, params, { streamOptions: { fetchClient: recordingFetch(statuses, `fresh ${name}`) } })
    try {
      const rows = await fresh.shape.rows
      assert.equal(canonicalRows(rows), canonicalRows(expected), `${name}: a fresh client's rows`)
      assert.equal(fresh.stream.shapeHandle, handles[name], `${name}: a fresh client's handle`)
    } finally {
      fresh.close()
    }
  }

  // The clients from before the outage (retrying in the background) still
  // hold their rows and handles.
  assert.equal(all.stream.shapeHandle, handles.all)
  assert.equal(filtered.stream.shapeHandle, handles.filtered)
  assert.equal(canonicalRows(all.shape.currentRows), canonicalRows(expectedAll))
  assert.equal(canonicalRows(filtered.shape.currentRows), canonicalRows(expectedFiltered))
})

test('a new shape while PostgreSQL is down gets a prompt 503 with retry-after', async (t) => {
  assert.ok(handles, 'the first test ran')
  for (const params of [
    { table: 'items', where: "kind = 'b'" },
    { table: 'items', columns: 'id,title' },
  ]) {
    const response = await timedGet(shapeQuery(params))
    t.diagnostic(
      `new shape ${JSON.stringify(params)}: ${response.status} in ${response.ms} ms, ` +
        `retry-after ${response.headers?.get('retry-after')}, body ${response.body}`,
    )
    assert.notEqual(response.status, 'timeout', `the proxy hung on a new shape (no answer in ${3 * ANSWER_WITHIN_MS} ms)`)
    assert.equal(response.status, 503, `503 for a new shape, got ${response.status}: ${response.body ?? ''}`)
    assert.ok(response.ms < ANSWER_WITHIN_MS, `answered in ${response.ms} ms (< ${ANSWER_WITHIN_MS})`)
    const retryAfter = response.headers.get('retry-after')
    assert.ok(retryAfter && Number(retryAfter) > 0, `a positive retry-after header, got ${retryAfter}`)
  }
  // A stock client asking for a new shape now keeps retrying (honouring
  // retry-after) until the database is back; checked in the next test.
  pending = openShape(
    h,
    { table: 'items', where: "kind = 'b'" },
    { streamOptions: { backoffOptions, fetchClient: recordingFetch(statuses, 'pending new shape') } },
  )
  await h.waitFor(() => statuses.some(({ label, status }) => label === 'pending new shape' && status === 503), 5_000, {
    what: "the new-shape client's first 503",
  })
  assert.equal(pending.shape.currentRows.length, 0)
  // And the proxy is still up.
  assert.ok(h.proxy.running, 'the proxy is still running')
  assert.equal((await timedGet(shapeQuery({ table: 'items' }))).status, 200)
})

test('when PostgreSQL is back, the old clients receive new changes live', async (t) => {
  assert.ok(handles, 'the first test ran')
  const started = Date.now()
  await h.startPostgres()
  await h.sql(`INSERT INTO items VALUES (300, 'after outage', 'a'), (301, 'after outage', 'b')`)
  await h.sql(`UPDATE items SET title = 'updated after outage' WHERE id IN (6, 7)`)
  await h.sql('DELETE FROM items WHERE id IN (8, 9)')
  const committed = Date.now()
  const nowAll = (await h.sql('SELECT * FROM items ORDER BY id')).rows
  const nowFiltered = (await h.sql(`SELECT * FROM items WHERE ${WHERE} ORDER BY id`)).rows
  await all.waitForRows((rows) => canonicalRows(rows) === canonicalRows(nowAll), RESUME_TIMEOUT_MS, 'all: changes after the outage')
  await filtered.waitForRows(
    (rows) => canonicalRows(rows) === canonicalRows(nowFiltered),
    RESUME_TIMEOUT_MS,
    'filtered: changes after the outage',
  )
  t.diagnostic(`old clients caught up ${Date.now() - committed} ms after the commits (${Date.now() - started} ms after PostgreSQL start)`)
  await h.waitFor(async () => (await h.health()).status === 200, RESUME_TIMEOUT_MS, { what: 'health 200 again' })

  for (const sub of [all, filtered]) {
    assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], 'no must-refetch')
    assert.deepEqual(sub.errors, [], 'the stream never gave up')
  }
  assert.equal(all.stream.shapeHandle, handles.all)
  assert.equal(filtered.stream.shapeHandle, handles.filtered)

  // Live again: one more change arrives promptly.
  await h.sql(`INSERT INTO items VALUES (400, 'live again', 'a')`)
  await filtered.waitForRows((rows) => rows.some((row) => row.id === 400), 5_000, 'row 400')

  // New shapes can be created again: the client that got 503s syncs.
  const nowB = (await h.sql(`SELECT * FROM items WHERE kind = 'b' ORDER BY id`)).rows
  await pending.waitForRows((rows) => canonicalRows(rows) === canonicalRows(nowB), RESUME_TIMEOUT_MS, 'the new shape')
  const response = await timedGet(shapeQuery({ table: 'items', columns: 'id,title' }))
  assert.equal(response.status, 200, `a new shape after the outage: ${response.status} ${response.body ?? ''}`)

  const serverErrors = statuses.filter(({ status }) => status >= 500 && status !== 503)
  assert.deepEqual(serverErrors, [], 'no 5xx other than 503 seen by the clients')
})
