// Live changes: an insert, an update and a delete each reach the stock
// client's Shape within 1 s of COMMIT returning. Latency is measured from the
// moment the autocommitted statement returns to the moment the client hands
// the change to its subscribers.
// The proxy runs as a least-privilege role (LOGIN REPLICATION, CREATE on the
// database, owner of the table), not as superuser.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { openShape } from './shapes.js'

const h = useHarness({ name: 'live', leastPrivilege: true })
const MAX_LATENCY_MS = 1_000
let sub

// Runs `statement`, then resolves with ms from its return until `predicate`
// holds on the shape's rows (0 if the change arrived first).
async function latencyOf(statement, params, predicate, what) {
  const seen = sub.waitForRows(predicate, 10_000, what)
  await h.sql(statement, params)
  const committedAt = Date.now()
  return Math.max(0, (await seen) - committedAt)
}

const byId = (rows, id) => rows.find((row) => row.id === id)

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.appSql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL, n int8 NOT NULL)')
  await h.appSql(`INSERT INTO items SELECT g, 'seed ' || g, g FROM generate_series(1, 100) g`)
  sub = openShape(h, { table: 'items' })
  const rows = await sub.shape.rows
  assert.equal(rows.length, 100)
})

test('insert is seen within 1 s', async (t) => {
  const ms = await latencyOf(
    `INSERT INTO items VALUES (1001, 'new', 42)`, [],
    (rows) => byId(rows, 1001)?.title === 'new', 'row 1001 inserted')
  t.diagnostic(`insert latency ${ms} ms`)
  assert.deepEqual(byId(sub.shape.currentRows, 1001), { id: 1001, title: 'new', n: 42n })
  assert.ok(ms < MAX_LATENCY_MS, `insert took ${ms} ms`)
  const insert = sub.changes.find(({ message }) => message.value?.id === 1001)
  assert.equal(insert.message.headers.operation, 'insert')
})

test('update is seen within 1 s', async (t) => {
  const ms = await latencyOf(
    `UPDATE items SET title = $1 WHERE id = 1001`, ['changed'],
    (rows) => byId(rows, 1001)?.title === 'changed', 'row 1001 updated')
  t.diagnostic(`update latency ${ms} ms`)
  // The Shape merges the update into the row: untouched columns stay.
  assert.deepEqual(byId(sub.shape.currentRows, 1001), { id: 1001, title: 'changed', n: 42n })
  assert.ok(ms < MAX_LATENCY_MS, `update took ${ms} ms`)
  const update = sub.changes.find(({ message }) => message.headers.operation === 'update')
  assert.ok(update, 'an update message was received')
})

test('delete is seen within 1 s', async (t) => {
  const ms = await latencyOf(
    `DELETE FROM items WHERE id = 1001`, [],
    (rows) => !byId(rows, 1001), 'row 1001 deleted')
  t.diagnostic(`delete latency ${ms} ms`)
  assert.ok(ms < MAX_LATENCY_MS, `delete took ${ms} ms`)
  assert.equal(sub.shape.currentRows.length, 100)
  const del = sub.changes.find(({ message }) => message.headers.operation === 'delete')
  assert.ok(del, 'a delete message was received')
})

test('a multi-statement transaction arrives whole, within 1 s', async (t) => {
  const seen = sub.waitForRows(
    (rows) => byId(rows, 2001) && byId(rows, 2002) && !byId(rows, 1) && byId(rows, 2)?.title === 'tx',
    10_000, 'the transaction')
  const client = await h.pool.connect()
  let committedAt
  try {
    await client.query('BEGIN')
    await client.query(`INSERT INTO items VALUES (2001, 'a', 1), (2002, 'b', 2)`)
    await client.query(`UPDATE items SET title = 'tx' WHERE id = 2`)
    await client.query(`DELETE FROM items WHERE id = 1`)
    await client.query('COMMIT')
    committedAt = Date.now()
  } finally {
    client.release()
  }
  const ms = Math.max(0, (await seen) - committedAt)
  t.diagnostic(`transaction latency ${ms} ms`)
  assert.ok(ms < MAX_LATENCY_MS, `transaction took ${ms} ms`)
  // The four changes came in one batch (the client publishes per response).
  const txChanges = sub.changes.filter(({ message }) =>
    [2001, 2002].includes(message.value?.id) || (message.value?.id === 2 && message.headers.operation === 'update'))
  assert.equal(new Set(txChanges.map(({ at }) => at)).size, 1, 'one delivery for the whole transaction')
})

test('rows equal SELECT after the live changes', async () => {
  const { rows } = await h.sql('SELECT id, title, n FROM items ORDER BY id')
  const expected = rows.map((row) => ({ ...row, n: BigInt(row.n) }))
  const actual = [...sub.shape.currentRows].sort((a, b) => a.id - b.id)
  assert.deepStrictEqual(actual, expected)
  assert.ok(!sub.controls.includes('must-refetch'))
})

test('the proxy streams as the least-privilege role, not as superuser', async () => {
  const { rows } = await h.sql(
    `SELECT r.rolsuper, r.rolreplication, a.usename
       FROM pg_replication_slots s
       JOIN pg_stat_activity a ON a.pid = s.active_pid
       JOIN pg_roles r ON r.rolname = a.usename
      WHERE s.slot_name = $1`,
    [h.slot],
  )
  assert.deepEqual(rows, [{ rolsuper: false, rolreplication: true, usename: h.appRole }])
  const owner = await h.sql(`SELECT tableowner FROM pg_tables WHERE tablename = 'items'`)
  assert.equal(owner.rows[0].tableowner, h.appRole)
})
