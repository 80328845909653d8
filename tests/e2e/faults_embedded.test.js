// The README's "Watching fallback mode and back" with the embedded default
// (no --database-url: the proxy starts its own PostgreSQL with the demo
// table): the proxy connects as the non-superuser role `shapeproxy`, so
// revoking its REPLICATION privilege (and ending its walsender) moves
// /v1/status to fallback, a write during the outage reaches a live stock
// client, a table the superuser creates meanwhile is served too, and
// restoring the privilege brings the status back to live without refetch.
// Does not use harness.js (which always passes --database-url).
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, test } from 'node:test'
import pg from 'pg'
import { freePort, spawnGuarded, waitFor } from './harness.js'
import { GRACE_MS, OUTAGE_WRITE_MS, STATUS_CHANGE_MS, assertNoServerErrors, openRecordedShape, proxyArgs } from './faults.js'

const START_TIMEOUT_MS = 60_000 // initdb included
let proxy, dataDir, port, db, databaseUri
const logs = []
const log = []
const closes = [] // the stock clients' close()

const status = async () => {
  const response = await fetch(`http://127.0.0.1:${port}/v1/status`, { signal: AbortSignal.timeout(2_000) })
  return (await response.json()).status
}
async function waitForStatus(value, timeoutMs) {
  const started = Date.now()
  await waitFor(async () => (await status()) === value, timeoutMs, { intervalMs: 50, what: `status ${value}` })
  return Date.now() - started
}

before(async () => {
  const bin = process.env.SHAPEPROXY_BIN
  assert.ok(bin, 'SHAPEPROXY_BIN is set')
  dataDir = mkdtempSync(join(tmpdir(), 'shapeproxy-e2e-embedded-'))
  chmodSync(dataDir, 0o711) // as root, PostgreSQL runs as another user
  port = await freePort()
  // A SIGKILLed proxy would leave its embedded PostgreSQL running: on SIGTERM
  // (after) it stops it; spawnGuarded kills the proxy if this process dies.
  proxy = spawnGuarded(bin, ['--data-dir', dataDir, '--port', String(port), ...proxyArgs])
  process.on('exit', () => proxy.kill('SIGKILL'))
  for (const stream of [proxy.stdout, proxy.stderr]) createInterface({ input: stream }).on('line', (l) => logs.push(l))
  databaseUri = await waitFor(
    () => logs.map((line) => /psql '([^']+)'/.exec(line)?.[1]).find(Boolean),
    START_TIMEOUT_MS,
    { intervalMs: 50, what: 'the embedded PostgreSQL URL in the log' },
  )
  db = new pg.Pool({ connectionString: databaseUri, max: 2 })
  db.on('error', () => {})
  await waitForStatus('live', START_TIMEOUT_MS)
})

after(async () => {
  for (const close of closes) close()
  await db?.end().catch(() => {})
  if (proxy && proxy.exitCode === null) {
    proxy.kill('SIGTERM')
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        proxy.kill('SIGKILL')
        resolve()
      }, 15_000)
      proxy.once('exit', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true })
})

// The stock client of faults.js on the embedded proxy (what openShape needs
// of a harness: the shape URL and a place to register its close()).
const proxyShapes = {
  get shapeUrl() {
    return `http://127.0.0.1:${port}/v1/shape`
  },
  onCleanup: (close) => closes.push(close),
}
const openStockShape = (table) => openRecordedShape(proxyShapes, { table }, log, table)

test('README: stop replication, see fallback, start it, see live', async (t) => {
  try {
    const items = openStockShape('items')
    await items.shape.rows
    const role = await db.query(`SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'shapeproxy'`)
    assert.deepEqual(role.rows, [{ rolsuper: false, rolreplication: true }])

    await db.query('ALTER ROLE shapeproxy NOREPLICATION')
    await db.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'shapeproxy'`)
    const fallbackMs = await waitForStatus('fallback', 30_000)
    t.diagnostic(`fallback ${fallbackMs} ms after NOREPLICATION (grace ${GRACE_MS} ms)`)
    assert.ok(fallbackMs <= STATUS_CHANGE_MS, `fallback after ${fallbackMs} ms (> ${STATUS_CHANGE_MS})`)

    const waiting = items.waitForRows(
      (rows) => rows.some((row) => row.title === 'written during the outage'),
      30_000,
      'the outage write',
    )
    await db.query(`INSERT INTO items (title) VALUES ('written during the outage')`)
    const committedAt = Date.now()
    const writeMs = (await waiting) - committedAt
    t.diagnostic(`a write during the outage seen after ${writeMs} ms`)
    assert.ok(writeMs <= OUTAGE_WRITE_MS, `seen after ${writeMs} ms (> ${OUTAGE_WRITE_MS})`)
    // A table the superuser creates during the outage is served too.
    await db.query('CREATE TABLE notes (id serial PRIMARY KEY, body text)')
    await db.query(`INSERT INTO notes (body) VALUES ('one')`)
    const notes = openStockShape('notes')
    assert.equal((await notes.shape.rows).length, 1)

    await db.query('ALTER ROLE shapeproxy REPLICATION')
    const liveMs = await waitForStatus('live', 30_000)
    t.diagnostic(`live ${liveMs} ms after REPLICATION`)
    assert.ok(liveMs <= STATUS_CHANGE_MS, `live after ${liveMs} ms (> ${STATUS_CHANGE_MS})`)
    await db.query(`INSERT INTO notes (body) VALUES ('two')`)
    await db.query(`UPDATE items SET done = true WHERE id = 1`)
    // Both clients end equal to SELECT (compared on id and the text form of
    // the other columns: the client parses int8/bool, pg parses timestamps).
    const text = (row) => JSON.stringify(Object.entries(row).sort().map(([k, v]) => [k, v instanceof Date ? null : String(v)]))
    for (const [sub, table] of [
      [items, 'items'],
      [notes, 'notes'],
    ]) {
      const { rows } = await db.query(`SELECT * FROM ${table}`)
      const expected = rows.map(text).sort().join('\n')
      const strip = (row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, k === 'created_at' ? new Date(0) : v]))
      await sub.waitForRows(
        (current) => current.map((row) => text(strip(row))).sort().join('\n') === expected,
        10_000,
        `${table} rows to equal SELECT`,
      )
      assert.deepEqual(sub.controls.filter((c) => c === 'must-refetch'), [], `${table}: no must-refetch`)
    }
    assertNoServerErrors(log)
  } catch (error) {
    process.stderr.write(`----- proxy log -----\n${logs.slice(-80).join('\n')}\n`)
    throw error
  }
})
