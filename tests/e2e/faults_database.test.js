// Faults (b) and (f): PostgreSQL itself goes away under a write load.
// (b) PostgreSQL restarted (stopped and at once started again): the proxy
//     reconnects; live again within the grace period plus one second of the
//     restart, a write after it reaches a live client promptly.
// (f) the database stopped for longer, then started: the status goes to
//     fallback within the grace period plus one second; the shape the proxy
//     holds is still served (flagged), a new shape gets 503 with retry-after;
//     after the start a write reaches the live client within one poll
//     interval (fallback polling or the stream, whichever is first), and the
//     status is live within the grace period plus one second.
// Each ends with the stock client (same handle, no must-refetch) and a fresh
// one equal to SELECT, and no 5xx other than a 503 with retry-after.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import {
  OUTAGE_WRITE_MS,
  STATUS_CHANGE_MS,
  StatusRecorder,
  Writer,
  assertConverged,
  latencyOf,
  openLiveShape,
  proxyArgs,
  sleep,
} from './faults.js'

const h = useHarness({ name: 'faults_database', proxyArgs })
const log = []
let sub, recorder, handle

before(async () => {
  ;({ sub, handle } = await openLiveShape(h, log))
  recorder = new StatusRecorder(h).start()
})

// Starts PostgreSQL, inserts row `id` at once and waits for the live client
// to see it and for the status to be live: {startedAt, writeMs (from the
// commit to the client), liveMs (from the start to live)}.
async function startAndWrite(id, when) {
  await h.startPostgres()
  const startedAt = Date.now()
  const writeMs = await latencyOf(
    sub,
    () => h.sql('INSERT INTO items VALUES ($1, $2)', [id, -id]),
    (rows) => rows.some((row) => row.id === id),
    `row ${id} ${when}`,
  )
  await h.waitForStatus('live', 30_000)
  return { startedAt, writeMs, liveMs: Date.now() - startedAt }
}

test('(b) PostgreSQL restarted under write load', async (t) => {
  const writer = new Writer(h, 'items', { firstId: 1_000 }).start()
  h.onCleanup(() => writer.stop())
  await sleep(300)
  const stoppedAt = Date.now()
  await h.stopPostgres()
  const { startedAt, writeMs, liveMs } = await startAndWrite(-1, 'after the restart')
  t.diagnostic(
    `restart took ${startedAt - stoppedAt} ms; write seen after ${writeMs} ms; live ${liveMs} ms after the start; ` +
      `status: ${recorder.describe(stoppedAt) || 'no change'}`,
  )
  assert.ok(writeMs <= STATUS_CHANGE_MS, `write seen after ${writeMs} ms (> ${STATUS_CHANGE_MS})`)
  assert.ok(liveMs <= STATUS_CHANGE_MS, `live again ${liveMs} ms after the start (> ${STATUS_CHANGE_MS})`)
  await writer.stop()
  t.diagnostic(`writer: ${writer.committed} committed, ${writer.failed} failed`)
  await assertConverged(h, [sub], { table: 'items', log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle')
})

test('(f) database stopped, then started', async (t) => {
  const stoppedAt = Date.now()
  await h.stopPostgres()
  const fallbackMs = await h.waitForStatus('fallback', 30_000)
  t.diagnostic(`fallback ${fallbackMs} ms after the stop`)
  assert.ok(fallbackMs <= STATUS_CHANGE_MS, `fallback after ${fallbackMs} ms (> ${STATUS_CHANGE_MS})`)
  const { body } = await h.status()
  assert.equal(body.connection, 'unreachable')
  assert.equal(body.replication_available, false)
  // README "Health checks": serving held shapes with the database unreachable is
  // 200 active (keep the instance in rotation), not 503.
  const health = await h.health()
  assert.equal(health.status, 200)
  assert.deepEqual(health.body, { status: 'active' })

  // The shape held is served (flagged); a new one is refused with retry-after.
  const held = await fetch(`${h.shapeUrl}?table=items&offset=-1`, { signal: AbortSignal.timeout(5_000) })
  const heldRows = await held.json()
  assert.equal(held.status, 200)
  assert.equal(held.headers.get('electric-handle'), handle)
  assert.equal(held.headers.get('electric-fallback-mode'), 'true')
  assert.ok(heldRows.length > 0)
  const fresh = await fetch(`${h.shapeUrl}?table=items&offset=-1&where=${encodeURIComponent('val > 0')}`, {
    signal: AbortSignal.timeout(5_000),
  })
  await fresh.text()
  assert.equal(fresh.status, 503)
  assert.ok(Number(fresh.headers.get('retry-after')) > 0, 'retry-after on the 503')
  await sleep(1_000) // an outage of a few seconds

  const { startedAt, writeMs, liveMs } = await startAndWrite(-2, 'after the start')
  t.diagnostic(
    `outage ${startedAt - stoppedAt} ms; write seen after ${writeMs} ms; live ${liveMs} ms after the start; ` +
      `status: ${recorder.describe(stoppedAt)}`,
  )
  assert.ok(writeMs <= OUTAGE_WRITE_MS, `write seen after ${writeMs} ms (> ${OUTAGE_WRITE_MS})`)
  assert.ok(liveMs <= STATUS_CHANGE_MS, `live again ${liveMs} ms after the start (> ${STATUS_CHANGE_MS})`)
  await assertConverged(h, [sub], { table: 'items', log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle')
})
