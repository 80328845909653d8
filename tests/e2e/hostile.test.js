// Hostile and unlucky input against the whole binary (issue 16): bytes the
// database and JSON cannot take are a 400 at the edge, tables that cannot be
// served are refused with the reason, permanent query errors are a 400,
// pipelined requests behind a parked one are all answered, and /metrics can
// be protected with its own token.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { before, test } from 'node:test'
import { useHarness } from './harness.js'

const TOKEN = 'metrics-t0ken'
const h = useHarness({ name: 'hostile', proxyArgs: ['--metrics-token', TOKEN, '--allow-delete'] })

before(async () => {
  await h.ready // Node 20 runs top-level before() hooks concurrently
  await h.sql(`CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL);
    INSERT INTO items SELECT g, 't' || g FROM generate_series(1, 20) g;
    CREATE TABLE parted (id int4, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
    CREATE TABLE nokey (a int4); INSERT INTO nokey VALUES (1), (1)`)
})

// GET /v1/shape?<query> -> {status, body}
async function shapeGet(query) {
  const response = await fetch(`${h.shapeUrl}?${query}`)
  const text = await response.text()
  let body
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  return { status: response.status, body, headers: response.headers }
}

test('invalid UTF-8 and NUL in parameters are 400 naming the parameter', async () => {
  const cases = [
    ['table=items&offset=-1&where=title%3D%241&params%5B1%5D=%c3%28', 'params'],
    ['table=items&offset=-1&where=id%3D1%20--%20%ff', 'where'],
    ['table=items&offset=-1&where=title%3D%241&params%5B1%5D=a%00b', 'params'],
    ['table=%22it%00ems%22&offset=-1', 'table'],
  ]
  for (const [query, field] of cases) {
    const { status, body } = await shapeGet(query)
    assert.equal(status, 400, query)
    assert.ok(body.errors?.[field], `${query}: ${JSON.stringify(body)}`)
  }
  // The shape of a valid request is still served (nothing wedged).
  const { status } = await shapeGet('table=items&offset=-1&where=title%3D%241&params%5B1%5D=t1')
  assert.equal(status, 200)
})

test('partitioned parents and tables without a primary key are refused with the reason', async () => {
  const parted = await shapeGet('table=parted&offset=-1')
  assert.equal(parted.status, 400)
  assert.match(parted.body.errors.table[0], /partitioned/)
  const nokey = await shapeGet('table=nokey&offset=-1')
  assert.equal(nokey.status, 400)
  assert.match(nokey.body.errors.table[0], /no primary key/)
  assert.equal((await shapeGet('table=parted_eu&offset=-1')).status, 200)
})

test('permanent query errors are 400 with a clean message, not 503', async () => {
  const division = await shapeGet(`table=items&offset=-1&where=${encodeURIComponent('id / 0 = 1')}`)
  assert.equal(division.status, 400, JSON.stringify(division.body))
  assert.match(division.body.errors.where[0], /division by zero/)
  assert.equal(division.headers.get('retry-after'), null)
})

test('DELETE with a handle of another shape leaves it; an invalid where is 400', async () => {
  const one = await shapeGet(`table=items&offset=-1&where=${encodeURIComponent('id = 1')}`)
  const two = await shapeGet(`table=items&offset=-1&where=${encodeURIComponent('id = 2')}`)
  const handleTwo = two.headers.get('electric-handle')
  const mismatch = await fetch(
    `${h.shapeUrl}?table=items&where=${encodeURIComponent('id = 1')}&handle=${handleTwo}`,
    { method: 'DELETE' },
  )
  assert.equal(mismatch.status, 400, await mismatch.text())
  const again = await shapeGet(`table=items&offset=-1&where=${encodeURIComponent('id = 2')}`)
  assert.equal(again.headers.get('electric-handle'), handleTwo, 'the other shape is still there')
  const badWhere = await fetch(`${h.shapeUrl}?table=items&where=${encodeURIComponent('pg_sleep(1) IS NULL')}`, {
    method: 'DELETE',
  })
  assert.equal(badWhere.status, 400, await badWhere.text())
  assert.ok(one.headers.get('electric-handle'))
})

// Sends `count` pipelined GETs of one new shape in one write (more than the
// proxy's first read takes) and reads responses until `count` arrived or
// the connection ends.
function pipelined(count) {
  return new Promise((resolve, reject) => {
    const socket = connect(h.port, 'localhost')
    const target = `/v1/shape?table=items&offset=-1&where=${encodeURIComponent('id > 5')}`
    let requests = ''
    for (let i = 0; i < count; ++i) requests += `GET ${target} HTTP/1.1\r\nHost: localhost\r\n\r\n`
    let received = ''
    let answered = 0
    const done = (error) => {
      socket.destroy()
      error ? reject(error) : resolve(answered)
    }
    socket.on('connect', () => socket.write(requests))
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1')
      answered = received.split('HTTP/1.1 200 OK\r\n').length - 1
      if (answered >= count) done()
    })
    socket.on('error', (error) => (error.code === 'ECONNRESET' ? done() : done(error)))
    socket.on('close', () => done())
    setTimeout(() => done(), 20_000)
  })
}

test('pipelined requests behind a parked one are all answered', async () => {
  assert.equal(await pipelined(100), 100)
})

test('/metrics needs its token when one is set', async () => {
  const denied = await fetch(`${h.baseUrl}/metrics`)
  await denied.arrayBuffer()
  assert.equal(denied.status, 401)
  const allowed = await fetch(`${h.baseUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
  assert.equal(allowed.status, 200)
  assert.match(await allowed.text(), /shapeproxy_storage_failing 0/)
  const status = await h.status()
  assert.equal(status.body.storage.status, 'ok')
})
