// Shared pieces of the several-instances scenarios (rfc/0003; several_*.test.js):
// more instances of the harness's proxy on the same database, data directory
// and slot, each on its own port; who leads; haproxy round-robin in front of
// them; a sampler of the walsenders on the database; and a TCP relay that can
// cut one instance's connections to PostgreSQL.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from './faults.js'
import { ProxyProcess, freePort, spawnGuarded, waitFor } from './harness.js'
import { program } from './programs.js'

// The harness proxy's arguments with `--port`, `--instance-id` (which the
// harness's proxyArgs must hold) and, when given, `--database-url` replaced.
export function instanceArgs(h, { id, port, databaseUrl }) {
  const args = [...h.proxy.args]
  const set = (flag, value) => {
    const at = args.indexOf(flag)
    if (at < 0) throw new Error(`the harness's proxy has no ${flag}`)
    args[at + 1] = value
  }
  set('--port', String(port))
  set('--instance-id', id)
  if (databaseUrl) set('--database-url', databaseUrl)
  return args
}

// Starts one more instance (an {id, port, proxy}); stopped at cleanup.
export async function startInstance(h, id, { databaseUrl } = {}) {
  const port = await freePort()
  const proxy = new ProxyProcess({ bin: h.proxy.bin, args: instanceArgs(h, { id, port, databaseUrl }), name: id, maxLogLines: 20_000 })
  proxy.start()
  h.onCleanup(() => proxy.stop())
  return { id, port, proxy }
}

// GET /v1/status of one instance: the parsed body, or null.
export async function statusOf(instance) {
  try {
    const response = await fetch(`http://127.0.0.1:${instance.port}/v1/status`, { signal: AbortSignal.timeout(2_000) })
    return await response.json()
  } catch {
    return null
  }
}

// The instances that say they lead, and every instance's status.
export async function leaderOf(instances) {
  const states = await Promise.all(instances.map(statusOf))
  const leaders = instances.filter((_, i) => states[i]?.cluster?.role === 'leader')
  return { leaders, states }
}

// Waits until exactly one instance leads and every one names it.
export async function waitForOneLeader(instances, timeoutMs = 30_000) {
  await waitFor(
    async () => {
      const { leaders, states } = await leaderOf(instances)
      return leaders.length === 1 && states.every((s) => s?.cluster?.leader?.instance_id === leaders[0].id)
    },
    timeoutMs,
    { intervalMs: 50, what: 'one leader, known to all' },
  )
  return (await leaderOf(instances)).leaders[0]
}

// The pid of the walsender streaming the harness's slot, or null.
export async function slotPid(h) {
  const { rows } = await h.sql('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1', [h.slot])
  return rows[0]?.active_pid ?? null
}

// Waits until an instance other than `victim` leads alone and a walsender
// other than `beforePid` streams the slot; resolves with that instance.
export function waitForTakeover(h, instances, victim, beforePid, timeoutMs) {
  return waitFor(
    async () => {
      const { leaders } = await leaderOf(instances)
      const pid = await slotPid(h)
      return leaders.length === 1 && leaders[0] !== victim && pid && pid !== beforePid ? leaders[0] : null
    },
    timeoutMs,
    { intervalMs: 25, what: 'another instance to lead and stream' },
  )
}

// Samples the number of walsenders every 50 ms until stop(); `max` is the
// largest sample.
export class WalsenderSampler {
  constructor(h) {
    this.h = h
    this.samples = []
    this.stopped = false
  }

  start() {
    this.done = (async () => {
      while (!this.stopped) {
        const n = await this.h
          .sql("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'walsender'")
          .then(({ rows }) => rows[0].n)
          .catch(() => 0)
        this.samples.push(n)
        await sleep(50)
      }
    })()
    this.h.onCleanup(() => this.stop())
    return this
  }

  async stop() {
    this.stopped = true
    await this.done
  }

  get max() {
    return Math.max(0, ...this.samples)
  }
}

