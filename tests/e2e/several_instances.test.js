// Several instances (issue 13, rfc/0003): three proxies on one database and
// one data directory, each on its own port, behind haproxy round-robin with
// no stickiness. 24 stock clients (three shapes, one of them created only
// through the balancer after the instances started) and a writer run while
// the leader is SIGKILLed and restarted, E2E_SEVERAL_KILLS times (default 3).
// Checked:
//   - exactly one instance leads; the others say follower and name it
//     (/v1/status), and the same shape has the same handle on all three;
//   - after each kill another instance takes the lock and the slot (its
//     walsender streams) within the fallback grace period + 3 s;
//   - at most one walsender exists at any sample (every 50 ms) of the run;
//   - every client ends equal to SELECT, saw no 409 / must-refetch, no
//     operation out of order (no duplicates), and no 5xx but 503 with
//     retry-after.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { WalsenderSampler, leaderOf, slotPid, startBalancer, startInstance, statusOf, waitForOneLeader, waitForTakeover } from './cluster.js'
import { GRACE_MS, SLACK_MS, Writer, assertOperationsConsistent, backoffOptions, proxyArgs, recordingFetch, sleep } from './faults.js'
import { useHarness, waitFor } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const KILLS = Number(process.env.E2E_SEVERAL_KILLS ?? 3)
const CLIENTS_PER_SHAPE = 8
// The contract (grace + 3 s), plus the slack every fault test allows a loaded
// or sanitizer-built run (faults.js).
const TAKEOVER_MS = GRACE_MS + 3_000 + SLACK_MS
const CONVERGE_TIMEOUT_MS = 60_000

const h = useHarness({ name: 'several_instances', proxyArgs: [...proxyArgs, '--instance-id', 'i1'], maxLogLines: 20_000 })

let instances // [{id, port, proxy}]
let balancer // {url, stop()}
const responses = [] // every response a client got: {label, status, retryAfter, ...}
let walsenders // WalsenderSampler

function openBalanced(params, label) {
  return openShape(h, params, {
    streamOptions: { url: `${balancer.url}/v1/shape`, backoffOptions, fetchClient: recordingFetch(responses, label) },
  })
}

test('three instances: one leader, two followers serving the same handles', async () => {
  await h.ready
  instances = [{ id: 'i1', port: h.port, proxy: h.proxy }]
  for (const id of ['i2', 'i3']) instances.push(await startInstance(h, id))
  await waitForOneLeader(instances)
  const { leaders, states } = await leaderOf(instances)
  assert.equal(leaders[0].id, 'i1', 'the first instance leads')
  assert.deepEqual(states.map((s) => s.cluster.role), ['leader', 'follower', 'follower'])

  balancer = await startBalancer(instances.map((i) => i.port))
  h.onCleanup(() => balancer.stop())
  walsenders = new WalsenderSampler(h).start()

  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, val int4 NOT NULL)')
  await h.sql('INSERT INTO items SELECT g, 0 FROM generate_series(1, 200) g')
  // The same shape through each instance directly: one handle.
  const handles = []
  for (const { port } of instances) {
    const response = await fetch(`http://127.0.0.1:${port}/v1/shape?table=items&offset=-1`)
    assert.equal(response.status, 200)
    handles.push(response.headers.get('electric-handle'))
    await response.arrayBuffer()
  }
  assert.equal(new Set(handles).size, 1, `one handle on every instance: ${handles}`)
})

let subs = []
let writer

test(`${3 * CLIENTS_PER_SHAPE} stock clients through haproxy while the leader is SIGKILLed ${KILLS} times`, async () => {
  const shapes = [{ table: 'items' }, { table: 'items', where: 'id % 2 = 0' }, { table: 'items', where: 'id > 100' }]
  for (const [s, params] of shapes.entries()) {
    for (let i = 0; i < CLIENTS_PER_SHAPE; i++) subs.push({ params, sub: openBalanced(params, `shape${s}-client${i}`) })
  }
  await Promise.all(subs.map(({ sub }) => sub.shape.rows))
  writer = new Writer(h, 'items', { firstId: 1_000, perSecond: 20 }).start()
  h.onCleanup(() => writer.stop())

  const takeovers = []
  for (let kill = 0; kill < KILLS; kill++) {
    await sleep(1_500) // the writer and the clients run a while
    const { leaders } = await leaderOf(instances)
    assert.equal(leaders.length, 1, 'one leader before the kill')
    const victim = leaders[0]
    const before = await slotPid(h)
    const killedAt = Date.now()
    await victim.proxy.stop({ signal: 'SIGKILL' })
    // Another instance holds the lock and its walsender streams the slot.
    const next = await waitForTakeover(h, instances, victim, before, TAKEOVER_MS + 5_000)
    const took = Date.now() - killedAt
    takeovers.push({ from: victim.id, to: next.id, ms: took })
    h.log(`kill ${kill + 1}: ${victim.id} -> ${next.id} in ${took} ms`)
    assert.ok(took <= TAKEOVER_MS, `takeover in ${took} ms, more than ${TAKEOVER_MS}`)
    // The killed instance comes back as a follower (a supervisor's restart).
    victim.proxy.start()
    await waitFor(async () => (await statusOf(victim))?.cluster?.role === 'follower', 30_000, {
      intervalMs: 50,
      what: `${victim.id} back as a follower`,
    })
  }
  process.stderr.write(`[several_instances] takeovers: ${JSON.stringify(takeovers)}\n`)

  // A new shape asked through the balancer after the failovers: created once.
  const late = openBalanced({ table: 'items', where: 'val > 0' }, 'late')
  subs.push({ params: { table: 'items', where: 'val > 0' }, sub: late })
  await late.shape.rows

  await writer.stop()
  const lateHandles = []
  for (const { port } of instances) {
    const response = await fetch(`http://127.0.0.1:${port}/v1/shape?table=items&where=${encodeURIComponent('val > 0')}&offset=-1`)
    lateHandles.push(response.headers.get('electric-handle'))
    await response.arrayBuffer()
  }
  assert.equal(new Set(lateHandles).size, 1, `one handle for the late shape on every instance: ${lateHandles}`)
  assert.equal(lateHandles[0], late.stream.shapeHandle)

  for (const { params, sub } of subs) {
    const where = params.where ? ` WHERE ${params.where}` : ''
    const expected = canonicalRows((await h.sql(`SELECT * FROM items${where} ORDER BY id`)).rows)
    await sub.waitForRows((rows) => canonicalRows(rows) === expected, CONVERGE_TIMEOUT_MS, `rows${where} to equal SELECT`)
    assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], 'no must-refetch')
    assert.deepEqual(sub.errors, [], 'the stream never gave up')
    assertOperationsConsistent(sub)
  }
  assert.deepEqual(responses.filter(({ status }) => status === 409), [], 'no 409')
  const serverErrors = responses.filter(({ status, retryAfter }) => status >= 500 && !(status === 503 && Number(retryAfter) > 0))
  assert.deepEqual(serverErrors, [], 'no 5xx but 503 with retry-after')
  await walsenders.stop()
  assert.ok(walsenders.max <= 1, `at most one walsender at a time (samples: ${walsenders.samples.length})`)
  process.stderr.write(
    `[several_instances] ${responses.length} responses, ${responses.filter((r) => r.status === 503).length} 503s, ` +
      `${walsenders.samples.length} walsender samples (max ${walsenders.max})\n`,
  )
  for (const { sub } of subs) sub.close()
})
