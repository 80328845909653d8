// `columns`: rows carry only the selected columns (the primary key must be
// among them), for the snapshot and for live changes alike.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { openShape } from './shapes.js'

const h = useHarness({ name: 'columns' })
const COLUMNS = ['id', 'title', 'qty']
let sub

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.sql(`CREATE TABLE items (
    id int4 PRIMARY KEY, title text NOT NULL, qty int4, secret text, big jsonb)`)
  await h.sql(`INSERT INTO items SELECT g, 't' || g, g, 's' || g, '{"x": 1}' FROM generate_series(1, 50) g`)
  sub = openShape(h, { table: 'items', columns: COLUMNS })
})

const keysOf = (row) => Object.keys(row).sort()

test('snapshot rows have only the selected columns', async () => {
  const rows = await sub.shape.rows
  assert.equal(rows.length, 50)
  for (const row of rows) assert.deepEqual(keysOf(row), [...COLUMNS].sort())
  const row7 = rows.find((r) => r.id === 7)
  assert.deepEqual(row7, { id: 7, title: 't7', qty: 7 })
})

test('live inserts and updates have only the selected columns', async () => {
  await h.sql(`INSERT INTO items VALUES (100, 'new', 5, 'hidden', '{}')`)
  await sub.waitForRows((rows) => rows.some((r) => r.id === 100), 5_000, 'row 100')
  await h.sql(`UPDATE items SET qty = 6, secret = 'still hidden' WHERE id = 100`)
  await sub.waitForRows((rows) => rows.find((r) => r.id === 100)?.qty === 6, 5_000, 'row 100 updated')
  assert.deepEqual(sub.shape.currentRows.find((r) => r.id === 100), { id: 100, title: 'new', qty: 6 })
  for (const { message } of sub.changes) {
    for (const key of Object.keys(message.value ?? {})) {
      assert.ok(COLUMNS.includes(key), `message carries column ${key}`)
    }
  }
})

test('the schema header lists only the selected columns', async () => {
  const response = await fetch(`${h.shapeUrl}?table=items&offset=-1&columns=${COLUMNS.join(',')}`)
  await response.arrayBuffer()
  assert.equal(response.status, 200)
  const schema = JSON.parse(response.headers.get('electric-schema'))
  assert.deepEqual(Object.keys(schema).sort(), [...COLUMNS].sort())
  assert.equal(schema.id.pk_index, 0)
})

test('columns without the primary key are rejected with 400', async () => {
  const response = await fetch(`${h.shapeUrl}?table=items&offset=-1&columns=title,qty`)
  const body = await response.json()
  assert.equal(response.status, 400)
  assert.ok(body.errors?.columns, `400 body names columns: ${JSON.stringify(body)}`)
})
