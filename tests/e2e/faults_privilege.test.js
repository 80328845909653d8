// Fault (e): the replication privilege is revoked from the proxy's role
// (a least-privilege role: LOGIN REPLICATION, owner of its table, CREATE on
// the database) under a write load, and its walsender terminated. The status
// goes to fallback within the grace period plus one second; a write made
// during the outage reaches a live stock client within one poll interval;
// once the privilege is back the status returns to live and the client keeps
// its handle: rows equal SELECT, no must-refetch, no 5xx but 503.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import {
  OUTAGE_WRITE_MS,
  STATUS_CHANGE_MS,
  Writer,
  assertConverged,
  createTable,
  latencyOf,
  openLiveShape,
  openRecordedShape,
  proxyArgs,
} from './faults.js'

const h = useHarness({ name: 'faults_privilege', leastPrivilege: true, proxyArgs })
const log = []
let sub, writer, handle

before(async () => {
  ;({ sub, handle } = await openLiveShape(h, log))
  writer = new Writer(h, 'items', { firstId: 1_000 }).start()
  h.onCleanup(() => writer.stop())
})

test('revoking REPLICATION moves the status to fallback within grace + 1 s', async (t) => {
  await h.breakReplication()
  const ms = await h.waitForStatus('fallback', 30_000)
  t.diagnostic(`fallback ${ms} ms after the walsender was gone`)
  assert.ok(ms <= STATUS_CHANGE_MS, `status changed after ${ms} ms (> ${STATUS_CHANGE_MS})`)
  const { body, headers } = await h.status()
  assert.equal(body.replication_available, false)
  assert.ok(headers.get('etag'))
})

test('a write during the outage reaches the live client within one poll interval', async (t) => {
  const ms = await latencyOf(
    sub,
    () => h.sql('INSERT INTO items VALUES (-1, 42)'),
    (rows) => rows.some((row) => row.id === -1 && row.val === 42),
    'row -1 during the outage',
  )
  t.diagnostic(`outage write seen after ${ms} ms`)
  assert.ok(ms <= OUTAGE_WRITE_MS, `seen after ${ms} ms (> ${OUTAGE_WRITE_MS})`)
  assert.ok(
    log.some(({ fallback }) => fallback),
    'responses during the outage carry electric-fallback-mode: true',
  )
  // Still in fallback: the privilege is still revoked.
  assert.equal((await h.status()).body.status, 'fallback')
})

// rfc/0005: a new shape's first chunk is sent while its fallback query's
// rows arrive (HTTP/1.1 chunks); the stock client reads it like any other.
test('a new 20,000-row shape during the outage streams its first chunk and equals SELECT', async (t) => {
  await createTable(h, 'wide', { rows: 20_000, val: 'g % 1000' })
  const raw = await fetch(`${h.baseUrl}/v1/shape?table=wide&offset=-1`)
  assert.equal(raw.status, 200)
  assert.equal(raw.headers.get('electric-fallback-mode'), 'true')
  assert.equal(raw.headers.get('transfer-encoding'), 'chunked', 'the first chunk came as it was made')
  assert.equal(raw.headers.get('electric-offset'), '0_0')
  const messages = await raw.json()
  assert.equal(messages.filter((m) => m.headers.operation === 'insert').length, 20_000)
  assert.equal(messages.at(-1).headers.control, 'snapshot-end')
  // The stock client creating a shape of its own the same way.
  const sub = openRecordedShape(h, { table: 'wide', where: 'val < 500' }, log, 'wide client')
  try {
    await assertConverged(h, [sub], { table: 'wide', where: 'val < 500', log })
  } finally {
    sub.close()
  }
  t.diagnostic(`wide client: ${log.filter(({ label }) => label === 'wide client').length} responses`)
  assert.equal((await h.status()).body.status, 'fallback')
})

test('restoring REPLICATION returns to live within grace + 1 s, without refetch', async (t) => {
  await h.restoreReplication()
  const ms = await h.waitForStatus('live', 30_000)
  t.diagnostic(`live ${ms} ms after the privilege was restored`)
  assert.ok(ms <= STATUS_CHANGE_MS, `status changed after ${ms} ms (> ${STATUS_CHANGE_MS})`)
  const live = await latencyOf(
    sub,
    () => h.sql('INSERT INTO items VALUES (-2, 7)'),
    (rows) => rows.some((row) => row.id === -2),
    'row -2 after recovery',
  )
  t.diagnostic(`live write seen after ${live} ms`)
  await writer.stop()
  t.diagnostic(`writer: ${writer.committed} committed, ${writer.failed} failed`)
  await assertConverged(h, [sub], { table: 'items', log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle throughout')
})
