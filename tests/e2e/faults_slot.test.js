// Faults (c) and (d): the proxy's replication slot goes away while the
// proxy cannot stream (it runs as a least-privilege role whose REPLICATION
// privilege the test takes away, see h.breakReplication()).
// (c) the slot is dropped; (d) the slot is invalidated by PostgreSQL through
//     max_slot_wal_keep_size (wal_status 'lost').
// Each time: the status goes to fallback within the grace period plus one
// second; writes made during the outage reach a live stock client within one
// poll interval; once replication is allowed again the proxy creates a new
// slot, re-queries its shapes and is live within the grace period plus one
// second; the client keeps its handle, never sees must-refetch, and it and a
// fresh client equal SELECT; no 5xx other than a 503 with retry-after.
// A last test drops the slot while the proxy process is stopped.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import {
  OUTAGE_WRITE_MS,
  STATUS_CHANGE_MS,
  assertConverged,
  latencyOf,
  openLiveShape,
  proxyArgs,
} from './faults.js'

const h = useHarness({ name: 'faults_slot', leastPrivilege: true, proxyArgs })
const log = []
let sub, handle
const WHERE = 'val >= 0'

before(async () => {
  ;({ sub, handle } = await openLiveShape(h, log, { where: WHERE, val: 'g % 10' }))
})

// Takes replication away and checks the switch to fallback.
async function outage(t) {
  await h.breakReplication()
  const ms = await h.waitForStatus('fallback', 30_000)
  t.diagnostic(`fallback ${ms} ms after the walsender was gone`)
  assert.ok(ms <= STATUS_CHANGE_MS, `fallback after ${ms} ms (> ${STATUS_CHANGE_MS})`)
}

// Writes during the outage (an insert, an update, a delete and a row moving
// out of the where clause), each seen by the live client within one poll
// interval.
async function writesDuringOutage(t, base) {
  const steps = [
    [`INSERT INTO items VALUES (${base}, 1)`, (rows) => rows.some((row) => row.id === base)],
    [`UPDATE items SET val = 99 WHERE id = ${base}`, (rows) => rows.some((row) => row.id === base && row.val === 99)],
    [`DELETE FROM items WHERE id = ${base}`, (rows) => !rows.some((row) => row.id === base)],
    [`UPDATE items SET val = -1 WHERE id = ${base + 1}`, (rows) => !rows.some((row) => row.id === base + 1)],
  ]
  await h.sql(`INSERT INTO items VALUES (${base + 1}, 5)`)
  await sub.waitForRows((rows) => rows.some((row) => row.id === base + 1), 10_000, `row ${base + 1}`)
  for (const [statement, predicate] of steps) {
    const ms = await latencyOf(sub, () => h.sql(statement), predicate, statement)
    t.diagnostic(`during the outage: "${statement}" seen after ${ms} ms`)
    assert.ok(ms <= OUTAGE_WRITE_MS, `"${statement}" seen after ${ms} ms (> ${OUTAGE_WRITE_MS})`)
  }
}

async function recovery(t, base) {
  await h.restoreReplication()
  const ms = await h.waitForStatus('live', 30_000)
  t.diagnostic(`live ${ms} ms after replication was allowed again`)
  assert.ok(ms <= STATUS_CHANGE_MS, `live after ${ms} ms (> ${STATUS_CHANGE_MS})`)
  const slot = await h.slotInfo()
  assert.ok(slot && slot.active_pid, 'the proxy streams from a (new) slot')
  assert.ok(['reserved', 'extended'].includes(slot.wal_status), `the new slot is usable (${slot.wal_status})`)
  const live = await latencyOf(
    sub,
    () => h.sql(`INSERT INTO items VALUES (${base + 2}, 3)`),
    (rows) => rows.some((row) => row.id === base + 2),
    'a write after recovery',
  )
  t.diagnostic(`after recovery a write was seen after ${live} ms`)
  await assertConverged(h, [sub], { table: 'items', where: WHERE, log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle')
}

test('(c) the slot dropped while the proxy is disconnected', async (t) => {
  await outage(t)
  await h.sql('SELECT pg_drop_replication_slot($1)', [h.slot])
  await writesDuringOutage(t, 1_000)
  const { body } = await h.status()
  assert.equal(body.replication.wal_status, 'missing')
  await recovery(t, 1_000)
})

test('(d) the slot invalidated through max_slot_wal_keep_size', async (t) => {
  await outage(t)
  await h.sql(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
  await h.sql('SELECT pg_reload_conf()')
  t.after(async () => {
    await h.sql('ALTER SYSTEM RESET max_slot_wal_keep_size')
    await h.sql('SELECT pg_reload_conf()')
  })
  // Push the slot's WAL out: write, switch segments, checkpoint, until
  // PostgreSQL invalidates it.
  let rounds = 0
  await h.waitFor(
    async () => {
      rounds++
      await h.sql('INSERT INTO items VALUES (-$1::int, -1) ON CONFLICT DO NOTHING', [rounds])
      await h.sql('SELECT pg_switch_wal()')
      await h.sql('CHECKPOINT')
      return (await h.slotInfo()).wal_status === 'lost'
    },
    30_000,
    { intervalMs: 0, what: "the slot's wal_status to be 'lost'" },
  )
  t.diagnostic(`slot invalidated after ${rounds} WAL switches + checkpoints`)
  await h.waitFor(async () => (await h.status()).body.replication.wal_status === 'lost', 5_000, {
    what: "/v1/status to report wal_status 'lost'",
  })
  await writesDuringOutage(t, 2_000)
  await recovery(t, 2_000)
})

test('the slot dropped while the proxy process is stopped', async (t) => {
  assert.equal(await h.stopProxy(), 0)
  // The walsender ends a moment after the proxy: until then the slot is active.
  await h.waitFor(async () => !(await h.slotInfo())?.active_pid, 10_000, {
    intervalMs: 20,
    what: 'the slot to be released by the stopped proxy',
  })
  await h.sql('SELECT pg_drop_replication_slot($1)', [h.slot])
  await h.sql('INSERT INTO items VALUES (3000, 4)')
  await h.sql('UPDATE items SET val = 8 WHERE id = 1')
  await h.sql('DELETE FROM items WHERE id = 2')
  await h.startProxy()
  const ms = await h.waitForStatus('live', 30_000)
  t.diagnostic(`live ${ms} ms after the proxy was healthy`)
  await assertConverged(h, [sub], { table: 'items', where: WHERE, log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle')
})
