// The e2e harness: one throwaway PostgreSQL cluster and one shapeproxy per
// test file (node --test runs each file in its own process, so files run in
// parallel without sharing anything).
//
//   import { useHarness } from './harness.js'
//   const h = useHarness()            // registers before/after/afterEach hooks
//   before(async () => { await h.ready; ... })   // Node 20 runs top-level hooks concurrently
//   test('...', async () => { await h.sql('INSERT ...'); fetch(h.shapeUrl) })
//
// Options: createHarness/useHarness({ name, proxyArgs, maxLogLines, leastPrivilege }).
// With `leastPrivilege: true` the proxy connects as `h.appRole`, a role with
// LOGIN REPLICATION, CREATE on this file's database and CREATE on its public
// schema, and nothing else (not superuser): create the tables it serves with
// `h.appSql(...)` so it owns them (it must, to add them to its publication).
//
// Beyond sql/start/stop (see below), for fault tests:
//   h.appSql(text, params)   SQL as h.appRole (leastPrivilege only; h.appUri)
//   h.status({headers})      GET /v1/status -> {status, body, headers}
//   h.waitForStatus(value, timeoutMs)  polls /v1/status until body.status is
//                            `value`; resolves with the ms it took
//   h.terminateWalsender()   pg_terminate_backend on the walsender streaming the
//                            proxy's slot (waits for one to be active, then for
//                            it to be gone); resolves with its pid
//   h.breakReplication()     ALTER ROLE appRole NOREPLICATION and terminate its
//                            walsender(s) until none is active (leastPrivilege)
//   h.restoreReplication()   ALTER ROLE appRole REPLICATION
//   h.slotInfo()             the proxy slot's pg_replication_slots row (or null)
//
// Binaries come from the environment:
//   SHAPEPROXY_TEST_CLUSTER  the shapeproxy_test_cluster launcher
//   SHAPEPROXY_BIN           the proxy
// Everything started here is stopped in after(), and killed on process exit
// if after() never ran. Proxy logs are printed when a test fails.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, afterEach, before } from 'node:test'
import pg from 'pg'
import { program } from './programs.js'

// How long the cluster and the proxy may take to come up.
const CLUSTER_START_TIMEOUT_MS = 60_000
const PROXY_START_TIMEOUT_MS = 30_000
const PROXY_STOP_TIMEOUT_MS = 10_000
// Proxy log lines kept for printing on failure.
const MAX_LOG_LINES = 2_000

// setpriv (util-linux) makes a child get SIGKILL when this process dies,
// even by SIGKILL; used for the proxy. (The cluster launcher
// stops by itself when its stdin closes.)
const SETPRIV = program('setpriv')

// Spawns `bin` (stdout/stderr piped) so that it gets SIGKILL when this
// process dies.
export function spawnGuarded(bin, args) {
  return spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
}

// Children to kill synchronously if the process exits without after().
const liveChildren = new Set()
process.on('exit', () => {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL')
    } catch {}
  }
})
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)))
}

