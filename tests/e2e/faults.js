// Shared pieces of the fault-injection scenarios (faults_*.test.js): the
// proxy's short degraded-mode timings, the common set-up (a table, a stock
// client holding it, status live), a background writer, a fetch that
// records every HTTP status a stock client got, and the checks every scenario
// ends with (rows equal SELECT, no must-refetch, no 5xx but a 503 with
// retry-after).
import assert from 'node:assert/strict'
import pg from 'pg'
import { canonicalRows, openShape } from './shapes.js'

// Short timings so an outage and its recovery take seconds, not minutes.
export const GRACE_MS = 1_000
export const POLL_MS = 500
export const proxyArgs = [
  '--fallback-grace-ms', String(GRACE_MS),
  '--fallback-poll-interval-ms', String(POLL_MS),
  '--status-max-age-s', '1',
]
// Slack on top of every timing promise (grace + 1 s for a status change, one
// poll interval for a write during an outage): a loaded 2-core CI machine, the
// client's own request round trips. The sanitizer build raises it (scripts/test).
export const SLACK_MS = Number(process.env.E2E_FAULTS_SLACK_MS ?? 1_000)
// The status must change within the grace period plus one second.
export const STATUS_CHANGE_MS = GRACE_MS + 1_000 + SLACK_MS
// A write made during an outage reaches a live client within one poll interval.
export const OUTAGE_WRITE_MS = POLL_MS + SLACK_MS

// Faster retries than the client's defaults (still the stock retry path).
export const backoffOptions = { initialDelay: 50, maxDelay: 500, multiplier: 1.5 }

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// A fetch for ShapeStream that records {label, status, retryAfter, fallback,
// url, at} of every response into `log` (`at`: when it arrived, ms epoch).
export function recordingFetch(log, label) {
  return async (input, init) => {
    const response = await fetch(input, init)
    log.push({
      label,
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      fallback: response.headers.get('electric-fallback-mode') === 'true',
      url: String(input),
      at: Date.now(),
    })
    return response
  }
}

// Opens a stock client on `params` whose responses are recorded in `log`.
export function openRecordedShape(h, params, log, label) {
  return openShape(h, params, { streamOptions: { backoffOptions, fetchClient: recordingFetch(log, label) } })
}

// Creates `table` (id int4 PRIMARY KEY, val int4 NOT NULL) holding ids
// 1..`rows` with val = `val` (an SQL expression over g). With a
// least-privilege harness the proxy's role creates it: it must own the
// tables it serves.
export async function createTable(h, table, { rows = 0, val = '0' } = {}) {
  const sql = h.leastPrivilege ? h.appSql : h.sql
  await sql(`CREATE TABLE ${table} (id int4 PRIMARY KEY, val int4 NOT NULL)`)
  if (rows > 0) await sql(`INSERT INTO ${table} SELECT g, ${val} FROM generate_series(1, ${rows}) g`)
}

// The start of every fault scenario: `table` created with `rows` rows, a
// stock client (responses recorded in `log`) holding all of them, and
// /v1/status live. Resolves with {sub, handle} (the client's shape handle).
export async function openLiveShape(h, log, { table = 'items', where, rows = 100, val = '0' } = {}) {
  await h.ready
  await createTable(h, table, { rows, val })
  const sub = openRecordedShape(h, where ? { table, where } : { table }, log, 'live client')
  assert.equal((await sub.shape.rows).length, rows)
  const handle = sub.stream.shapeHandle
  await h.waitForStatus('live', 30_000)
  return { sub, handle }
}

// Keeps writing to `table` (id int4 PRIMARY KEY, val int4) through its own
// connection: inserts new ids and updates existing ones, ~`perSecond`
// transactions a second. Errors (the database going away) are counted and
// retried with a new connection. pause() resolves once no write is in flight.
export class Writer {
  constructor(h, table, { firstId, perSecond = 50 } = {}) {
    this.h = h
    this.table = table
    this.nextId = firstId
    this.intervalMs = Math.max(1, Math.round(1_000 / perSecond))
    this.committed = 0
    this.failed = 0
    this.client = null
    this.paused = false
    this.stopped = false
    this.idle = Promise.resolve()
  }

  start() {
    this.done = this.run()
    return this
  }

  async connect() {
    const client = new pg.Client({ connectionString: this.h.databaseUri })
    client.on('error', () => {})
    await client.connect()
    this.client = client
  }

