// Smoke test of the harness and of /v1/health (needs no /v1/shape): the
// proxy comes up against a fresh database, reports "active" once it streams,
// survives a restart with the same data dir and slot, and stops cleanly.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useHarness } from './harness.js'

const h = useHarness({ name: 'health' })

test('GET /v1/health returns 200 {"status":"active"} once streaming', async () => {
  const health = await h.waitFor(async () => {
    const result = await h.health()
    return result.status === 200 && result
  }, 10_000, { what: '/v1/health 200' })
  assert.deepEqual(health.body, { status: 'active' })
  assert.match(health.headers.get('cache-control') ?? '', /no-cache/)
})

test('SQL works on the test database and the slot exists', async () => {
  const { rows } = await h.sql('SELECT current_database() AS db')
  assert.equal(rows[0].db, h.database)
  const slots = await h.sql('SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1', [h.slot])
  assert.equal(slots.rowCount, 1, `replication slot ${h.slot} exists`)
})

test('the default listen address takes IPv6 and IPv4: ::1, 127.0.0.1 and localhost all answer', async () => {
  // Debian's /etc/hosts puts ::1 first for localhost: a client that tries only
  // the first address (Node 18's fetch) must reach the proxy either way.
  for (const host of ['[::1]', '127.0.0.1', 'localhost']) {
    const response = await fetch(`http://${host}:${h.port}/v1/health`)
    await response.arrayBuffer()
    assert.equal(response.status, 200, `http://${host}:${h.port}/v1/health`)
  }
})

test('unknown paths answer 404', async () => {
  const response = await fetch(`${h.baseUrl}/v1/no-such-route`)
  await response.arrayBuffer()
  assert.equal(response.status, 404)
})

test('restartProxy() brings the proxy back healthy on the same slot', async () => {
  await h.restartProxy()
  const health = await h.health()
  assert.equal(health.status, 200)
  assert.deepEqual(health.body, { status: 'active' })
})
