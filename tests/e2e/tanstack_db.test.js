// TanStack DB's electric collection (@tanstack/electric-db-collection, the
// client new Electric users adopt) against the real proxy, in both sync
// modes: eager (the whole shape) and on-demand (log=changes_only from
// offset=now, rows loaded by live queries through subset snapshots:
// requestSnapshot -> GET subset__where/order_by/limit). A mutation is
// confirmed with awaitTxId (the handler returns pg_current_xact_id()) while
// live, during a fallback episode (the proxy appends a snapshot-end of each
// refresh's snapshot: rfc/0004) and after recovery. Each ends with the
// collection equal to SELECT and no must-refetch.
import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import { createCollection, createLiveQueryCollection, eq, gt } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { useHarness } from './harness.js'
import { backoffOptions, proxyArgs, recordingFetch, assertNoServerErrors } from './faults.js'
import { canonicalRows } from './shapes.js'

const h = useHarness({ name: 'tanstack_db', proxyArgs, leastPrivilege: true })
const log = []

before(async () => {
  await h.ready
  await h.appSql('CREATE TABLE todos (id int4 PRIMARY KEY, title text NOT NULL, done bool NOT NULL, n int4 NOT NULL)')
  await h.sql(
    `INSERT INTO todos SELECT g, 'todo ' || g, g % 3 = 0, g % 10 FROM generate_series(1, 200) g`,
  )
  await h.waitForStatus('live', 30_000)
})

