// Helpers around the stock @electric-sql/client: open a ShapeStream + Shape
// against the harness's proxy, record every message the stream delivers
// (with its arrival time), and wait for a condition on the shape's rows
// without polling.
import { Shape, ShapeStream, isChangeMessage, isControlMessage } from '@electric-sql/client'

// Opens a shape subscription. `params` go to the client as-is
// ({table, where, params, columns, replica}). Returns
//   { stream, shape, messages, controls, error, waitForRows, rowsById, close }
// where messages are {at, message} in arrival order. Closed automatically at
// harness teardown.
export function openShape(h, params, { withShape = true, streamOptions = {} } = {}) {
  const controller = new AbortController()
  const stream = new ShapeStream({
    url: h.shapeUrl,
    params,
    signal: controller.signal,
    ...streamOptions,
  })
  const sub = {
    stream,
    shape: null,
    messages: [],
    errors: [],
    // control messages seen, e.g. 'up-to-date', 'must-refetch'
    get controls() {
      return sub.messages.filter(({ message }) => isControlMessage(message)).map(({ message }) => message.headers.control)
    },
    get changes() {
      return sub.messages.filter(({ message }) => isChangeMessage(message))
    },
    close() {
      controller.abort()
      sub.shape?.unsubscribeAll()
    },
    // Shape rows keyed by `id` (stringified, so BigInt and number keys agree).
    rowsById() {
      return new Map(sub.shape.currentRows.map((row) => [String(row.id), row]))
    },
    // Resolves with the arrival time (Date.now()) of the first Shape update
    // whose rows satisfy `predicate(rows)`; checks the current rows first.
    waitForRows(predicate, timeoutMs = 5_000, what = 'shape rows to match') {
      return waitForShape(sub, predicate, timeoutMs, what)
    },
    // Resolves with the arrival time of the first stream message satisfying
    // `predicate(message)` (already received ones count).
    waitForMessage(predicate, timeoutMs = 5_000, what = 'a matching message') {
      return waitForMessage(sub, predicate, timeoutMs, what)
    },
  }
  // Subscribe before the Shape does, so arrival times are taken as soon as
  // the client hands messages out.
  stream.subscribe(
    (messages) => {
      const at = Date.now()
      for (const message of messages) sub.messages.push({ at, message })
      for (const waiter of [...messageWaiters(sub)]) waiter()
    },
    (error) => {
      // An error the client gives up on ends the stream: fail waiters now
      // rather than at their timeouts.
      sub.errors.push(error)
      for (const waiter of [...messageWaiters(sub)]) waiter(error)
    },
  )
  if (withShape) sub.shape = new Shape(stream)
  h.onCleanup(() => sub.close())
  return sub
}

// Waiters are kept per subscription and re-checked on every batch.
const waiters = new WeakMap()
function messageWaiters(sub) {
  if (!waiters.has(sub)) waiters.set(sub, new Set())
  return waiters.get(sub)
}

function waitForMessage(sub, predicate, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const set = messageWaiters(sub)
    let timer
    const check = (error) => {
      const hit = sub.messages.find(({ message }) => predicate(message))
      if (!hit && !error) return false
      clearTimeout(timer)
      set.delete(check)
      if (hit) resolve(hit.at)
      else reject(new Error(`stream failed while waiting for ${what}: ${error.message}${streamState(sub)}`))
      return true
    }
    if (check(sub.errors.at(-1))) return
    set.add(check)
    timer = setTimeout(() => {
      set.delete(check)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${streamState(sub)}`))
    }, timeoutMs)
  })
}

function waitForShape(sub, predicate, timeoutMs, what) {
  const { shape } = sub
  return new Promise((resolve, reject) => {
    let timer
    let unsubscribe = () => {}
    const set = messageWaiters(sub)
    const fail = (error) => {
      if (!error) return // a message batch: the Shape subscription checks rows
      clearTimeout(timer)
      unsubscribe()
      set.delete(fail)
      reject(new Error(`stream failed while waiting for ${what}: ${error.message}${streamState(sub)}`))
    }
    const check = (rows) => {
      let ok = false
      try {
        ok = predicate(rows)
      } catch {}
      if (!ok) return false
      clearTimeout(timer)
      unsubscribe()
      set.delete(fail)
      resolve(Date.now())
      return true
    }
    if (shape.isUpToDate && check(shape.currentRows)) return
    if (sub.errors.length > 0) return fail(sub.errors.at(-1))
    unsubscribe = shape.subscribe(({ rows }) => check(rows))
    set.add(fail)
    timer = setTimeout(() => {
      unsubscribe()
      set.delete(fail)
      reject(
        new Error(
          `timed out after ${timeoutMs} ms waiting for ${what} (${shape.currentRows.length} rows now)${streamState(sub)}`,
        ),
      )
    }, timeoutMs)
  })
}

function streamState(sub) {
  const { stream } = sub
  const error = stream.error ?? sub.errors.at(-1) ?? sub.shape?.error
  const parts = [
    `upToDate=${stream.isUpToDate}`,
    `connected=${stream.isConnected?.()}`,
    `handle=${stream.shapeHandle}`,
    `offset=${stream.lastOffset}`,
    `messages=${sub.messages.length}`,
  ]
  if (error) parts.push(`error=${error.name}: ${error.message}`)
  return ` [stream ${parts.join(' ')}]`
}

// A canonical text of a set of rows: sorted by id, keys sorted, BigInt as
// text; equal for equal rows whatever order the server wrote the columns in.
export function canonicalRows(rows) {
  const sorted = [...rows].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  return JSON.stringify(sorted, (_, value) => {
    if (typeof value === 'bigint') return `${value}n`
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return Object.fromEntries(Object.keys(value).sort().map((key) => [key, value[key]]))
    }
    return value
  })
}
