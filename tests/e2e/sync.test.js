// Initial sync of a 10,000-row table: the stock client's shape.rows equals a
// SELECT of the table, value for value, after the client's own parsing by
// electric-schema (int8 -> BigInt, int4/float8 -> number, bool, jsonb ->
// object, text[] -> array, numeric and text stay strings, NULL -> null).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useHarness } from './harness.js'
import { openShape } from './shapes.js'

const h = useHarness({ name: 'sync' })
const ROWS = 10_000

// The SELECT, converted to what the client should produce for each type.
async function expectedRows() {
  const { rows } = await h.sql('SELECT * FROM items ORDER BY id')
  return rows.map((row) => ({ ...row, id: BigInt(row.id) }))
}

test(`sync of a ${ROWS}-row table matches SELECT`, async (t) => {
  await h.sql(`
    CREATE TABLE items (
      id bigint PRIMARY KEY,
      title text NOT NULL,
      qty int4,
      price float8,
      active bool NOT NULL,
      meta jsonb,
      amount numeric(12, 2),
      tags text[],
      note text
    )`)
  // Values that exercise escaping: quotes, backslashes, non-ASCII, commas in arrays.
  await h.sql(`
    INSERT INTO items
    SELECT g, 'item ' || g, g % 100, g * 1.5, g % 2 = 0,
           jsonb_build_object('n', g, 's', 'x"' || g, 'nested', jsonb_build_array(g, null, true)),
           (g * 3.25)::numeric(12, 2),
           ARRAY['a' || g, 'b,c', 'quo"te'],
           CASE WHEN g % 3 = 0 THEN NULL ELSE 'note \\ "' || g || '" ü€' END
    FROM generate_series(1, $1::int) AS g`, [ROWS])

  const started = Date.now()
  const sub = openShape(h, { table: 'items' })
  const rows = await sub.shape.rows
  const elapsed = Date.now() - started
  t.diagnostic(`synced ${rows.length} rows in ${elapsed} ms (${sub.messages.length} messages)`)

  assert.equal(rows.length, ROWS)
  const sorted = [...rows].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  assert.equal(typeof sorted[0].id, 'bigint', 'int8 is parsed as BigInt')
  const expected = await expectedRows()
  // Compare the first differing row alone first: a readable failure.
  for (let i = 0; i < ROWS; i++) {
    assert.deepStrictEqual(sorted[i], expected[i], `row ${i + 1} differs`)
  }

  // Every snapshot message is an insert of public.items.
  const operations = new Set(sub.changes.map(({ message }) => message.headers.operation))
  assert.deepEqual([...operations], ['insert'])
  assert.ok(sub.controls.includes('up-to-date'))
  assert.ok(!sub.controls.includes('must-refetch'))
})

test('a second client gets the same rows and the same handle', async () => {
  const sub = openShape(h, { table: 'items' })
  const rows = await sub.shape.rows
  assert.equal(rows.length, ROWS)
  const first = openShape(h, { table: 'items' })
  await first.shape.rows
  assert.equal(sub.stream.shapeHandle, first.stream.shapeHandle)
})