// Runs `write(client)` in one transaction; resolves with its txid (what an
// app's API returns to the collection's handler).
async function writeWithTxid(write) {
  const client = await h.pool.connect()
  try {
    await client.query('BEGIN')
    await write(client)
    const { rows } = await client.query('SELECT pg_current_xact_id()::xid::text AS txid')
    await client.query('COMMIT')
    return Number(rows[0].txid)
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}

function todosCollection(id, syncMode) {
  return createCollection(
    electricCollectionOptions({
      id,
      syncMode,
      shapeOptions: {
        url: h.shapeUrl,
        params: { table: 'todos' },
        backoffOptions,
        fetchClient: recordingFetch(log, id),
      },
      getKey: (row) => row.id,
      onInsert: async ({ transaction }) => ({
        txid: await writeWithTxid(async (client) => {
          for (const { modified: row } of transaction.mutations) {
            await client.query('INSERT INTO todos VALUES ($1, $2, $3, $4)', [row.id, row.title, row.done, row.n])
          }
        }),
      }),
      onUpdate: async ({ transaction }) => ({
        txid: await writeWithTxid(async (client) => {
          for (const { modified: row } of transaction.mutations) {
            await client.query('UPDATE todos SET title = $2, done = $3, n = $4 WHERE id = $1', [
              row.id,
              row.title,
              row.done,
              row.n,
            ])
          }
        }),
      }),
      onDelete: async ({ transaction }) => ({
        txid: await writeWithTxid(async (client) => {
          for (const { original: row } of transaction.mutations) {
            await client.query('DELETE FROM todos WHERE id = $1', [row.id])
          }
        }),
      }),
    }),
  )
}

async function selectRows(where = 'true') {
  return canonicalRows((await h.sql(`SELECT * FROM todos WHERE ${where}`)).rows)
}

// Waits until `rows()` (the collection's view) equals SELECT ... WHERE `where`.
// TanStack DB's virtual properties ($key, $synced, ...) are left out.
async function assertEqualsSelect(rows, where, what) {
  const plain = () =>
    rows().map((row) => Object.fromEntries(Object.entries(row).filter(([key]) => !key.startsWith('$'))))
  let last
  await h
    .waitFor(
      async () => {
        last = [canonicalRows(plain()), await selectRows(where)]
        return last[0] === last[1]
      },
      20_000,
      { intervalMs: 50, what },
    )
    .catch((error) => {
      const [mine, theirs] = (last ?? ['[]', '[]']).map((text) => JSON.parse(text).map((row) => JSON.stringify(row)))
      const missing = theirs.filter((row) => !mine.includes(row)).slice(0, 5)
      const extra = mine.filter((row) => !theirs.includes(row)).slice(0, 5)
      assert.fail(`${what}: ${error.message}; missing ${missing.join(' ')}; extra ${extra.join(' ')}`)
    })
}

// A mutation confirmed by awaitTxId: isPersisted settles once the
// collection has seen the txid (in a change's txids or a snapshot-end);
// awaitTxId gives up after 5 s.
async function confirmed(transaction, what) {
  const started = Date.now()
  await transaction.isPersisted.promise
  const ms = Date.now() - started
  h.log(`${what}: confirmed after ${ms} ms`)
  return ms
}

function assertNoMustRefetch(label) {
  const refetches = log.filter((entry) => entry.label === label && entry.status === 409)
  assert.deepEqual(refetches, [], `${label}: no must-refetch`)
}

test('eager and on-demand collections: awaitTxId live, during fallback and after recovery', async (t) => {
  const eager = todosCollection('eager', 'eager')
  const onDemand = todosCollection('on-demand', 'on-demand')
  // On-demand loads only what a live query asks for: a subset snapshot.
  const open = createLiveQueryCollection({
    query: (q) =>
      q
        .from({ todo: onDemand })
        .where(({ todo }) => eq(todo.done, false))
        .where(({ todo }) => gt(todo.n, 4)),
  })
  // Subscribed, as a UI would be: a live query nobody watches is collected
  // (gcTime) and its subset unloaded.
  const unsubscribe = open.subscribeChanges(() => {})
  h.onCleanup(async () => {
    unsubscribe.unsubscribe?.()
    await open.cleanup()
    await eager.cleanup()
    await onDemand.cleanup()
  })
  await eager.preload()
  await open.preload()
  const openWhere = 'done = false AND n > 4'
  await assertEqualsSelect(() => eager.toArray, 'true', 'eager collection')
  await assertEqualsSelect(() => open.toArray, openWhere, 'on-demand live query')
  assert.ok(
    log.some((entry) => entry.label === 'on-demand' && /subset__where=/.test(entry.url) && entry.status === 200),
    'on-demand loaded its rows with a subset snapshot',
  )

  const phases = [
    ['live', async () => {}],
    [
      'fallback',
      async () => {
        await h.breakReplication()
        await h.waitForStatus('fallback', 30_000)
      },
    ],
    [
      'recovered',
      async () => {
        await h.restoreReplication()
        await h.waitForStatus('live', 60_000)
      },
    ],
  ]
  let nextId = 10_000
  for (const [phase, enter] of phases) {
    await enter()
    // Eager: insert, update and delete, each confirmed by its txid.
    const id = nextId++
    let ms = await confirmed(eager.insert({ id, title: `${phase} insert`, done: false, n: 7 }), `${phase} insert`)
    t.diagnostic(`${phase}: eager insert confirmed after ${ms} ms`)
    ms = await confirmed(
      eager.update(id, (draft) => {
        draft.title = `${phase} update`
      }),
      `${phase} update`,
    )
    t.diagnostic(`${phase}: eager update confirmed after ${ms} ms`)
    const doomed = nextId - 10_000 // rows 1, 2, 3 of the seed
    ms = await confirmed(eager.delete(doomed), `${phase} delete`)
    t.diagnostic(`${phase}: eager delete confirmed after ${ms} ms`)
    await assertEqualsSelect(() => eager.toArray, 'true', `${phase}: eager collection`)

    if (phase === 'fallback') {
      // A new live query during the outage: its subset snapshot is served
      // from the fallback source, flagged.
      const since = log.length
      const late = createLiveQueryCollection({
        query: (q) => q.from({ todo: onDemand }).where(({ todo }) => eq(todo.n, 3)),
      })
      const lateSubscription = late.subscribeChanges(() => {})
      h.onCleanup(() => {
        lateSubscription.unsubscribe?.()
        return late.cleanup()
      })
      await late.preload()
      await assertEqualsSelect(() => late.toArray, 'n = 3', 'on-demand live query made during fallback')
      assert.ok(
        log.slice(since).some((entry) => /subset__where=/.test(entry.url) && entry.status === 200 && entry.fallback),
        'a subset snapshot served in fallback mode, flagged',
      )
    }
    // On-demand: a row entering the live query's subset, confirmed too.
    const other = nextId++
    ms = await confirmed(onDemand.insert({ id: other, title: `${phase} on-demand`, done: false, n: 9 }), `${phase} on-demand insert`)
    t.diagnostic(`${phase}: on-demand insert confirmed after ${ms} ms`)
    await assertEqualsSelect(() => open.toArray, openWhere, `${phase}: on-demand live query`)
  }

  // Changes made outside the collections reach both. (An update moving a row
  // the on-demand collection never loaded into its query carries only the
  // changed columns with replica=default, and TanStack DB drops it: a client
  // matter, the same with Electric; an insert arrives whole.)
  await h.sql(`UPDATE todos SET done = false, n = 8 WHERE id = 6`)
  await h.sql(`INSERT INTO todos VALUES (20000, 'outside', false, 6)`)
  await assertEqualsSelect(() => eager.toArray, 'true', 'eager collection at the end')
  await assertEqualsSelect(() => open.toArray, `${openWhere} AND id <> 6`, 'on-demand live query at the end')
  assertNoMustRefetch('eager')
  assertNoMustRefetch('on-demand')
  assertNoServerErrors(log)
})
