// Fallback queries served by a real streaming standby (--fallback-database-url):
// the harness's cluster is the primary; a second cluster is made its hot
// standby (pg_basebackup -R, by shapeproxy_test_cluster --standby-of). With
// the proxy's replication broken, /v1/status says fallback from the standby,
// rows written on the primary reach a stock client once the standby has
// replayed them (flagged electric-fallback-mode: true), and not before:
// while the standby's replay is paused the client sees nothing new even
// though the primary has the row. Replication restored: live again.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { before, test } from 'node:test'
import pg from 'pg'
import { useHarness, waitFor } from './harness.js'
import { openShape } from './shapes.js'

const POLL_INTERVAL_MS = 250
const h = useHarness({
  name: 'fallback_standby',
  leastPrivilege: true,
  proxyArgs: ['--fallback-grace-ms', '500', '--fallback-poll-interval-ms', String(POLL_INTERVAL_MS)],
})

// Starts `shapeproxy_test_cluster --standby-of <primary>`; resolves with
// {info, pool (superuser, this file's database), conninfoAs(user), stop()}.
async function startStandby(primaryConninfo, database) {
  const child = spawn(process.env.SHAPEPROXY_TEST_CLUSTER, ['--standby-of', primaryConninfo], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const stderr = []
  child.stderr.setEncoding('utf8').on('data', (chunk) => stderr.push(chunk))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.stdin.end() // the launcher stops the standby and removes its files
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    await exited
    clearTimeout(timer)
  }
  // (If this process dies, the launcher sees its stdin close and removes the standby.)
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`standby did not start: ${stderr.join('')}`)), 90_000)
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer)
      resolve(JSON.parse(line))
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`standby launcher exited with ${code}: ${stderr.join('')}`))
    })
  })
  const base = info.conninfo.replace(/\s*(dbname|user)=('(?:[^'\\]|\\.)*'|\S+)/g, '')
  const conninfoAs = (user) => `${base} dbname=${database} user=${user}`
  const pool = new pg.Pool({ connectionString: `postgresql://postgres@127.0.0.1:${info.port}/${database}`, max: 2 })
  pool.on('error', () => {})
  return {
    info,
    pool,
    conninfoAs,
    async stop() {
      await pool.end().catch(() => {})
      await stop()
    },
  }
}

// A fetch for the stock client that keeps every shape response's
// electric-fallback-mode header and body.
function recordingFetch(log) {
  return async (input, init) => {
    const response = await fetch(input, init)
    if (String(input).includes('/v1/shape')) {
      const body = await response.clone().text()
      log.push({ fallback: response.headers.get('electric-fallback-mode'), body, status: response.status })
    }
    return response
  }
}

const carrying = (log, id) => log.filter(({ body }) => body.includes(`"id":"${id}"`))
const count = async (pool) => (await pool.query('SELECT count(*)::int AS n FROM items')).rows[0].n

let standby
before(async () => {
  await h.ready
  await h.appSql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.appSql(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g`)
  standby = await startStandby(h.cluster.info.conninfo, h.database)
  h.onCleanup(() => standby.stop())
  await waitFor(async () => (await count(standby.pool).catch(() => 0)) === 50, 30_000, {
    intervalMs: 50,
    what: 'the standby to replay the table',
  })
  // The proxy, restarted pointing its fallback queries at the standby.
  h.proxy.args.push('--fallback-database-url', standby.conninfoAs(h.appRole))
  await h.restartProxy()
})

test('with replication broken, fallback rows come from the streaming standby', async () => {
  assert.equal(
    (await standby.pool.query('SELECT pg_is_in_recovery() AS r')).rows[0].r,
    true,
    'the second cluster is a standby',
  )
  const log = []
  const items = openShape(h, { table: 'items' }, { streamOptions: { fetchClient: recordingFetch(log) } })
  await items.waitForRows((rows) => rows.length === 50, 10_000, '50 rows while live')
  await h.waitForStatus('live', 10_000)

  await h.breakReplication()
  await h.waitForStatus('fallback', 5_000)
  const status = await h.status()
  assert.equal(status.body.fallback.source, 'standby', JSON.stringify(status.body))

  // Written on the primary, replayed by the standby, re-queried there.
  await h.appSql(`INSERT INTO items SELECT g, 'outage ' || g FROM generate_series(51, 60) g`)
  await items.waitForRows((rows) => rows.length === 60, 10_000, 'rows written during the outage')
  const delivered = carrying(log, 55)
  assert.ok(delivered.length > 0, 'a response carried row 55')
  assert.ok(
    delivered.every(({ fallback }) => fallback === 'true'),
    `responses with row 55 are flagged: ${JSON.stringify(delivered.map(({ fallback }) => fallback))}`,
  )

  // The standby stops replaying: the primary has row 61, the client must not.
  await standby.pool.query('SELECT pg_wal_replay_pause()')
  await waitFor(
    async () => (await standby.pool.query('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0].s === 'paused',
    10_000,
    { what: 'replay to pause' },
  )
  await h.appSql(`INSERT INTO items VALUES (61, 'behind the paused standby')`)
  assert.equal(await count(h.pool), 61)
  await new Promise((resolve) => setTimeout(resolve, 8 * POLL_INTERVAL_MS))
  assert.equal(items.rowsById().has('61'), false, 'row 61 cannot come from the paused standby')
  assert.equal(await count(standby.pool), 60)
  await standby.pool.query('SELECT pg_wal_replay_resume()')
  await items.waitForRows((rows) => rows.some((row) => String(row.id) === '61'), 10_000, 'row 61 after replay resumes')
  assert.ok(carrying(log, 61).every(({ fallback }) => fallback === 'true'))
  assert.ok(log.every(({ status }) => status < 500 || status === 503), 'no 5xx but 503')

  // Replication back: live again, from the primary's stream.
  await h.restoreReplication()
  await h.waitForStatus('live', 30_000)
  await h.appSql(`INSERT INTO items VALUES (62, 'live again')`)
  await items.waitForRows((rows) => rows.length === 62, 10_000, 'row 62 live')
  const live = carrying(log, 62)
  assert.ok(live.some(({ fallback }) => fallback === null), 'row 62 arrives unflagged')
})
