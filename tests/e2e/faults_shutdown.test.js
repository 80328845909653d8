// The proxy acknowledges every transaction it was sent, including ones that
// change none of its shapes, even when they arrive while the shape logs of
// the previous ones are being synced to disk. An unacknowledged transaction
// holds the slot back and, worse, makes a PostgreSQL shutdown wait for the
// proxy (a walsender only exits once its client confirmed all WAL): the
// database would not stop (pg_ctl gives up after 60 s).
// Two shapes: `hot` (every row) and `cold` with a where clause no row
// matches; each round commits to `hot`, then at once to `cold`. The slot's
// confirmed_flush_lsn must pass the `cold` write, and PostgreSQL must stop
// promptly.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import pg from 'pg'
import { createTable } from './faults.js'
import { useHarness } from './harness.js'
import { openShape } from './shapes.js'

const h = useHarness({ name: 'faults_shutdown' })
const ROUNDS = 10
const CONFIRM_WITHIN_MS = 5_000
const STOP_WITHIN_MS = 15_000

before(async () => {
  await h.ready
  await createTable(h, 'hot')
  await createTable(h, 'cold')
  const hot = openShape(h, { table: 'hot' })
  const cold = openShape(h, { table: 'cold', where: 'val < 0' })
  await hot.shape.rows
  await cold.shape.rows
})

test('a transaction touching no shape, right after one that does, is acknowledged', async (t) => {
  const hotClient = new pg.Client({ connectionString: h.databaseUri })
  const coldClient = new pg.Client({ connectionString: h.databaseUri })
  await hotClient.connect()
  await coldClient.connect()
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // A few hundred rows for `hot`, so its shape log takes a moment to
      // sync, and the `cold` commit lands meanwhile.
      await hotClient.query(
        'INSERT INTO hot SELECT g, g FROM generate_series($1::int * 1000, $1::int * 1000 + 299) g',
        [round],
      )
      await coldClient.query('BEGIN')
      await coldClient.query('INSERT INTO cold VALUES ($1, $1)', [round])
      const { rows } = await coldClient.query('SELECT pg_current_wal_insert_lsn()::text AS lsn')
      await coldClient.query('COMMIT')
      const started = Date.now()
      await h.waitFor(
        async () => {
          const result = await h.sql(
            'SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1',
            [h.slot, rows[0].lsn],
          )
          return result.rows[0]?.ok
        },
        CONFIRM_WITHIN_MS,
        { intervalMs: 20, what: `round ${round}: the slot to confirm the cold write at ${rows[0].lsn}` },
      )
      if (round === ROUNDS) t.diagnostic(`last round confirmed after ${Date.now() - started} ms`)
    }
  } finally {
    await hotClient.end()
    await coldClient.end()
  }
})

test('PostgreSQL stops promptly right after such a pair of writes', async (t) => {
  await h.sql('INSERT INTO hot SELECT g, g FROM generate_series(-300, -1) g')
  await h.sql('INSERT INTO cold VALUES (-1, 1)')
  const started = Date.now()
  await h.stopPostgres()
  const ms = Date.now() - started
  t.diagnostic(`stopped in ${ms} ms`)
  assert.ok(ms < STOP_WITHIN_MS, `PostgreSQL took ${ms} ms to stop`)
  await h.startPostgres()
})
