// /v1/status behind a CDN: nginx as a caching reverse proxy (proxy_cache
// honouring the proxy's Cache-Control, proxy_cache_lock so concurrent misses
// coalesce) in front of the proxy, 1,000 clients polling /v1/status through
// it for about three max-age windows. The proxy must see at most one request
// per max-age window: counted by the proxy itself (/metrics request
// counter) and by nginx (requests it passed upstream, from its access log).
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, test } from 'node:test'
import { Agent, get } from 'node:http'
import { freePort, useHarness, waitFor } from './harness.js'
import { program } from './programs.js'

const MAX_AGE_S = 1
const CLIENTS = 1_000
const DURATION_MS = 3_000 // about three max-age windows
const POLL_MS = 250 // each client polls this often (with jitter)

const h = useHarness({ name: 'cdn_status', proxyArgs: ['--status-max-age-s', String(MAX_AGE_S)] })

let nginx // { url, accessLog, stop() }

async function startNginx(upstreamPort) {
  const dir = mkdtempSync(join(tmpdir(), 'shapeproxy-cdn-'))
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
worker_rlimit_nofile 8192;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path ${dir}/tmp_body;
  proxy_temp_path ${dir}/tmp_proxy;
  fastcgi_temp_path ${dir}/tmp_fastcgi;
  uwsgi_temp_path ${dir}/tmp_uwsgi;
  scgi_temp_path ${dir}/tmp_scgi;
  proxy_cache_path ${dir}/cache levels=1 keys_zone=status:1m;
  # One line per request: whether it went upstream, and to where.
  log_format cdn '$msec $upstream_cache_status $upstream_addr $status';
  access_log ${dir}/access.log cdn;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache status;               # freshness from the upstream's Cache-Control
      proxy_cache_lock on;              # concurrent misses wait for one upstream request
      proxy_cache_lock_timeout 10s;
      proxy_cache_use_stale updating;   # one request refreshes an expired entry
      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
}
`,
  )
  const child = spawn(program('nginx'), ['-p', dir, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  const stderr = []
  child.stderr.setEncoding('utf8').on('data', (chunk) => stderr.push(chunk))
  process.on('exit', () => child.kill('SIGTERM')) // the master stops its worker too
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => {
      if (child.exitCode !== null) {
        const error = new Error(`nginx exited: ${stderr.join('')}`)
        error.stopWaiting = true
        throw error
      }
      try {
        return (await fetch(`${url}/v1/health`)).ok
      } catch {
        return false
      }
    },
    10_000,
    { intervalMs: 50, what: 'nginx to answer' },
  )
  return {
    url,
    accessLog: join(dir, 'access.log'),
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

// GET over `agent`: {status, headers, body (parsed JSON)}.
function getJson(url, agent) {
  return new Promise((resolve, reject) => {
    const request = get(url, { agent, timeout: 10_000 }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => (text += chunk))
      response.on('end', () => {
        try {
          resolve({ status: response.statusCode, headers: response.headers, body: JSON.parse(text) })
        } catch (error) {
          reject(error)
        }
      })
      response.on('error', reject)
    })
    request.on('timeout', () => request.destroy(new Error('timed out')))
    request.on('error', reject)
  })
}

// GET /v1/status requests the proxy has answered, from its own /metrics.
async function upstreamStatusRequests() {
  const text = await (await fetch(`${h.baseUrl}/metrics`)).text()
  let total = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('shapeproxy_http_requests_total{') && line.includes('route="/v1/status"')) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return total
}

// nginx access log lines since `from` (bytes) that went upstream.
function nginxUpstreamLines(from) {
  const lines = readFileSync(nginx.accessLog, 'utf8').slice(from).split('\n').filter(Boolean)
  return { all: lines, upstream: lines.filter((line) => line.split(' ')[2] !== '-') }
}

before(async () => {
  await h.ready
  nginx = await startNginx(h.port)
  h.onCleanup(() => nginx.stop())
})

test(`${CLIENTS} clients polling /v1/status through nginx cost at most one upstream request per max-age window`, async () => {
  // The proxy's answer is cacheable for max-age seconds.
  const direct = await h.status()
  assert.equal(direct.status, 200)
  assert.match(direct.headers.get('cache-control'), new RegExp(`public, max-age=${MAX_AGE_S}\\b`))

  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  const logStart = readFileSync(nginx.accessLog).length
  const before = await upstreamStatusRequests()
  const started = Date.now()
  const outcomes = { ok: 0, other: [], cacheStatus: {} }
  const perClient = new Array(CLIENTS).fill(0)
  const client = async (index) => {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * POLL_MS))
    while (Date.now() - started < DURATION_MS || perClient[index] < 2) {
      const polled = Date.now()
      try {
        const response = await getJson(`${nginx.url}/v1/status`, agent)
        const { body } = response
        const cache = response.headers['x-cache-status'] ?? 'none'
        outcomes.cacheStatus[cache] = (outcomes.cacheStatus[cache] ?? 0) + 1
        if (response.status === 200 && typeof body.status === 'string') outcomes.ok++
        else outcomes.other.push(response.status)
      } catch (error) {
        outcomes.other.push(error.message)
      }
      perClient[index]++
      const wait = POLL_MS * (0.5 + Math.random()) - (Date.now() - polled)
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)))
  const elapsedMs = Date.now() - started
  agent.destroy()
  const upstream = (await upstreamStatusRequests()) - before
  const nginxLines = nginxUpstreamLines(logStart)

  // Requests reach the proxy at least max-age apart (an entry is fresh for
  // max-age after its response arrived; nginx counts in whole seconds, so in
  // practice 1-2 s for max-age=1), so a span of T seconds holds at most
  // floor(T / max-age) + 1 of them.
  const windows = Math.floor(elapsedMs / (MAX_AGE_S * 1000)) + 1
  const summary = JSON.stringify({
    elapsedMs,
    windows,
    upstream,
    nginxUpstream: nginxLines.upstream.length,
    requests: nginxLines.all.length,
    ok: outcomes.ok,
    cacheStatus: outcomes.cacheStatus,
    failures: outcomes.other.slice(0, 5),
    upstreamLines: nginxLines.upstream, first: nginxLines.all[0], last: nginxLines.all.at(-1),
  })
  h.log(`cdn: ${summary}`)
  assert.deepEqual(outcomes.other, [], summary)
  assert.ok(perClient.every((n) => n >= 2), `every client polled more than once: ${summary}`)
  assert.ok(outcomes.ok >= 2 * CLIENTS, summary)
  // nginx honours max-age: the entry expires and is fetched again.
  assert.ok(upstream >= 2, `nginx went upstream again after max-age: ${summary}`)
  assert.ok(upstream <= windows, `at most one upstream request per max-age window: ${summary}`)
  // nginx agrees with the proxy's count.
  assert.equal(nginxLines.upstream.length, upstream, summary)
})
