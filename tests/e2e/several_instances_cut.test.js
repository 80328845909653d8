// Several instances (issue 13, rfc/0003): one instance's connection to
// PostgreSQL cut. Three proxies on one database and one data directory, each
// reaching PostgreSQL through its own TCP relay (cluster.js TcpRelay), behind
// haproxy round-robin; 24 stock clients on three shapes and a writer run
// throughout. The relay of one instance is cut (every relayed connection
// reset, new ones reset as they come), then blackholed (packets dropped: the
// server keeps the sessions, their advisory lock and the walsender), first
// while it follows, then while it leads. Checked:
//   - a cut follower keeps serving (it relays to the leader over HTTP):
//     writes made meanwhile reach every client, and no instance reports
//     fallback nor flags a response `electric-fallback-mode: true`;
//   - a cut leader is deposed: another instance takes the lock and streams
//     the slot within the fallback grace period + 3 s (behind a blackhole
//     too: its lock session ends by idle_session_timeout, the next leader
//     ends the walsender it left on the slot); the deposed one exits
//     with status 75, which the packaged systemd unit's Restart= restarts;
//     the test, acting as that supervisor, restarts it (still cut off) and
//     it rejoins as a follower of the new leader;
//   - fallback shows (status or flagged responses) only between the leader's
//     cut and the moment every instance reports live again;
//   - at most one walsender at any sample (every 50 ms) of the run;
//   - every client ends equal to SELECT, saw no 409 / must-refetch, no
//     operation out of order (no duplicates), and no 5xx but 503 with
//     retry-after.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { TcpRelay, WalsenderSampler, instanceArgs, leaderOf, slotPid, startBalancer, startInstance, statusOf, waitForOneLeader, waitForTakeover } from './cluster.js'
import { GRACE_MS, SLACK_MS, Writer, assertNoServerErrors, assertOperationsConsistent, backoffOptions, proxyArgs, recordingFetch, sleep } from './faults.js'
import { useHarness, waitFor } from './harness.js'
import { canonicalRows, openShape } from './shapes.js'

const CLIENTS_PER_SHAPE = 8
// The contract (grace + 3 s), plus the slack every fault test allows a loaded
// or sanitizer-built run (faults.js).
const TAKEOVER_MS = GRACE_MS + 3_000 + SLACK_MS
const CONVERGE_TIMEOUT_MS = 60_000
// The exit status of a deposed leader (src/app/proxy.cpp; rfc/0003).
const DEPOSED_EXIT = 75

const h = useHarness({ name: 'several_instances_cut', proxyArgs: [...proxyArgs, '--instance-id', 'i1'], maxLogLines: 20_000 })

let instances // [{id, port, proxy}]
const relays = new Map() // instance id -> TcpRelay
let balancer
let walsenders
let writer
const responses = [] // every response a client got (faults.js recordingFetch)
const statuses = [] // {at, id, status, role} of every instance, every 50 ms
let recording = true
const subs = []
let liveAgainAt // when every instance reported live after the last leader partition
let stableSince = 0 // fallback is expected only within a leader partition, from then on
const SHAPES = [{ table: 'items' }, { table: 'items', where: 'id % 2 = 0' }, { table: 'items', where: 'id > 100' }]