function requireEnv(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set (see tests/e2e/README.md)`)
  return value
}

// Polls `predicate` (sync or async) until it returns a truthy value, which is
// returned. Throws after `timeoutMs` with `what` and the last error, if any;
// an error thrown by the predicate with `stopWaiting` set ends the wait at once.
export async function waitFor(predicate, timeoutMs = 5_000, { intervalMs = 10, what } = {}) {
  const deadline = Date.now() + timeoutMs
  let lastError
  for (;;) {
    try {
      const value = await predicate()
      if (value) return value
    } catch (error) {
      if (error.stopWaiting) throw error
      lastError = error
    }
    if (Date.now() >= deadline) {
      const label = what ?? predicate.toString().slice(0, 120)
      const cause = lastError ? ` (last error: ${lastError.message})` : ''
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}${cause}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

// A port nobody listens on right now, on IPv6 and IPv4 (the proxy listens
// dual-stack by default).
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '::', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// Resolves with the child's exit, or after timeoutMs with null.
function waitForExit(child, timeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve(code)
    })
  })
}

// Starts shapeproxy_test_cluster and resolves with the child and the JSON
// line it prints ({conninfo, uri, port, socket_dir}). The cluster stops when
// its stdin closes, so it also goes away if this process dies.
async function startCluster() {
  const bin = requireEnv('SHAPEPROXY_TEST_CLUSTER')
  const child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'pipe'] })
  liveChildren.add(child)
  child.on('exit', () => liveChildren.delete(child))
  const stderr = []
  child.stderr.setEncoding('utf8').on('data', (chunk) => stderr.push(chunk))
  const lines = createInterface({ input: child.stdout })
  try {
    const info = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('timed out waiting for the cluster')),
        CLUSTER_START_TIMEOUT_MS,
      )
      // The JSON line; anything else on stdout is passed on as a log line.
      lines.on('line', (line) => {
        if (!line.startsWith('{')) return stderr.push(`${line}\n`)
        clearTimeout(timer)
        lines.removeAllListeners('line')
        resolve(JSON.parse(line))
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`shapeproxy_test_cluster exited with ${code}`))
      })
      child.once('error', reject)
    })
    // Later stdout lines answer control commands (see clusterCommand).
    const cluster = { child, info, stderr, lines, waiting: [], queue: Promise.resolve() }
    lines.on('line', (line) => {
      const waiter = cluster.waiting.shift()
      if (waiter) waiter(line)
      else stderr.push(`${line}\n`)
    })
    return cluster
  } catch (error) {
    child.kill('SIGKILL')
    throw new Error(`${error.message}\n${stderr.join('')}`)
  }
}

// Sends one control line to the launcher ("stop", "start", "status") and
// resolves with its answer ("ok ..."); rejects on "error ..." or timeout.
// Commands are serialized.
function clusterCommand(cluster, command, timeoutMs = 60_000) {
  const run = async () => {
    if (cluster.child.exitCode !== null || cluster.child.signalCode !== null) {
      throw new Error(`cluster launcher has exited; cannot send "${command}"`)
    }
    const answer = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = cluster.waiting.indexOf(onLine)
        if (index >= 0) cluster.waiting.splice(index, 1)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for the cluster to answer "${command}"`))
      }, timeoutMs)
      const onLine = (line) => {
        clearTimeout(timer)
        resolve(line)
      }
      cluster.waiting.push(onLine)
      cluster.child.stdin.write(`${command}\n`)
    })
    if (!answer.startsWith('ok')) {
      throw new Error(`cluster "${command}" failed: ${answer}\n${cluster.stderr.slice(-20).join('')}`)
    }
    return answer
  }
  const result = cluster.queue.then(run, run)
  cluster.queue = result.catch(() => {})
  return result
}

async function stopCluster(cluster) {
  if (!cluster) return
  cluster.child.stdin.end() // the launcher stops and removes the cluster
  if ((await waitForExit(cluster.child, 30_000)) === null) cluster.child.kill('SIGKILL')
}

// libpq key=value conninfo for another database of the same cluster.
function conninfoFor(info, database) {
  return `${info.conninfo.replace(/dbname=('(?:[^'\\]|\\.)*'|\S+)/, '').trim()} dbname=${database}`
}

function uriFor(info, database, user) {
  const url = new URL(info.uri)
  url.pathname = `/${database}`
  if (user) url.username = user
  return url.toString()
}

// The same conninfo as another user.
function conninfoAs(conninfo, user) {
  return `${conninfo.replace(/user=('(?:[^'\\]|\\.)*'|\S+)/, '').trim()} user=${user}`
}

const quoteIdent = (name) => `"${name.replace(/"/g, '""')}"`

// The proxy process: spawned with fixed data dir, slot and port, so a
// restart picks up where it left off.
export class ProxyProcess {
  constructor({ bin, args, name, maxLogLines = MAX_LOG_LINES }) {
    this.maxLogLines = maxLogLines
    this.bin = bin
    this.args = args
    this.name = name
    this.logs = []
    this.logged = 0 // lines ever logged
    this.printed = 0 // lines ever printed by dumpLogs
    this.child = null
    this.exits = [] // {code, signal} of every stop, for diagnostics
  }

  log(line) {
    this.logged++
    this.logs.push(line)
    if (this.logs.length > this.maxLogLines) this.logs.splice(0, this.logs.length - this.maxLogLines)
  }

