// A fallback episode the application sleeps through: the proxy's role loses
// its replication privilege (the proxy goes to fallback), rows are written
// during the outage, the privilege comes back (the proxy returns to live),
// more rows are written. The application only reads `client.shape`; it ends
// up with every row, the status events go live -> fallback -> live, and the
// stream kept its handle (no must-refetch).
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { isControlMessage } from '@electric-sql/client'
import { canonical, freePort, openClient, useHarness } from './support.js'

const h = useHarness({
  name: 'ts_fallback',
  leastPrivilege: true,
  proxyArgs: ['--fallback-grace-ms', '500', '--fallback-poll-interval-ms', '200', '--status-max-age-s', '1'],
})

const ids = (rows) => new Set(rows.map((row) => Number(row.id)))
const hasIds = (rows, from, to) => {
  const present = ids(rows)
  for (let id = from; id <= to; id++) if (!present.has(id)) return false
  return true
}

before(async () => {
  await h.ready
  // The episode starts from live. (With a 500 ms grace, a fresh proxy can pass
  // through fallback at start-up: its first probe sees the slot still missing.)
  await h.waitForStatus('live', 15_000)
  // Created by the proxy's own role: it must own the tables it publishes.
  await h.appSql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.appSql(`INSERT INTO items SELECT g, 'seed ' || g FROM generate_series(1, 20) g`)
})

test('an application that does nothing rides through fallback and ends up current', async (t) => {
  const sub = openClient(h, { table: 'items' }, { statusPollIntervalMs: 500 })
  // A second application whose status URL answers nothing (say, not routed
  // through its gateway): response headers alone must carry it through.
  const blind = openClient(h, { table: 'items' }, {
    statusUrl: `http://127.0.0.1:${await freePort()}/v1/status`, statusPollIntervalMs: 500,
  })
  const controls = []
  sub.client.stream.subscribe((messages) => {
    for (const message of messages) if (isControlMessage(message)) controls.push(message.headers.control)
  })
  assert.equal((await sub.client.shape.rows).length, 20)
  assert.equal((await blind.client.shape.rows).length, 20)
  await sub.client.waitForStatus('live', { timeoutMs: 10_000 })
  await blind.client.waitForStatus('live', { timeoutMs: 10_000 })
  const handle = sub.client.stream.shapeHandle

  // The outage: writes made during it arrive through fallback serving.
  const outageAt = Date.now()
  await h.breakReplication()
  await h.sql(`INSERT INTO items SELECT g, 'outage ' || g FROM generate_series(21, 30) g`)
  await h.sql(`UPDATE items SET title = 'updated in outage' WHERE id = 1`)
  await h.sql(`DELETE FROM items WHERE id = 2`)
  await sub.client.waitForStatus('fallback', { timeoutMs: 15_000 })
  t.diagnostic(`fallback noticed ${Date.now() - outageAt} ms after the outage began`)
  await sub.waitForRows(
    (rows) => hasIds(rows, 21, 30) && !ids(rows).has(2) &&
      rows.find((row) => row.id === 1)?.title === 'updated in outage',
    15_000, 'the rows written during the outage')
  assert.equal(sub.client.status, 'fallback', 'outage rows arrived while in fallback')
  assert.equal(sub.client.isFallback, true)
  // While live it did not poll: a flagged response told it (directly, or
  // through one status check when the last 'live' answer was very recent).
  const [liveEvent, fallbackEvent] = sub.events
  const pollsWhileLive = sub.statusRequests.filter((r) => r.at > liveEvent.at && r.at <= fallbackEvent.at)
  assert.ok(pollsWhileLive.length <= 1, `${pollsWhileLive.length} status requests while live`)
  t.diagnostic(`fallback learnt from the ${fallbackEvent.source}`)

  // Recovery: back to live without the application doing anything.
  const restoredAt = Date.now()
  await h.restoreReplication()
  await sub.client.waitForStatus('live', { timeoutMs: 30_000 })
  t.diagnostic(`live again ${Date.now() - restoredAt} ms after the privilege came back`)
  await h.sql(`INSERT INTO items SELECT g, 'after ' || g FROM generate_series(31, 40) g`)
  await h.sql(`UPDATE items SET title = 'updated after' WHERE id = 3`)
  await sub.waitForRows(
    (rows) => hasIds(rows, 31, 40) && rows.find((row) => row.id === 3)?.title === 'updated after',
    10_000, 'the rows written after recovery')

  const { rows: expected } = await h.sql('SELECT id, title FROM items')
  assert.equal(canonical(sub.client.shape.currentRows), canonical(expected))
  assert.deepEqual(sub.statuses(), ['live', 'fallback', 'live'])
  assert.equal(sub.events[2].source, 'status-endpoint')
  assert.equal(sub.client.stream.shapeHandle, handle, 'same shape handle throughout')
  assert.ok(!controls.includes('must-refetch'), `controls: ${controls.join(',')}`)
  const unexpected = sub.errors.filter((e) => !e.willRetry || e.source === 'refresh')
  assert.deepEqual(unexpected, [])

  // The blind client: the same rows and the same story, told by headers.
  await blind.waitForRows((rows) => canonical(rows) === canonical(expected), 10_000, 'all rows (blind client)')
  assert.deepEqual(blind.statuses(), ['live', 'fallback', 'live'])
  assert.deepEqual([...new Set(blind.events.map((e) => e.source))], ['response-header'])
  assert.ok(blind.errors.length > 0 && blind.errors.every((e) => e.source === 'status-endpoint' && e.willRetry))
  // Status polls were never closer than the proxy's max-age, although the
  // application asked for one every 500 ms.
  const polls = sub.statusRequests
  assert.ok(polls.length >= 3, `${polls.length} status requests`)
  for (let i = 1; i < polls.length; i++) {
    const gap = polls[i].at - polls[i - 1].at
    assert.ok(gap >= polls[i - 1].maxAgeMs - 5, `status requests ${gap} ms apart (max-age ${polls[i - 1].maxAgeMs} ms)`)
  }
})