// Whether the instance's election session (application_name
// shapeproxy:<id>) is connected to the database.
async function sessionOf(id) {
  const { rowCount } = await h.sql('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [`shapeproxy:${id}`])
  return rowCount > 0
}

// With the writer paused: every client equals SELECT of its shape.
async function converge(what) {
  await writer.pause()
  try {
    for (const { params, sub } of subs) {
      const where = params.where ? ` WHERE ${params.where}` : ''
      const expected = canonicalRows((await h.sql(`SELECT * FROM items${where} ORDER BY id`)).rows)
      await sub.waitForRows((rows) => canonicalRows(rows) === expected, CONVERGE_TIMEOUT_MS, `rows${where} to equal SELECT ${what}`)
    }
  } finally {
    writer.resume()
  }
}

// Fallback seen between `from` and `to` (ms epoch): flagged responses and
// status samples.
function fallbackBetween(from, to) {
  return [
    ...responses.filter(({ at, fallback }) => fallback && at >= from && at <= to).map(({ label, at }) => `${label} response at +${at - from} ms`),
    ...statuses.filter(({ at, status }) => status === 'fallback' && at >= from && at <= to).map(({ id, at }) => `${id} status at +${at - from} ms`),
  ]
}

const byId = (id) => instances.find((i) => i.id === id)

test('three instances, each reaching PostgreSQL through its own relay', async () => {
  await h.ready
  const pgPort = h.cluster.info.port
  for (const id of ['i1', 'i2', 'i3']) {
    const relay = await new TcpRelay(pgPort).start()
    relays.set(id, relay)
    h.onCleanup(() => relay.close())
  }
  // The harness's proxy (i1) again, through its relay.
  await h.stopProxy()
  h.proxy.args = instanceArgs(h, { id: 'i1', port: h.port, databaseUrl: relays.get('i1').conninfo(h) })
  await h.startProxy()
  instances = [{ id: 'i1', port: h.port, proxy: h.proxy }]
  for (const id of ['i2', 'i3']) instances.push(await startInstance(h, id, { databaseUrl: relays.get(id).conninfo(h) }))
  const leader = await waitForOneLeader(instances)
  assert.equal(leader.id, 'i1', 'the first instance leads')
  for (const relay of relays.values()) assert.ok(relay.accepted > 0, 'every instance connects through its relay')

  balancer = await startBalancer(instances.map((i) => i.port))
  h.onCleanup(() => balancer.stop())
  walsenders = new WalsenderSampler(h).start()
  const statusLoop = (async () => {
    while (recording) {
      const states = await Promise.all(instances.map(statusOf))
      const at = Date.now()
      states.forEach((s, i) => statuses.push({ at, id: instances[i].id, status: s?.status ?? 'unreachable', role: s?.cluster?.role }))
      await sleep(50)
    }
  })()
  h.onCleanup(async () => {
    recording = false
    await statusLoop
  })

  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, val int4 NOT NULL)')
  await h.sql('INSERT INTO items SELECT g, 0 FROM generate_series(1, 200) g')
  for (const [s, params] of SHAPES.entries()) {
    for (let i = 0; i < CLIENTS_PER_SHAPE; i++) {
      const label = `shape${s}-client${i}`
      const sub = openShape(h, params, {
        streamOptions: { url: `${balancer.url}/v1/shape`, backoffOptions, fetchClient: recordingFetch(responses, label) },
      })
      subs.push({ params, sub })
    }
  }
  await Promise.all(subs.map(({ sub }) => sub.shape.rows))
  await waitFor(async () => (await leaderOf(instances)).states.every((s) => s?.status === 'live'), 30_000, {
    intervalMs: 50,
    what: 'every instance to report live',
  })
  writer = new Writer(h, 'items', { firstId: 1_000, perSecond: 20 }).start()
  h.onCleanup(() => writer.stop())
})

// `mode`: 'cut' (connections reset) or 'blackhole' (packets dropped).
async function partition(relay, mode) {
  if (mode === 'cut') relay.cut()
  else relay.blackhole()
}

async function followerPartitioned(mode) {
  const { leaders } = await leaderOf(instances)
  const victim = instances.find((i) => i !== leaders[0])
  const relay = relays.get(victim.id)
  const cutAt = Date.now()
  await partition(relay, mode)
  // Its election session is gone (with a blackhole: ended by the server's
  // idle_session_timeout) and it keeps trying the database.
  await waitFor(async () => !(await sessionOf(victim.id)), 10_000, { intervalMs: 25, what: `${victim.id}'s session to end` })
  const turnedAway = relay.turnedAway
  await waitFor(() => relay.turnedAway >= turnedAway + 2, 15_000, { intervalMs: 25, what: `${victim.id} to retry the database` })
  // Writes made while it is cut reach every client, and it answers itself.
  const committed = writer.committed
  await waitFor(() => writer.committed >= committed + 20, 10_000, { intervalMs: 25, what: 'writes during the cut' })
  await converge('while a follower is cut')
  const own = await statusOf(victim)
  assert.equal(own?.status, 'live', `${victim.id}'s status while cut: ${JSON.stringify(own)}`)
  assert.equal(own.cluster.role, 'follower')
  assert.equal(own.cluster.leader?.instance_id, leaders[0].id, `${victim.id} still follows ${leaders[0].id}`)
  const direct = await fetch(`http://127.0.0.1:${victim.port}/v1/shape?table=items&offset=-1`)
  await direct.arrayBuffer()
  assert.equal(direct.status, 200)
  assert.equal(direct.headers.get('electric-fallback-mode'), null, 'no fallback flag from the cut follower')
  assert.equal((await leaderOf(instances)).leaders[0], leaders[0], 'the leader did not change')

  relay.heal()
  await waitFor(() => sessionOf(victim.id), 10_000, { intervalMs: 25, what: `${victim.id}'s session back` })
  const healedAt = Date.now()
  assert.deepEqual(fallbackBetween(cutAt, healedAt), [], `no fallback while a follower is partitioned (${mode})`)
  h.log(`follower ${victim.id} partitioned (${mode}) for ${healedAt - cutAt} ms; ${relay.turnedAway} connections turned away`)
}

test('a follower cut from PostgreSQL keeps serving, and nothing reports fallback', () => followerPartitioned('cut'))
test('a follower behind a blackhole keeps serving, and nothing reports fallback', () => followerPartitioned('blackhole'))

