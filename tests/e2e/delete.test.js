// DELETE /v1/shape (enabled with --allow-delete): a deleted shape answers the
// client's next request with 409 must-refetch; the client restarts from
// offset -1 on a new handle and ends up with the correct rows.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const h = useHarness({ name: 'delete', proxyArgs: ['--allow-delete'] })
const sortById = (rows) => [...rows].sort((a, b) => a.id - b.id)

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO items SELECT g, 't' || g FROM generate_series(1, 200) g`)
})

test('a deleted shape resyncs after 409 with correct rows', async (t) => {
  const sub = openShape(h, { table: 'items' })
  assert.equal((await sub.shape.rows).length, 200)
  const oldHandle = sub.stream.shapeHandle
  assert.ok(oldHandle)

  const response = await fetch(`${h.shapeUrl}?table=items&handle=${encodeURIComponent(oldHandle)}`, {
    method: 'DELETE',
  })
  await response.arrayBuffer()
  assert.equal(response.status, 202, 'DELETE /v1/shape answers 202')

  // Changes after the delete: the client must see them on its new shape.
  await h.sql(`INSERT INTO items VALUES (1001, 'after delete')`)
  await h.sql(`UPDATE items SET title = 'changed' WHERE id = 1`)
  await h.sql(`DELETE FROM items WHERE id = 2`)

  await sub.waitForMessage((m) => m.headers?.control === 'must-refetch', 10_000, 'must-refetch')
  const { rows } = await h.sql('SELECT * FROM items ORDER BY id')
  const text = canonicalRows(rows)
  await sub.waitForRows((current) => canonicalRows(current) === text, 10_000, 'rows after resync')
  assert.deepStrictEqual(sortById(sub.shape.currentRows), rows)
  assert.notEqual(sub.stream.shapeHandle, oldHandle, 'a new handle after the resync')
  t.diagnostic(`handle ${oldHandle} -> ${sub.stream.shapeHandle}`)
})

test('the old handle answers 409 must-refetch (never its own handle back)', async () => {
  const sub = openShape(h, { table: 'items' })
  await sub.shape.rows
  const oldHandle = sub.stream.shapeHandle
  const deleted = await fetch(`${h.shapeUrl}?table=items&handle=${encodeURIComponent(oldHandle)}`, { method: 'DELETE' })
  await deleted.arrayBuffer()
  assert.equal(deleted.status, 202)
  const response = await fetch(`${h.shapeUrl}?table=items&handle=${encodeURIComponent(oldHandle)}&offset=0_0`)
  const body = await response.json()
  assert.equal(response.status, 409)
  assert.deepEqual(body, [{ headers: { control: 'must-refetch' } }])
  // A new handle is sent when one is known; a handle is never reused.
  assert.notEqual(response.headers.get('electric-handle'), oldHandle)
})
