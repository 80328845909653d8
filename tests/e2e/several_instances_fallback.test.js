// Several instances (issue 13, rfc/0003): the fallback load bound. Three
// instances on one database and one data directory, 1,000 raw HTTP clients
// spread over them (client i on instance i % 3, shape floor(i / 3) % 3, so
// every instance has clients of every shape), long-polling three shapes, one
// table each. REPLICATION is revoked from the proxies' role, so every
// instance serves fallback, while a writer inserts into the three tables.
// Checked:
//   - every instance reports fallback, and the clients' responses are
//     flagged `electric-fallback-mode: true`;
//   - at most 3 fallback queries per shape per poll interval across the
//     instances (the bound), counted on the database side: each
//     fallback query of a shape is one scan of its table
//     (pg_stat_user_tables; autovacuum, whose ANALYZE counts as one, is off
//     for them), over the whole episode, from the revoke to live again;
//   - that count equals the instances' own (shapeproxy_fallback_queries_total
//     on /metrics, summed), less the one snapshot scan per table;
//   - after replication is restored, every client holds the rows of SELECT.
import assert from 'node:assert/strict'
import http from 'node:http'
import { test } from 'node:test'
import { leaderOf, startInstance, waitForOneLeader } from './cluster.js'
import pg from 'pg'
import { POLL_MS, proxyArgs, sleep } from './faults.js'
import { useHarness, waitFor } from './harness.js'

const CLIENTS = 1_000
const TABLES = ['t0', 't1', 't2']
const h = useHarness({ name: 'several_instances_fallback', leastPrivilege: true, proxyArgs: [...proxyArgs, '--instance-id', 'i1'] })

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity })
h.onCleanup(() => agent.destroy())

let instances
let stopped = false
const clients = [] // {table, instance, keys, responses, flagged, errors}

// GET url: resolves {status, headers, body (parsed JSON)}.
function get(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent }, (response) => {
      const chunks = []
      response.on('data', (chunk) => chunks.push(chunk))
      response.on('end', () => {
        try {
          const text = Buffer.concat(chunks).toString('utf8')
          resolve({ status: response.statusCode, headers: response.headers, body: text ? JSON.parse(text) : null })
        } catch (error) {
          reject(error)
        }
      })
      response.on('error', reject)
    })
    request.setTimeout(60_000, () => request.destroy(new Error('request timed out')))
    request.on('error', reject)
  })
}

// One raw client: follows the shape from offset=-1, then long-polls, keeping
// the keys it holds; 503s are retried after their retry-after, as the stock
// client does. Runs until `stopped`.
async function runClient(client) {
  let query = { table: client.table, offset: '-1' }
  while (!stopped) {
    let response
    try {
      response = await get(`http://127.0.0.1:${client.instance.port}/v1/shape?${new URLSearchParams(query)}`)
    } catch (error) {
      if (stopped) return
      client.errors.push(error.message)
      throw error
    }
    client.responses++
    if (response.headers['electric-fallback-mode'] === 'true') client.flagged++
    if (response.status === 503 && Number(response.headers['retry-after']) > 0) {
      await sleep(Number(response.headers['retry-after']) * 1_000)
      continue
    }
    if (response.status !== 200) {
      client.errors.push(`${response.status} ${JSON.stringify(response.body)}`)
      throw new Error(`client on ${client.instance.id}: ${response.status} ${JSON.stringify(response.body)}`)
    }
    for (const message of response.body) {
      const operation = message.headers?.operation
      if (operation === 'insert') client.keys.add(message.key)
      else if (operation === 'delete') client.keys.delete(message.key)
    }
    const { 'electric-handle': handle, 'electric-offset': offset, 'electric-cursor': cursor } = response.headers
    const upToDate = 'electric-up-to-date' in response.headers
    query = { table: client.table, handle, offset, ...(upToDate ? { live: 'true' } : {}), ...(cursor ? { cursor } : {}) }
  }
}

// Scans (sequential and index) of each table so far, as the database counts
// them; other backends' counts reach pg_stat_user_tables when they flush.
async function scans() {
  const { rows } = await h.sql(
    `SELECT relname, (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::int AS n
       FROM pg_stat_user_tables WHERE relname = ANY($1)`,
    [TABLES],
  )
  return Object.fromEntries(TABLES.map((t) => [t, rows.find((r) => r.relname === t)?.n ?? 0]))
}

// shapeproxy_fallback_queries_total of one instance, by outcome.
async function fallbackQueries(instance) {
  const text = await (await fetch(`http://127.0.0.1:${instance.port}/metrics`)).text()
  const counts = {}
  for (const match of text.matchAll(/^shapeproxy_fallback_queries_total\{outcome="([^"]+)"\} (\d+)$/gm)) {
    counts[match[1]] = Number(match[2])
  }
  return counts
}

async function statuses() {
  return (await leaderOf(instances)).states.map((s) => s?.status)
}