  start() {
    this.log(`[harness] starting ${this.bin} ${this.args.join(' ')}`)
    const child = spawnGuarded(this.bin, this.args)
    this.child = child
    liveChildren.add(child)
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => this.log(line))
    }
    child.on('error', (error) => this.log(`[harness] spawn error: ${error.message}`))
    child.on('exit', (code, signal) => {
      liveChildren.delete(child)
      this.exits.push({ code, signal })
      this.log(`[harness] proxy exited (code ${code}, signal ${signal})`)
    })
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null
  }

  // SIGTERM, then SIGKILL if it has not exited in time. Resolves with the
  // exit code (null if it had to be killed). With {signal: 'SIGKILL'} the
  // proxy is killed outright (a crash) and this resolves once it is gone.
  async stop({ signal = 'SIGTERM' } = {}) {
    const child = this.child
    if (!child || !this.running) return child?.exitCode ?? null
    if (signal === 'SIGKILL') {
      this.log('[harness] sending SIGKILL')
      child.kill('SIGKILL')
      await waitForExit(child, PROXY_STOP_TIMEOUT_MS)
      if (this.running) throw new Error('proxy did not exit after SIGKILL')
      return null
    }
    child.kill(signal)
    const code = await waitForExit(child, PROXY_STOP_TIMEOUT_MS)
    if (code === null && this.running) {
      this.log('[harness] proxy ignored SIGTERM, sending SIGKILL')
      child.kill('SIGKILL')
      await waitForExit(child, 5_000)
    }
    return code
  }

  // A mark for logsSince(): the number of lines logged so far.
  mark() {
    return this.logged
  }

  // The (retained) log lines logged after `mark`.
  logsSince(mark) {
    const count = Math.min(this.logged - mark, this.logs.length)
    return count > 0 ? this.logs.slice(this.logs.length - count) : []
  }

  // Prints the log lines not printed yet (a failed hook fails every test).
  dumpLogs(header) {
    const fresh = this.logs.slice(Math.max(0, this.logs.length - (this.logged - this.printed)))
    this.printed = this.logged
    const body = fresh.length > 0 ? fresh.join('\n') : '(no new lines since the last dump)'
    process.stderr.write(`\n----- ${header}: proxy logs (${this.name}) -----\n${body}\n----- end of proxy logs -----\n`)
  }
}

let databaseCounter = 0

