// What an operator scrapes and ships: /metrics passes `promtool check metrics`
// and splits requests by kind (snapshot, catch-up, live, status) with bytes
// served, process_* and build info; the proxy's log is JSON, one object per
// line (ts in UTC with ms, level, module, msg), with the access log's fields,
// and the shape secret never appears in it.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'
import { program } from './programs.js'

const SECRET = 'observability-s3cret'
const h = useHarness({
  name: 'observability',
  proxyArgs: ['--log-format', 'json', '--access-log', '--secret', SECRET, '--long-poll-timeout-ms', '300'],
})

let logMark
let handle

async function get(path) {
  const response = await fetch(`${h.baseUrl}${path}`)
  const body = await response.text()
  return { status: response.status, headers: response.headers, body }
}

function metricValue(text, name, labels = '') {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

before(async () => {
  await h.ready
  await h.sql('CREATE TABLE obs_items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.sql(`INSERT INTO obs_items SELECT g, 'row ' || g FROM generate_series(1, 20) g`)
  logMark = h.proxy.mark()
  const snapshot = await get(`/v1/shape?table=obs_items&offset=-1&secret=${SECRET}`)
  assert.equal(snapshot.status, 200, snapshot.body)
  handle = snapshot.headers.get('electric-handle')
  const offset = snapshot.headers.get('electric-offset')
  const catchUp = await get(`/v1/shape?table=obs_items&offset=${offset}&handle=${handle}&secret=${SECRET}`)
  assert.equal(catchUp.status, 200, catchUp.body)
  const live = await get(
    `/v1/shape?table=obs_items&offset=${catchUp.headers.get('electric-offset')}&handle=${handle}&live=true&secret=${SECRET}`,
  )
  assert.ok([200, 204].includes(live.status), `live: ${live.status} ${live.body}`)
  assert.equal((await get('/v1/status')).status, 200)
})

test('/metrics: request kinds, bytes served, process and build info; promtool check metrics is clean', async () => {
  // Every request above is counted once its response is written: wait for the live one.
  const text = await h.waitFor(async () => {
    const { body } = await get('/metrics')
    return (metricValue(body, 'shapeproxy_request_duration_seconds_count', 'kind="live"') ?? 0) >= 1 && body
  }, 10_000, { what: 'the live request in /metrics' })
  for (const kind of ['snapshot', 'catch-up', 'live', 'status']) {
    assert.ok(metricValue(text, 'shapeproxy_request_duration_seconds_count', `kind="${kind}"`) >= 1, kind)
  }
  assert.ok(metricValue(text, 'shapeproxy_response_body_bytes_total', 'kind="snapshot"') > 0)
  assert.ok(metricValue(text, 'process_resident_memory_bytes') > 1_000_000)
  assert.ok(metricValue(text, 'process_open_fds') > 3)
  assert.ok(metricValue(text, 'process_max_fds') >= metricValue(text, 'process_open_fds'))
  const start = metricValue(text, 'process_start_time_seconds')
  assert.ok(Math.abs(start - Date.now() / 1000) < 3600, `start time ${start}`)
  assert.ok(metricValue(text, 'process_cpu_seconds_total') > 0)
  assert.match(text, /^shapeproxy_build_info\{version="[^"]+",compiler="[^"]+"\} 1$/m)
  assert.equal(metricValue(text, 'shapeproxy_shapes_by_state', 'state="ready"'), 1)
  assert.equal(metricValue(text, 'shapeproxy_replication_reconnects_total'), 0)
  assert.equal(metricValue(text, 'shapeproxy_fallback_queries_total', 'outcome="ok"'), 0)
  assert.match(text, /^shapeproxy_fallback_query_duration_seconds_bucket\{outcome="ok",le="\+Inf"\} 0$/m)

  const check = spawnSync(program('promtool'), ['check', 'metrics'], { input: text, encoding: 'utf8' })
  assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`)
  assert.equal(`${check.stdout}${check.stderr}`.trim(), '', 'no lint problems')
})

test('the log is JSON lines; the access log has method, path without the secret, status, bytes, duration, kind, handle', async () => {
  const entries = await h.waitFor(() => {
    const lines = h.proxy.logsSince(logMark).filter((line) => !line.startsWith('[harness]'))
    const parsed = lines.map((line) => JSON.parse(line)) // throws on a line that is not one object
    // Each request is logged once its response is sent, which the client may
    // see first: wait for every kind asserted below.
    const kinds = new Set(parsed.filter((e) => e.module === 'access').map((e) => e.kind))
    return ['live', 'snapshot', 'catch-up', 'status'].every((kind) => kinds.has(kind)) && parsed
  }, 10_000, { what: 'the live, snapshot, catch-up and status requests in the access log' })
  for (const entry of entries) {
    assert.match(entry.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.ok(['trace', 'debug', 'info', 'warn', 'error', 'critical'].includes(entry.level), entry.level)
    assert.equal(typeof entry.module, 'string')
    assert.equal(typeof entry.msg, 'string')
  }
  const access = entries.filter((e) => e.module === 'access')
  const snapshot = access.find((e) => e.kind === 'snapshot')
  assert.ok(snapshot, 'the snapshot request is logged')
  assert.equal(snapshot.method, 'GET')
  assert.equal(snapshot.path, '/v1/shape?table=obs_items&offset=-1')
  assert.equal(snapshot.status, 200)
  assert.ok(snapshot.bytes > 0)
  assert.equal(typeof snapshot.duration_ms, 'number')
  assert.equal(snapshot.handle, handle)
  assert.ok(access.some((e) => e.kind === 'catch-up'))
  assert.ok(access.some((e) => e.kind === 'status' && e.path === '/v1/status'))
  // (The harness's own "[harness] starting ... --secret ..." line is not the proxy's.)
  const proxyLines = h.proxy.logsSince(0).filter((line) => !line.startsWith('[harness]'))
  assert.ok(!proxyLines.join('\n').includes(SECRET), 'the secret never appears in the log')
})