  async run() {
    while (!this.stopped) {
      if (this.paused) {
        await sleep(10)
        continue
      }
      let release
      this.idle = new Promise((resolve) => (release = resolve))
      try {
        if (!this.client) await this.connect()
        const id = this.nextId
        if (this.committed % 3 === 2) {
          await this.client.query(`UPDATE ${this.table} SET val = val + 1 WHERE id = $1`, [
            id - 1 - (this.committed % 50),
          ])
        } else {
          await this.client.query(`INSERT INTO ${this.table} (id, val) VALUES ($1, 0)`, [id])
          this.nextId++
        }
        this.committed++
      } catch {
        this.failed++
        this.client?.end().catch(() => {})
        this.client = null
        await sleep(100)
      } finally {
        release()
      }
      await sleep(this.intervalMs)
    }
  }

  async pause() {
    this.paused = true
    await this.idle
  }

  resume() {
    this.paused = false
  }

  async stop() {
    this.stopped = true
    await this.done
    await this.client?.end().catch(() => {})
  }
}

// Runs `write` (an async function doing one committed write), then resolves
// with the ms from its commit until `predicate(rows)` holds on `sub`.
export async function latencyOf(sub, write, predicate, what, timeoutMs = 30_000) {
  let committedAt = null
  const seen = sub.waitForRows(predicate, timeoutMs, what)
  await write()
  committedAt = Date.now()
  return Math.max(0, (await seen) - committedAt)
}

// The checks every scenario ends with, with writes stopped: `subs` (stock
// clients that lived through the outage) and a fresh client hold exactly
// SELECT of the shape; none saw must-refetch or gave up; no response was a
// 5xx other than 503, and every 503 carried retry-after.
export async function assertConverged(h, subs, { table, where, log, timeoutMs = 30_000 }) {
  const query = `SELECT * FROM ${table}${where ? ` WHERE ${where}` : ''} ORDER BY id`
  const expected = canonicalRows((await h.sql(query)).rows)
  for (const sub of subs) {
    await sub.waitForRows((rows) => canonicalRows(rows) === expected, timeoutMs, `${table} rows to equal SELECT`)
    assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], 'no must-refetch')
    assert.deepEqual(sub.errors, [], 'the stream never gave up')
    assertOperationsConsistent(sub)
  }
  const params = where ? { table, where } : { table }
  const fresh = openRecordedShape(h, params, log, 'fresh')
  try {
    const rows = await fresh.shape.rows
    assert.equal(canonicalRows(rows), expected, 'a fresh client equals SELECT')
  } finally {
    fresh.close()
  }
  assertNoServerErrors(log)
}

// Every change the client received makes sense in order: an insert of a key
// it does not hold, an update or delete of one it holds. A transaction
// replayed after recovery that the fallback re-query had already served would
// show as an insert of a held key (or a delete of a missing one).
export function assertOperationsConsistent(sub) {
  const held = new Set()
  const problems = []
  for (const { message } of sub.changes) {
    const { key } = message
    const { operation } = message.headers
    if (operation === 'insert') {
      if (held.has(key)) problems.push(`insert of held ${key}`)
      held.add(key)
    } else if (operation === 'update') {
      if (!held.has(key)) problems.push(`update of missing ${key}`)
    } else if (operation === 'delete') {
      if (!held.has(key)) problems.push(`delete of missing ${key}`)
      held.delete(key)
    }
  }
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} inconsistent operation(s) in the client's stream`)
}

export function assertNoServerErrors(log) {
  const errors = log.filter(({ status }) => status >= 500 && status !== 503)
  assert.deepEqual(errors, [], 'no 5xx other than 503')
  const bare503 = log.filter(({ status, retryAfter }) => status === 503 && !(Number(retryAfter) > 0))
  assert.deepEqual(bare503, [], 'every 503 carries a positive retry-after')
}

// Polls /v1/status every `intervalMs` in the background and keeps the
// timeline of its `status` field: [{at, status}], one entry per change.
export class StatusRecorder {
  constructor(h, { intervalMs = 50 } = {}) {
    this.h = h
    this.intervalMs = intervalMs
    this.timeline = []
    this.stopped = false
  }

  start() {
    this.done = this.run()
    this.h.onCleanup(() => this.stop())
    return this
  }

  async run() {
    while (!this.stopped) {
      const { body } = await this.h.status()
      const status = body?.status ?? 'unreachable'
      if (this.timeline.at(-1)?.status !== status) this.timeline.push({ at: Date.now(), status })
      await sleep(this.intervalMs)
    }
  }

  async stop() {
    this.stopped = true
    await this.done
  }

  // The changes at or after `since` (ms epoch).
  changesSince(since) {
    return this.timeline.filter(({ at }) => at >= since)
  }

  describe(since = 0) {
    return this.changesSince(since)
      .map(({ at, status }) => `+${at - since}ms ${status}`)
      .join(', ')
  }
}
