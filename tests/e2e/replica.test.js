// `replica`: with `full`, update messages carry the whole row (and
// old_value); with the default, only the primary key and changed columns.
// Checked on the raw messages a ShapeStream subscriber receives.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { openShape } from './shapes.js'

const h = useHarness({ name: 'replica' })
const ALL_COLUMNS = ['id', 'title', 'qty', 'note', 'flag'].sort()

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.sql(`CREATE TABLE items (
    id int4 PRIMARY KEY, title text NOT NULL, qty int4 NOT NULL, note text, flag bool NOT NULL)`)
  await h.sql(`INSERT INTO items SELECT g, 't' || g, g, 'n' || g, true FROM generate_series(1, 20) g`)
})

// Opens a raw stream (no Shape), waits for its first up-to-date, updates row
// `id`, and resolves with the update message.
async function updateMessage(replica, id) {
  const sub = openShape(h, { table: 'items', ...(replica ? { replica } : {}) }, { withShape: false })
  await sub.waitForMessage((m) => m.headers?.control === 'up-to-date', 10_000, 'up-to-date')
  await h.sql(`UPDATE items SET qty = qty + 100 WHERE id = $1`, [id])
  const isUpdate = (m) => m.headers?.operation === 'update' && m.value?.id === id
  await sub.waitForMessage(isUpdate, 5_000, `update of row ${id}`)
  const { message } = sub.messages.find(({ message }) => isUpdate(message))
  sub.close()
  return message
}

test("replica 'full': update messages carry full rows and old_value", async (t) => {
  const message = await updateMessage('full', 3)
  t.diagnostic(JSON.stringify(message))
  assert.deepEqual(Object.keys(message.value).sort(), ALL_COLUMNS)
  assert.deepEqual(message.value, { id: 3, title: 't3', qty: 103, note: 'n3', flag: true })
  // old_value holds the previous values of the changed columns.
  assert.equal(message.old_value?.qty, 3, `old_value: ${JSON.stringify(message.old_value)}`)
})

test("replica 'full': delete messages carry the full row", async () => {
  const sub = openShape(h, { table: 'items', replica: 'full' }, { withShape: false })
  await sub.waitForMessage((m) => m.headers?.control === 'up-to-date', 10_000, 'up-to-date')
  await h.sql('DELETE FROM items WHERE id = 5')
  const isDelete = (m) => m.headers?.operation === 'delete' && m.value?.id === 5
  await sub.waitForMessage(isDelete, 5_000, 'delete of row 5')
  const { message } = sub.messages.find(({ message }) => isDelete(message))
  assert.deepEqual(Object.keys(message.value).sort(), ALL_COLUMNS)
})

test('replica default: update messages carry the key and changed columns only', async (t) => {
  const message = await updateMessage(undefined, 4)
  t.diagnostic(JSON.stringify(message))
  assert.deepEqual(message.value, { id: 4, qty: 104 })
})
