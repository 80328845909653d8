// Graceful shutdown of the real proxy process: SIGTERM answers every parked
// live long-poll (200, up-to-date at the client's offset, so a client simply
// re-polls) before the process exits 0, long before the long-poll timeout.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useHarness } from './harness.js'

const h = useHarness({ name: 'shutdown' })
const PARKED = 20

// Syncs `table` with plain requests: the handle and offset to go live from.
async function syncShape(table) {
  let offset = '-1'
  let handle = null
  for (let i = 0; i < 100; i++) {
    const params = new URLSearchParams({ table, offset })
    if (handle) params.set('handle', handle)
    const response = await fetch(`${h.shapeUrl}?${params}`)
    await response.arrayBuffer()
    assert.equal(response.status, 200)
    handle = response.headers.get('electric-handle')
    offset = response.headers.get('electric-offset')
    if (response.headers.has('electric-up-to-date')) return { handle, offset }
  }
  throw new Error('the shape never reached up-to-date')
}

async function parkedRequests() {
  const response = await fetch(`${h.baseUrl}/metrics`)
  const text = await response.text()
  const line = text.split('\n').find((l) => l.startsWith('shapeproxy_parked_requests '))
  return line ? Number(line.split(' ')[1]) : -1
}

test('SIGTERM answers parked long-polls up-to-date, then the proxy exits 0', async () => {
  await h.sql('CREATE TABLE shutdown_items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO shutdown_items VALUES (1, 'one'), (2, 'two')`)
  const { handle, offset } = await syncShape('shutdown_items')

  const live = new URLSearchParams({ table: 'shutdown_items', handle, offset, live: 'true' })
  const polls = Array.from({ length: PARKED }, async () => {
    const response = await fetch(`${h.shapeUrl}?${live}`)
    return { status: response.status, headers: response.headers, body: await response.json() }
  })
  await h.waitFor(async () => (await parkedRequests()) === PARKED, 10_000, {
    what: `${PARKED} parked requests`,
  })

  const stoppedAt = Date.now()
  const code = await h.stopProxy()
  const elapsed = Date.now() - stoppedAt
  const answers = await Promise.all(polls)

  assert.equal(code, 0, 'the proxy exits 0 on SIGTERM')
  assert.ok(elapsed < 5_000, `stopped in ${elapsed} ms (the long-poll timeout is 20 s)`)
  for (const answer of answers) {
    assert.equal(answer.status, 200)
    assert.equal(answer.headers.get('electric-offset'), offset, 'answered at the client offset')
    assert.ok(answer.headers.has('electric-up-to-date'))
    assert.deepEqual(answer.body.map((m) => m.headers?.control), ['up-to-date'])
  }

  // Back up for the next files' harness teardown.
  await h.startProxy()
})
