// 1,000 concurrent live long-polls on one shape all receive one commit.
// Raw HTTP (node:http with an unlimited agent) rather than 1,000
// ShapeStreams: the point is the proxy's fan-out, not the client's CPU.
import assert from 'node:assert/strict'
import http from 'node:http'
import { test } from 'node:test'
import { useHarness } from './harness.js'

const h = useHarness({ name: 'fanout' })
const CLIENTS = 1_000
const MAX_LATENCY_MS = Number(process.env.E2E_FANOUT_MAX_LATENCY_MS ?? 5_000)

// One keep-alive-less socket per request, no pooling limit.
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity })
h.onCleanup(() => agent.destroy())

// GET url: resolves {status, headers, body (parsed JSON), at}.
function get(url, { onSent } = {}) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent }, (response) => {
      const chunks = []
      response.on('data', (chunk) => chunks.push(chunk))
      response.on('end', () => {
        const at = Date.now()
        try {
          const text = Buffer.concat(chunks).toString('utf8')
          resolve({ status: response.statusCode, headers: response.headers, body: text ? JSON.parse(text) : null, at })
        } catch (error) {
          reject(error)
        }
      })
      response.on('error', reject)
    })
    request.setTimeout(60_000, () => request.destroy(new Error('request timed out')))
    request.on('error', reject)
    // 'finish': the request is fully written to the socket.
    if (onSent) request.on('finish', onSent)
  })
}

const shapeUrl = (query) => `${h.shapeUrl}?${new URLSearchParams(query)}`

// Reads the shape up to date: resolves {handle, offset, cursor}.
async function catchUp(table) {
  let query = { table, offset: '-1' }
  for (let i = 0; i < 100; i++) {
    const response = await get(shapeUrl(query))
    assert.equal(response.status, 200, JSON.stringify(response.body))
    const handle = response.headers['electric-handle']
    const offset = response.headers['electric-offset']
    if ('electric-up-to-date' in response.headers) return { handle, offset }
    query = { table, handle, offset }
  }
  throw new Error('shape never became up to date')
}

// One live client: long-polls from `offset` until a response carries the
// row with id `id`; resolves with that response's arrival time.
async function liveClient({ table, handle, offset, id, onFirstSent, deadline }) {
  let cursor
  let first = true
  while (Date.now() < deadline) {
    const query = { table, handle, offset, live: 'true', ...(cursor ? { cursor } : {}) }
    const response = await get(shapeUrl(query), { onSent: first ? onFirstSent : undefined })
    first = false
    assert.equal(response.status, 200, `live poll: ${response.status} ${JSON.stringify(response.body)}`)
    const hit = response.body.some((m) => m.headers?.operation === 'insert' && String(m.value?.id) === String(id))
    if (hit) return response.at
    offset = response.headers['electric-offset']
    cursor = response.headers['electric-cursor']
  }
  throw new Error(`row ${id} not received before the deadline`)
}

test(`${CLIENTS} concurrent live clients all receive one commit`, { timeout: 120_000 }, async (t) => {
  await h.sql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO items SELECT g, 't' || g FROM generate_series(1, 10) g`)
  const { handle, offset } = await catchUp('items')

  // Start every client and wait until each has written its request.
  let sent = 0
  let allSent
  const allSentPromise = new Promise((resolve) => (allSent = resolve))
  const onFirstSent = () => ++sent === CLIENTS && allSent()
  const deadline = Date.now() + 60_000
  const clients = Array.from({ length: CLIENTS }, () =>
    liveClient({ table: 'items', handle, offset, id: 4242, onFirstSent, deadline }).then(
      (at) => ({ at }),
      (error) => ({ error }),
    ),
  )
  // (or until they all failed, e.g. connection refused). A request written
  // but not yet read by the proxy still gets the row: it asks for what comes
  // after `offset`, so the commit below cannot be missed.
  await Promise.race([allSentPromise, Promise.all(clients)])

  await h.sql(`INSERT INTO items VALUES (4242, 'fan-out')`)
  const committedAt = Date.now()
  const results = await Promise.all(clients)

  const failures = results.filter((r) => r.error)
  const latencies = results.filter((r) => !r.error).map((r) => Math.max(0, r.at - committedAt)).sort((a, b) => a - b)
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]
  if (latencies.length > 0) {
    t.diagnostic(`${latencies.length}/${CLIENTS} clients got the row; latency p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${latencies.at(-1)} ms`)
  }
  assert.equal(failures.length, 0, `${failures.length} clients failed, e.g. ${failures[0]?.error?.message}`)
  assert.equal(latencies.length, CLIENTS)
  assert.ok(latencies.at(-1) < MAX_LATENCY_MS, `max latency ${latencies.at(-1)} ms`)
})