// haproxy round-robin over `ports`, no stickiness: {url, stop()}. An
// instance that refuses connections or dies before answering is retried on
// the next one (L7 retries), as a production balancer would be set up;
// checks only see that it is up.
export async function startBalancer(ports) {
  const dir = mkdtempSync(join(tmpdir(), 'shapeproxy-haproxy-'))
  const port = await freePort()
  const conf = join(dir, 'haproxy.cfg')
  writeFileSync(
    conf,
    `global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 90s
  timeout server 90s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend shapes
  bind 127.0.0.1:${port}
  default_backend instances
backend instances
  balance roundrobin
  option httpchk GET /v1/health
  http-check expect rstatus ^20[02]$
  default-server inter 200 fall 1 rise 1
${ports.map((p, i) => `  server i${i + 1} 127.0.0.1:${p} check`).join('\n')}
`,
  )
  const child = spawnGuarded(program('haproxy'), ['-db', '-f', conf])
  const stderr = []
  child.stderr.on('data', (chunk) => stderr.push(String(chunk)))
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw Object.assign(new Error(`haproxy exited: ${stderr.join('')}`), { stopWaiting: true })
      try {
        return (await fetch(`${url}/v1/health`)).status === 200
      } catch {
        return false
      }
    },
    10_000,
    { intervalMs: 50, what: 'haproxy to answer' },
  )
  return {
    url,
    stop: async () => {
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

// A TCP relay from a loopback port to PostgreSQL's (`targetPort`): an
// instance given `conninfo(h)` as its database URL reaches the database only
// through it. cut() resets every relayed connection (both sides see the
// connection end at once: PostgreSQL ends those sessions, releasing their
// advisory locks and the slot) and resets new ones as they arrive, as a
// firewall rejecting the instance's packets with TCP resets would;
// blackhole() drops everything silently instead (neither side learns
// anything: PostgreSQL keeps those sessions, their locks and the slot's
// walsender, until its own timeouts end them); heal() relays new
// connections again.
export class TcpRelay {
  constructor(targetPort) {
    this.targetPort = targetPort
    this.cutOff = false
    this.blackholed = false
    this.held = new Set()
    this.sockets = new Set()
    this.accepted = 0
    this.turnedAway = 0 // connections reset or held since a cut or blackhole
  }

  async start() {
    this.server = createServer((client) => {
      if (this.cutOff) {
        this.turnedAway++
        client.resetAndDestroy()
        return
      }
      if (this.blackholed) {
        this.turnedAway++
        this.held.add(client)
        client.on('error', () => {})
        client.pause()
        return
      }
      this.accepted++
      const upstream = connect(this.targetPort, '127.0.0.1')
      for (const [a, b] of [
        [client, upstream],
        [upstream, client],
      ]) {
        this.sockets.add(a)
        a.pipe(b)
        a.on('error', () => b.destroy())
        a.on('close', () => {
          this.sockets.delete(a)
          b.destroy()
        })
      }
    })
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    return this
  }

  // libpq conninfo of `h`'s database through this relay.
  conninfo(h) {
    return `${h.databaseConninfo.replace(/\b(host|port)=\S+/g, '').trim()} host=127.0.0.1 port=${this.port}`
  }

  cut() {
    this.cutOff = true
    for (const socket of this.sockets) socket.resetAndDestroy()
    this.sockets.clear()
  }

  // Drops everything silently, as a partition that loses packets: relayed
  // connections stay open on both sides but carry nothing more; new ones are
  // accepted and never answered.
  blackhole() {
    this.blackholed = true
    for (const socket of this.sockets) {
      socket.unpipe()
      socket.pause()
    }
  }

  // Relays new connections again; what a blackhole held is dropped (as TCP
  // gives up on a connection that went unanswered).
  heal() {
    this.cutOff = false
    this.blackholed = false
    for (const socket of [...this.held, ...this.sockets]) socket.destroy()
    this.held.clear()
    this.sockets.clear()
  }

  async close() {
    this.heal()
    this.cut()
    await new Promise((resolve) => this.server.close(resolve))
  }
}
