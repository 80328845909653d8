// A client resumes from its handle and offset across a proxy restart: the
// same ShapeStream (which retries connection errors with backoff) receives
// the rows inserted while the proxy was down, with no must-refetch.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useHarness } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const h = useHarness({ name: 'resume' })
const sortById = (rows) => [...rows].sort((a, b) => a.id - b.id)

// Faster than the client's defaults (1 s initial, x2, 32 s cap, full
// jitter) so the test does not wait out a long backoff; still the stock
// retry path.
const backoffOptions = { initialDelay: 100, maxDelay: 1_000, multiplier: 1.5 }

test('the same stream resumes after a proxy restart without must-refetch', async (t) => {
  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO items SELECT g, 't' || g FROM generate_series(1, 500) g`)

  const sub = openShape(h, { table: 'items' }, { streamOptions: { backoffOptions } })
  assert.equal((await sub.shape.rows).length, 500)
  // One live change before the restart, so the offset is a log offset.
  await h.sql(`INSERT INTO items VALUES (501, 'before restart')`)
  await sub.waitForRows((rows) => rows.length === 501, 5_000, 'row 501')
  const handle = sub.stream.shapeHandle
  const offset = sub.stream.lastOffset
  t.diagnostic(`before restart: handle ${handle}, offset ${offset}`)

  await h.stopProxy()
  // Written while the proxy is down: it must catch up from its slot.
  await h.sql(`INSERT INTO items SELECT g, 'while down ' || g FROM generate_series(1001, 1100) g`)
  await h.sql(`UPDATE items SET title = 'updated while down' WHERE id <= 10`)
  await h.sql(`DELETE FROM items WHERE id BETWEEN 11 AND 20`)
  const downAt = Date.now()
  await h.startProxy()

  const { rows } = await h.sql('SELECT * FROM items ORDER BY id')
  const text = canonicalRows(rows)
  await sub.waitForRows((current) => canonicalRows(current) === text, 30_000, 'rows after restart')
  t.diagnostic(`caught up ${Date.now() - downAt} ms after the restart began`)

  assert.deepStrictEqual(sortById(sub.shape.currentRows), rows)
  assert.equal(sub.stream.shapeHandle, handle, 'the handle survives the restart')
  assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], 'no must-refetch')
  // No snapshot was re-sent: the first 500 inserts appear once.
  const inserts = sub.changes.filter(({ message }) => message.headers.operation === 'insert')
  assert.equal(inserts.length, 501 + 100)

  // And it is still live afterwards.
  await h.sql(`INSERT INTO items VALUES (2000, 'after restart')`)
  await sub.waitForRows((current) => current.some((r) => r.id === 2000), 5_000, 'row 2000')
})

test('a new client after the restart gets the same handle and rows', async () => {
  const sub = openShape(h, { table: 'items' })
  const rows = sortById(await sub.shape.rows)
  const { rows: expected } = await h.sql('SELECT * FROM items ORDER BY id')
  assert.deepStrictEqual(rows, expected)
})
