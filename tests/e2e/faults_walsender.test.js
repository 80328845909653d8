// Fault (a): the walsender streaming the proxy's slot is terminated with
// pg_terminate_backend ten times in a row while a writer keeps committing.
// After each kill the proxy reconnects and the status is live again within
// the grace period plus one second (a blip shorter than the grace period must
// not flap it to fallback for long); a write committed right after each kill
// reaches a live stock client within the grace period plus one poll interval
// (by the reconnected stream, or by fallback polling if the grace ran out).
// In the end the client (same handle, no must-refetch) and a fresh one equal
// SELECT, and no response was a 5xx other than a 503 with retry-after.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import {
  GRACE_MS,
  POLL_MS,
  SLACK_MS,
  STATUS_CHANGE_MS,
  StatusRecorder,
  Writer,
  assertConverged,
  latencyOf,
  openLiveShape,
  proxyArgs,
} from './faults.js'

const h = useHarness({ name: 'faults_walsender', proxyArgs })
const KILLS = 10
const log = []
let sub, writer, recorder, handle

before(async () => {
  ;({ sub, handle } = await openLiveShape(h, log))
  recorder = new StatusRecorder(h).start()
  writer = new Writer(h, 'items', { firstId: 1_000 }).start()
  h.onCleanup(() => writer.stop())
})

test(`${KILLS} walsender terminations in a row under write load`, async (t) => {
  const maxWriteMs = GRACE_MS + POLL_MS + SLACK_MS
  for (let kill = 1; kill <= KILLS; kill++) {
    const pid = await h.terminateWalsender()
    const killedAt = Date.now()
    const id = -kill
    const writeMs = await latencyOf(
      sub,
      () => h.sql('INSERT INTO items VALUES ($1, $2)', [id, kill]),
      (rows) => rows.some((row) => row.id === id),
      `row ${id} after kill ${kill}`,
    )
    await h.waitForStatus('live', 30_000)
    const sinceKill = Date.now() - killedAt
    t.diagnostic(
      `kill ${kill} (pid ${pid}): write seen after ${writeMs} ms, live ${sinceKill} ms after the kill; ` +
        `status: ${recorder.describe(killedAt) || 'no change'}`,
    )
    assert.ok(writeMs <= maxWriteMs, `kill ${kill}: write seen after ${writeMs} ms (> ${maxWriteMs})`)
    // Live again within grace + 1 s (or right after the write arrived).
    const liveWithin = Math.max(STATUS_CHANGE_MS, writeMs + 500)
    assert.ok(sinceKill <= liveWithin, `kill ${kill}: live again after ${sinceKill} ms (> ${liveWithin})`)
    // Every fallback episode since this kill began within grace + 1 s of it.
    for (const { at, status } of recorder.changesSince(killedAt)) {
      if (status === 'fallback') {
        assert.ok(at - killedAt <= STATUS_CHANGE_MS, `kill ${kill}: fallback ${at - killedAt} ms after the kill`)
      }
    }
  }
  await writer.pause()
  t.diagnostic(`writer: ${writer.committed} committed, ${writer.failed} failed`)
  t.diagnostic(`status timeline: ${recorder.describe(recorder.timeline[0].at)}`)
  await assertConverged(h, [sub], { table: 'items', log })
  assert.equal(sub.stream.shapeHandle, handle, 'same handle throughout')
})