test('the packaged systemd unit restarts a deposed leader (exit status 75)', () => {
  const unit = readFileSync(new URL('../../packaging/shapeproxy.service', import.meta.url), 'utf8')
  const setting = (name) => unit.match(new RegExp(`^${name}=(.*)$`, 'm'))?.[1]?.trim()
  // on-failure and always restart on an unclean exit status; on-abnormal,
  // on-abort, on-watchdog and no do not.
  assert.ok(['on-failure', 'always'].includes(setting('Restart')), `Restart=${setting('Restart')} restarts on exit status ${DEPOSED_EXIT}`)
  for (const name of ['SuccessExitStatus', 'RestartPreventExitStatus']) {
    const statuses = (setting(name) ?? '').split(/\s+/)
    assert.ok(!statuses.includes(String(DEPOSED_EXIT)), `${name} must not hold ${DEPOSED_EXIT}`)
  }
})

async function leaderPartitioned(mode) {
  const { leaders } = await leaderOf(instances)
  assert.equal(leaders.length, 1, 'one leader before the cut')
  const victim = leaders[0]
  const relay = relays.get(victim.id)
  const before = await slotPid(h)
  const exits = victim.proxy.exits.length
  const cutAt = Date.now()
  await partition(relay, mode)
  const next = await waitForTakeover(h, instances, victim, before, TAKEOVER_MS + 5_000)
  const took = Date.now() - cutAt
  process.stderr.write(`[several_instances_cut] leader ${victim.id} partitioned (${mode}): ${next.id} leads and streams after ${took} ms\n`)
  assert.ok(took <= TAKEOVER_MS, `takeover in ${took} ms, more than ${TAKEOVER_MS}`)

  // Deposed: it exited with 75 (it had to, to free the data directory).
  await waitFor(() => victim.proxy.exits.length > exits, 10_000, { what: `${victim.id} to exit` })
  assert.deepEqual(victim.proxy.exits.slice(exits), [{ code: DEPOSED_EXIT, signal: null }], `${victim.id} exits deposed`)
  // The supervisor restarts it while it is still cut off: it follows the
  // data directory's holder as its record says.
  victim.proxy.start()
  await waitFor(async () => (await statusOf(victim))?.cluster?.leader?.instance_id === next.id, 30_000, {
    intervalMs: 50,
    what: `${victim.id} back, following ${next.id}, while cut`,
  })
  assert.equal((await statusOf(victim)).cluster.role, 'follower')
  relay.heal()
  await waitFor(() => sessionOf(victim.id), 10_000, { intervalMs: 25, what: `${victim.id}'s session back` })
  const committed = writer.committed
  await waitFor(() => writer.committed >= committed + 20, 10_000, { intervalMs: 25, what: 'writes after the heal' })
  await converge('after the leader cut')
  await waitFor(async () => (await leaderOf(instances)).states.every((s) => s?.status === 'live'), 30_000, {
    intervalMs: 50,
    what: 'every instance to report live',
  })
  liveAgainAt = Date.now()
  assert.equal((await waitForOneLeader(instances)).id, next.id, `${next.id} still leads`)
  const seen = fallbackBetween(cutAt, liveAgainAt)
  process.stderr.write(`[several_instances_cut] fallback seen during the leader partition (${mode}): ${seen.length} (${seen.slice(0, 5).join(', ')})\n`)
  assert.deepEqual(fallbackBetween(stableSince, cutAt - 1), [], 'no fallback before the leader partition')
  stableSince = liveAgainAt
}

test('a leader cut from PostgreSQL is deposed, another takes over, and it rejoins as a follower', () => leaderPartitioned('cut'))
test('a leader behind a blackhole is deposed, another takes over, and it rejoins as a follower', () => leaderPartitioned('blackhole'))

test('every client ends equal to SELECT, without must-refetch, and one walsender at most', async () => {
  await writer.stop()
  await converge('at the end')
  for (const { sub } of subs) {
    assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], 'no must-refetch')
    assert.deepEqual(sub.errors, [], 'the stream never gave up')
    assertOperationsConsistent(sub)
  }
  assert.deepEqual(responses.filter(({ status }) => status === 409), [], 'no 409')
  assertNoServerErrors(responses)
  assert.deepEqual(fallbackBetween(liveAgainAt, Date.now()), [], 'no fallback once every instance is live again')
  await walsenders.stop()
  assert.ok(walsenders.max <= 1, `at most one walsender at a time (samples: ${walsenders.samples.length})`)
  process.stderr.write(
    `[several_instances_cut] ${responses.length} responses, ${responses.filter((r) => r.status === 503).length} 503s, ` +
      `${walsenders.samples.length} walsender samples (max ${walsenders.max})\n`,
  )
  for (const { sub } of subs) sub.close()
})
