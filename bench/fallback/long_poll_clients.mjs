// Live clients for bench/fallback: CLIENTS concurrent long-poll loops on one
// shape (handle + offset), each following electric-offset/electric-cursor,
// for SECONDS. Prints one JSON line: responses, responses carrying changes,
// responses flagged electric-fallback-mode, and errors by status.
//   node long_poll_clients.mjs BASE_URL TABLE HANDLE OFFSET CLIENTS SECONDS
import { Agent, get } from 'node:http'

const [base, table, handle, offset, clientsText, secondsText] = process.argv.slice(2)
const clients = Number(clientsText)
const deadline = Date.now() + Number(secondsText) * 1000
const agent = new Agent({ keepAlive: true, maxSockets: clients })
const totals = { clients, responses: 0, withChanges: 0, flagged: 0, errors: {} }

function request(url) {
  return new Promise((resolve) => {
    const req = get(url, { agent }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => (body += chunk))
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body }))
      response.on('error', (error) => resolve({ status: error.message }))
    })
    req.on('error', (error) => resolve({ status: error.message }))
  })
}

async function client() {
  let current = offset
  let cursor = ''
  while (Date.now() < deadline) {
    const params = new URLSearchParams({ table, handle, offset: current, live: 'true' })
    if (cursor) params.set('cursor', cursor)
    const response = await request(`${base}/v1/shape?${params}`)
    if (response.status !== 200) {
      totals.errors[response.status] = (totals.errors[response.status] ?? 0) + 1
      await new Promise((resolve) => setTimeout(resolve, 100))
      continue
    }
    totals.responses++
    if (response.headers['electric-fallback-mode'] === 'true') totals.flagged++
    if (response.body.includes('"operation"')) totals.withChanges++
    current = response.headers['electric-offset'] ?? current
    cursor = response.headers['electric-cursor'] ?? cursor
  }
}

for (let i = 0; i < clients; i++) client()
setTimeout(() => {
  console.log(JSON.stringify(totals))
  process.exit(0)
}, deadline - Date.now())