// Builds the harness object; useHarness() wires it into node:test.
export function createHarness({ proxyArgs = [], name = 'e2e', maxLogLines, leastPrivilege = false } = {}) {
  let markReady, markFailed
  const h = {
    // Settles when start() has finished. Node 20 does not await one
    // top-level before() hook before starting the next, so a file's own
    // setup hook must wait on this (sql() does so itself).
    ready: new Promise((resolve, reject) => {
      markReady = resolve
      markFailed = reject
    }),
    cluster: null, // {child, info, stderr}
    database: null, // name of this file's database
    databaseUri: null,
    databaseConninfo: null,
    pool: null,
    proxy: null,
    port: null,
    dataDir: null,
    slot: null,
    publication: null,
    leastPrivilege,
    appRole: null, // the proxy's role with leastPrivilege (else null: superuser)
    appPool: null,
    appUri: null, // postgresql:// URI of this file's database as appRole
    get baseUrl() {
      return `http://localhost:${h.port}`
    },
    get shapeUrl() {
      return `${h.baseUrl}/v1/shape`
    },
    get healthUrl() {
      return `${h.baseUrl}/v1/health`
    },
    get statusUrl() {
      return `${h.baseUrl}/v1/status`
    },
    cleanups: [], // functions run (newest first) before the proxy stops
    waitFor,

    // Runs SQL on this file's database; resolves with the pg result
    // (rows with pg's default parsing: int8 and numeric as strings).
    async sql(text, params) {
      await h.ready
      return h.pool.query(text, params)
    },

    // Runs SQL as h.appRole (leastPrivilege only): what it creates, it owns.
    async appSql(text, params) {
      await h.ready
      if (!h.appPool) throw new Error('appSql needs createHarness({ leastPrivilege: true })')
      return h.appPool.query(text, params)
    },

    // The pg_replication_slots row of the proxy's slot, or null.
    async slotInfo() {
      const { rows } = await h.sql('SELECT * FROM pg_replication_slots WHERE slot_name = $1', [h.slot])
      return rows[0] ?? null
    },

    // pg_terminate_backend on the walsender streaming the proxy's slot. Waits
    // up to `timeoutMs` for one to be active, terminates it, and waits until
    // that process is gone (so the proxy must reconnect). Resolves with its pid.
    async terminateWalsender({ timeoutMs = 30_000 } = {}) {
      const pid = await waitFor(async () => (await h.slotInfo())?.active_pid, timeoutMs, {
        intervalMs: 25,
        what: `an active walsender on slot ${h.slot}`,
      })
      await h.sql('SELECT pg_terminate_backend($1)', [pid])
      await waitFor(
        async () => (await h.sql('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0,
        timeoutMs,
        { intervalMs: 10, what: `walsender ${pid} to exit` },
      )
      h.log(`terminated walsender ${pid}`)
      return pid
    },

    // Takes the replication privilege away from the proxy's role and
    // terminates its walsender(s) until none is left or active on the slot
    // (a connection made just before the ALTER may still attach: retried).
    async breakReplication({ timeoutMs = 30_000 } = {}) {
      if (!h.appRole) throw new Error('breakReplication needs createHarness({ leastPrivilege: true })')
      await h.sql(`ALTER ROLE ${quoteIdent(h.appRole)} NOREPLICATION`)
      let quiet = 0
      let rounds = 0
      await waitFor(
        async () => {
          const { rows } = await h.sql(
            `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE backend_type = 'walsender' AND usename = $1
             UNION ALL
             SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = $2 AND active_pid IS NOT NULL`,
            [h.appRole, h.slot],
          )
          quiet = rows.length === 0 ? quiet + 1 : 0
          rounds++
          if (rows.length > 0) h.log(`breakReplication: terminated ${rows.map((r) => r.pid).join(',')}`)
          return quiet >= 3 // none on three checks in a row
        },
        timeoutMs,
        { intervalMs: 20, what: `no walsender of ${h.appRole} left` },
      )
      h.log(`replication privilege revoked from ${h.appRole} (${rounds} checks)`)
    },

    async restoreReplication() {
      if (!h.appRole) throw new Error('restoreReplication needs createHarness({ leastPrivilege: true })')
      await h.sql(`ALTER ROLE ${quoteIdent(h.appRole)} REPLICATION`)
      h.log(`replication privilege restored to ${h.appRole}`)
    },

    // GET /v1/status: {status, body, headers} (body parsed when JSON). A
    // connection error resolves with status 0.
    async status({ headers = {} } = {}) {
      return getParsed(h.statusUrl, headers)
    },

    // Polls /v1/status every `intervalMs` until its body's status is `value`
    // ('starting', 'live' or 'fallback'); resolves with the ms it took.
    async waitForStatus(value, timeoutMs = 10_000, { intervalMs = 50 } = {}) {
      const started = Date.now()
      let last
      try {
        await waitFor(
          async () => {
            last = await h.status()
            return last.body?.status === value
          },
          timeoutMs,
          { intervalMs, what: `/v1/status to say "${value}"` },
        )
      } catch (error) {
        error.message += `; last /v1/status: ${last?.status} ${JSON.stringify(last?.body)}`
        throw error
      }
      return Date.now() - started
    },

    // Registers something to close before the proxy stops (streams, agents).
    onCleanup(fn) {
      h.cleanups.push(fn)
    },

    async start() {
      try {
        await h.startAll()
        markReady()
      } catch (error) {
        markFailed(error)
        throw error
      }
    },

    async startAll() {
      const started = Date.now()
      h.cluster = await startCluster()
      const { info } = h.cluster
      const suffix = `${process.pid}_${++databaseCounter}`
      h.database = `e2e_${name.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${suffix}`
      h.databaseUri = uriFor(info, h.database)
      h.databaseConninfo = conninfoFor(info, h.database)
      const admin = new pg.Client({ connectionString: uriFor(info, 'postgres') })
      await admin.connect()
      try {
        await admin.query(`CREATE DATABASE "${h.database}"`)
      } finally {
        await admin.end()
      }
      h.pool = new pg.Pool({ connectionString: h.databaseUri, max: 4 })
      h.pool.on('error', () => {}) // idle clients dropped at teardown
      let proxyConninfo = h.databaseConninfo
      if (leastPrivilege) {
        h.appRole = `e2e_app_${suffix}`
        const role = quoteIdent(h.appRole)
        await h.pool.query(`CREATE ROLE ${role} LOGIN REPLICATION`)
        await h.pool.query(`GRANT CREATE ON DATABASE ${quoteIdent(h.database)} TO ${role}`)
        await h.pool.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${role}`)
        h.appUri = uriFor(info, h.database, h.appRole)
        h.appPool = new pg.Pool({ connectionString: h.appUri, max: 2 })
        h.appPool.on('error', () => {})
        proxyConninfo = conninfoAs(h.databaseConninfo, h.appRole)
      }

      h.port = await freePort()
      h.dataDir = mkdtempSync(join(tmpdir(), 'shapeproxy-e2e-data-'))
      h.slot = `e2e_${suffix}`
      h.publication = `e2e_${suffix}`
      h.proxy = new ProxyProcess({
        bin: requireEnv('SHAPEPROXY_BIN'),
        name,
        maxLogLines,
        args: [
          '--database-url', proxyConninfo,
          '--port', String(h.port),
          '--data-dir', h.dataDir,
          '--slot', h.slot,
          '--publication', h.publication,
          '--log-level', process.env.SHAPEPROXY_LOG_LEVEL ?? 'info',
          ...proxyArgs,
        ],
      })
      await h.startProxy()
      h.log(`cluster + proxy up in ${Date.now() - started} ms (proxy port ${h.port})`)
    },

    // Starts the proxy (again) and waits for /v1/health to answer 200 (or
    // one of `healthStatuses`, e.g. [200, 202] when PostgreSQL is down and
    // the proxy reports "starting").
    // `timeoutMs` for a start that loads much from disk (slow under ASan).
    async startProxy({ healthStatuses = [200], timeoutMs = PROXY_START_TIMEOUT_MS } = {}) {
      const mark = h.proxy.mark()
      h.proxy.start()
      let lastHealth = null
      try {
        await waitFor(async () => {
          if (!h.proxy.running) {
            const exited = new Error(`proxy exited: ${JSON.stringify(h.proxy.exits.at(-1))}`)
            exited.stopWaiting = true
            throw exited
          }
          lastHealth = await h.health()
          return healthStatuses.includes(lastHealth.status)
        }, timeoutMs, { intervalMs: 25, what: `GET /v1/health to return ${healthStatuses.join(' or ')}` })
      } catch (error) {
        // The start of this run's log (where start-up problems show), then its tail.
        const lines = h.proxy.logsSince(mark)
        const head = lines.slice(0, 40).join('\n')
        const tail = lines.length > 40 ? `\n...\n${lines.slice(-40).join('\n')}` : ''
        const health = lastHealth && `last health: ${lastHealth.status} ${JSON.stringify(lastHealth.body)}`
        throw new Error(
          `proxy did not become healthy: ${error.message}; ${health}\n--- proxy log since start ---\n${head}${tail}`,
        )
      }
    },

    // SIGTERM by default; stopProxy({signal: 'SIGKILL'}) simulates a crash.
    async stopProxy(options) {
      return h.proxy?.stop(options)
    },

    // Stops / starts this file's PostgreSQL server (same port and data) via
    // the launcher's stdin control channel. The pool's idle connections
    // die with the server; new queries reconnect.
    async stopPostgres() {
      await clusterCommand(h.cluster, 'stop')
      h.log('PostgreSQL stopped')
    },
    async startPostgres() {
      await clusterCommand(h.cluster, 'start')
      h.log('PostgreSQL started')
    },

    // SIGTERM the proxy, then start it again with the same data dir, slot
    // and port; resolves once it is healthy again.
    async restartProxy() {
      const code = await h.stopProxy()
      h.log(`proxy stopped with exit code ${code}; restarting`)
      await h.startProxy()
    },

    // GET /v1/health: {status, body, headers} (body parsed when JSON). A
    // connection error resolves with status 0.
    async health() {
      return getParsed(h.healthUrl)
    },

    log(message) {
      h.proxy?.log(`[harness] ${message}`)
      if (process.env.E2E_VERBOSE) process.stderr.write(`[${name}] ${message}\n`)
    },

    dumpLogs(header) {
      h.proxy?.dumpLogs(header)
    },

    async stop() {
      for (const fn of h.cleanups.splice(0).reverse()) {
        try {
          await fn()
        } catch {}
      }
      await h.pool?.end().catch(() => {})
      h.pool = null
      await h.appPool?.end().catch(() => {})
      h.appPool = null
      const proxyCode = await h.stopProxy()
      await stopCluster(h.cluster)
      h.cluster = null
      if (h.dataDir) rmSync(h.dataDir, { recursive: true, force: true })
      return proxyCode
    },
  }
  return h
}

// GET `url` (2 s timeout): {status, body, headers}, the body parsed when it
// is JSON. A connection error resolves with status 0 and a null body.
async function getParsed(url, headers = {}) {
  try {
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(2_000) })
    const text = await response.text()
    let body = text
    try {
      body = JSON.parse(text)
    } catch {}
    return { status: response.status, body, headers: response.headers }
  } catch {
    return { status: 0, body: null, headers: new Headers() }
  }
}

// Creates a harness and registers it with node:test: started in before(),
// stopped in after(), proxy logs printed after any failed test (or when
// E2E_SHOW_LOGS is set).
export function useHarness(options = {}) {
  const h = createHarness(options)
  let anyFailed = false
  before(async () => {
    try {
      await h.start()
    } catch (error) {
      anyFailed = true
      throw error
    }
  })
  afterEach((t) => {
    if (t.passed === false) {
      anyFailed = true
      h.dumpLogs(`test "${t.name}" failed`)
    }
  })
  after(async () => {
    const code = await h.stop()
    if (process.env.E2E_SHOW_LOGS && !anyFailed) h.dumpLogs('E2E_SHOW_LOGS')
    if (code !== null && code !== 0 && !anyFailed) {
      h.dumpLogs(`proxy exited with code ${code} at teardown`)
    }
  })
  return h
}