test(`${CLIENTS} clients over 3 instances in fallback: at most 3 queries per shape per poll interval`, { timeout: 240_000 }, async () => {
  await h.ready
  instances = [{ id: 'i1', port: h.port, proxy: h.proxy }]
  for (const id of ['i2', 'i3']) instances.push(await startInstance(h, id))
  assert.equal((await waitForOneLeader(instances)).id, 'i1')
  // The tables, made by a session of their own that then ends: a backend
  // flushes its table counts when it exits, so the baseline below holds every
  // scan made so far (the primary key's index build counts as one).
  const creator = new pg.Client({ connectionString: h.appUri })
  await creator.connect()
  const { pid } = (await creator.query('SELECT pg_backend_pid() AS pid')).rows[0]
  for (const table of TABLES) {
    await creator.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, val int4 NOT NULL)`)
    await creator.query(`INSERT INTO ${table} SELECT g, 0 FROM generate_series(1, 100) g`)
    // Autovacuum's ANALYZE counts as a scan of the table: none here.
    await creator.query(`ALTER TABLE ${table} SET (autovacuum_enabled = off)`)
  }
  await creator.end()
  await waitFor(async () => (await h.sql('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0, 10_000, {
    what: 'the tables\' session to end',
  })
  const baseline = await scans()

  for (let i = 0; i < CLIENTS; i++) {
    clients.push({ table: TABLES[Math.floor(i / 3) % 3], instance: instances[i % 3], keys: new Set(), responses: 0, flagged: 0, errors: [] })
  }
  const running = clients.map((client) => runClient(client))
  running.forEach((run) => run.catch(() => {})) // checked below, after stopping
  await waitFor(() => clients.every((c) => c.keys.size === 100), 60_000, { intervalMs: 50, what: 'every client to hold its 100 rows' })
  await waitFor(async () => (await statuses()).every((s) => s === 'live'), 30_000, { intervalMs: 50, what: 'live everywhere' })
  const queriesBefore = await Promise.all(instances.map(fallbackQueries))

  // --- the fallback episode ---
  const startedAt = Date.now()
  await h.breakReplication()
  await waitFor(async () => (await statuses()).every((s) => s === 'fallback'), 30_000, { intervalMs: 50, what: 'fallback everywhere' })
  const flaggedBefore = clients.reduce((sum, c) => sum + c.flagged, 0)
  // A writer: inserts into every table; each insert reaches the clients
  // through the fallback refreshes. Ten poll intervals' worth.
  let nextId = 1_000
  const rounds = 10
  for (let round = 0; round < rounds; round++) {
    for (const table of TABLES) await h.sql(`INSERT INTO ${table} (id, val) VALUES ($1, 0)`, [nextId])
    nextId++
    // Every client holds the round's rows before the next round: one
    // insert per table per poll interval at most, as the refreshes see it.
    await waitFor(() => clients.every((c) => c.keys.size === 100 + round + 1), 30_000, {
      intervalMs: 20,
      what: `every client to hold round ${round + 1}'s row in fallback`,
    })
  }
  const flagged = clients.reduce((sum, c) => sum + c.flagged, 0) - flaggedBefore
  assert.ok(flagged >= CLIENTS * rounds, `${flagged} flagged responses during the episode`)
  assert.ok((await statuses()).every((s) => s === 'fallback'), 'still fallback everywhere')
  await h.restoreReplication()
  await waitFor(async () => (await statuses()).every((s) => s === 'live'), 60_000, { intervalMs: 50, what: 'live again everywhere' })
  const endedAt = Date.now()

  // --- the count ---
  const queriesAfter = await Promise.all(instances.map(fallbackQueries))
  const perInstance = instances.map((instance, i) => {
    const outcomes = new Set([...Object.keys(queriesBefore[i]), ...Object.keys(queriesAfter[i])])
    return Object.fromEntries([...outcomes].map((o) => [o, (queriesAfter[i][o] ?? 0) - (queriesBefore[i][o] ?? 0)]))
  })
  const proxiesCount = perInstance.reduce((sum, counts) => sum + Object.values(counts).reduce((a, b) => a + b, 0), 0)
  assert.ok(proxiesCount > 0, 'the instances ran fallback queries')
  // The database's count catches up with the proxies' as backends flush.
  let byTable
  await waitFor(
    async () => {
      byTable = await scans()
      // Each table's scans since the baseline: its shape's snapshot, then
      // its fallback queries.
      return TABLES.reduce((sum, t) => sum + byTable[t] - baseline[t] - 1, 0) === proxiesCount
    },
    30_000,
    { intervalMs: 100, what: `the database to count the ${proxiesCount} fallback queries the instances report` },
  ).catch(async (error) => {
    const { rows } = await h.sql('SELECT * FROM pg_stat_user_tables WHERE relname = ANY($1)', [TABLES])
    error.message += `; scans per table ${JSON.stringify(byTable)} (baseline ${JSON.stringify(baseline)}), instances ${JSON.stringify(perInstance)}; ${JSON.stringify(rows)}`
    throw error
  })
  const intervals = Math.floor((endedAt - startedAt) / POLL_MS) + 1
  const bound = 3 * intervals
  const perShape = Object.fromEntries(TABLES.map((t) => [t, byTable[t] - baseline[t] - 1]))
  process.stderr.write(
    `[several_instances_fallback] ${endedAt - startedAt} ms from revoke to live (${intervals} poll intervals, bound ${bound} per shape): ` +
      `queries per shape ${JSON.stringify(perShape)}; per instance ${JSON.stringify(perInstance)}; ` +
      `${clients.reduce((sum, c) => sum + c.responses, 0)} responses, ${flagged} flagged\n`,
  )
  for (const table of TABLES) assert.ok(perShape[table] <= bound, `shape of ${table}: ${perShape[table]} queries, more than ${bound}`)

  // --- the clients hold SELECT, live again ---
  for (const table of TABLES) await h.sql(`INSERT INTO ${table} (id, val) VALUES ($1, 0)`, [nextId])
  const expected = Object.fromEntries(
    await Promise.all(TABLES.map(async (t) => [t, (await h.sql(`SELECT count(*)::int AS n FROM ${t}`)).rows[0].n])),
  )
  await waitFor(() => clients.every((c) => c.keys.size === expected[c.table]), 30_000, { intervalMs: 50, what: 'every client to hold SELECT' })
  stopped = true
  agent.destroy()
  await Promise.allSettled(running)
  assert.deepEqual(clients.flatMap((c) => c.errors).slice(0, 5), [], 'no client failed')
})
