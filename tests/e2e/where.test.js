// A where clause with positional params: the shape holds exactly the rows the
// same WHERE selects, and rows move in and out of it as they are updated
// (an update into the clause arrives as an insert, out of it as a delete).
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const h = useHarness({ name: 'where' })
const WHERE = 'price > $1 AND category = $2'
const PARAMS = ['10', 'books']
let sub

const sortById = (rows) => [...rows].sort((a, b) => a.id - b.id)

// The rows the same WHERE selects, as the client should parse them
// (numeric stays a string).
async function selectMatching() {
  const { rows } = await h.sql(`SELECT * FROM products WHERE ${WHERE} ORDER BY id`, PARAMS)
  return rows
}

// Waits until the shape's rows equal the SELECT.
async function waitUntilRowsMatchSelect(what) {
  const expected = await selectMatching()
  const text = canonicalRows(expected)
  await sub.waitForRows((rows) => canonicalRows(rows) === text, 5_000, what)
  assert.deepStrictEqual(sortById(sub.shape.currentRows), expected)
}

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.sql(`CREATE TABLE products (
    id int4 PRIMARY KEY, name text NOT NULL, price numeric NOT NULL, category text NOT NULL)`)
  await h.sql(`
    INSERT INTO products
    SELECT g, 'p' || g, (g % 20)::numeric + 0.5, (ARRAY['books', 'toys', 'food'])[g % 3 + 1]
    FROM generate_series(1, 300) g`)
  sub = openShape(h, { table: 'products', where: WHERE, params: PARAMS })
})

test('initial rows equal SELECT ... WHERE with the params', async (t) => {
  const rows = sortById(await sub.shape.rows)
  const expected = await selectMatching()
  t.diagnostic(`${rows.length} of 300 rows match`)
  assert.ok(expected.length > 0 && expected.length < 300)
  assert.deepStrictEqual(rows, expected)
})

test('an insert that matches appears; one that does not, never does', async () => {
  await h.sql(`INSERT INTO products VALUES (1001, 'cheap', 1, 'books'), (1002, 'toy', 50, 'toys')`)
  await h.sql(`INSERT INTO products VALUES (1003, 'novel', 99.99, 'books')`)
  await waitUntilRowsMatchSelect('row 1003 to appear')
  const ids = sub.shape.currentRows.map((row) => row.id)
  assert.ok(ids.includes(1003))
  assert.ok(!ids.includes(1001) && !ids.includes(1002))
})

test('a row updated into the where clause appears', async () => {
  await h.sql(`UPDATE products SET price = 20 WHERE id = 1001`)
  await waitUntilRowsMatchSelect('row 1001 to move into the shape')
  const row = sub.shape.currentRows.find((r) => r.id === 1001)
  assert.deepEqual(row, { id: 1001, name: 'cheap', price: '20', category: 'books' })
  // It arrives as a whole row (the client saw it as an insert).
  const msg = sub.changes.findLast(({ message }) => message.value?.id === 1001)
  assert.equal(msg.message.headers.operation, 'insert')
})

test('a row updated out of the where clause disappears', async () => {
  await h.sql(`UPDATE products SET category = 'toys' WHERE id = 1003`)
  await waitUntilRowsMatchSelect('row 1003 to leave the shape')
  assert.ok(!sub.shape.currentRows.some((r) => r.id === 1003))
  const msg = sub.changes.findLast(({ message }) => message.value?.id === 1003)
  assert.equal(msg.message.headers.operation, 'delete')
})

test('updates and deletes inside the clause, and bulk moves, keep rows equal to SELECT', async () => {
  await h.sql(`UPDATE products SET name = 'renamed' WHERE id = 1001`)
  await h.sql(`DELETE FROM products WHERE id IN (SELECT id FROM products WHERE ${WHERE} ORDER BY id LIMIT 3)`, PARAMS)
  // Toggle a band of rows: some leave, some enter, in one transaction.
  await h.sql(`UPDATE products SET price = CASE WHEN price > 10 THEN price - 10 ELSE price + 10 END
               WHERE id BETWEEN 100 AND 160`)
  await waitUntilRowsMatchSelect('the bulk move')
  assert.ok(!sub.controls.includes('must-refetch'))
})
