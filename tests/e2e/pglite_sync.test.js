// PGlite's @electric-sql/pglite-sync (syncShapeToTable keeps a table of an
// in-process PGlite equal to a shape) against the real proxy, through a
// fallback episode: a writer keeps inserting and updating while replication
// is taken away and given back; the local table ends equal to SELECT on the
// server, with no must-refetch (pglite-sync would truncate and reload).
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { PGlite } from '@electric-sql/pglite'
import { electricSync } from '@electric-sql/pglite-sync'
import { useHarness } from './harness.js'
import { Writer, assertNoServerErrors, backoffOptions, createTable, proxyArgs, recordingFetch } from './faults.js'

const h = useHarness({ name: 'pglite_sync', proxyArgs, leastPrivilege: true })
const log = []

before(async () => {
  await h.ready
  await createTable(h, 'items', { rows: 500, val: 'g * 2' })
  await h.waitForStatus('live', 30_000)
})

const canonical = (rows) => JSON.stringify(rows.map((row) => [Number(row.id), Number(row.val)]))

test('syncShapeToTable keeps a PGlite table equal to SELECT through a fallback episode', async (t) => {
  const local = await PGlite.create({ extensions: { electric: electricSync() } })
  h.onCleanup(() => local.close())
  await local.exec('CREATE TABLE items (id int4 PRIMARY KEY, val int4 NOT NULL)')
  let mustRefetch = 0
  const sync = await local.electric.syncShapeToTable({
    shape: {
      url: h.shapeUrl,
      params: { table: 'items' },
      backoffOptions,
      fetchClient: recordingFetch(log, 'pglite'),
    },
    table: 'items',
    primaryKey: ['id'],
    shapeKey: null,
    onMustRefetch: async () => {
      mustRefetch++
    },
  })
  h.onCleanup(() => sync.unsubscribe())

  const equalsSelect = async (what, timeoutMs = 30_000) => {
    let last
    await h
      .waitFor(
        async () => {
          const mine = canonical((await local.query('SELECT id, val FROM items ORDER BY id')).rows)
          const theirs = canonical((await h.sql('SELECT id, val FROM items ORDER BY id')).rows)
          last = [mine, theirs]
          return mine === theirs
        },
        timeoutMs,
        { intervalMs: 100, what },
      )
      .catch((error) => assert.equal(last?.[0], last?.[1], `${what}: ${error.message}`))
  }
  await equalsSelect('initial sync')

  const writer = new Writer(h, 'items', { firstId: 100_000 }).start()
  h.onCleanup(() => writer.stop())
  await h.breakReplication()
  const fallbackMs = await h.waitForStatus('fallback', 30_000)
  t.diagnostic(`fallback after ${fallbackMs} ms`)
  // Writes made during the outage reach the local table while it lasts.
  await h.sql('INSERT INTO items VALUES (-1, 1)')
  await h.waitFor(
    async () => (await local.query('SELECT 1 FROM items WHERE id = -1')).rows.length === 1,
    10_000,
    { intervalMs: 50, what: 'a write during the outage in the PGlite table' },
  )
  await h.restoreReplication()
  const liveMs = await h.waitForStatus('live', 60_000)
  t.diagnostic(`live again after ${liveMs} ms`)
  await h.sql('UPDATE items SET val = val + 1 WHERE id <= 10')
  await writer.pause()
  await equalsSelect('after recovery')

  assert.equal(mustRefetch, 0, 'no must-refetch')
  assert.deepEqual(
    log.filter((entry) => entry.status === 409),
    [],
    'no 409',
  )
  assertNoServerErrors(log)
})
