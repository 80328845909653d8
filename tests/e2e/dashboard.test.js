// The status page (GET /dashboard) in headless Chromium (Debian's, driven by
// playwright-core): it shows "live", then "fallback" with its cause once the
// proxy's replication privilege is revoked, then "live" again when it is
// restored; the timeline lists both transitions with causes, the shape held is
// listed, and the lag chart is drawn; all read from the DOM. Screenshots are
// saved (path in the test's diagnostics; SHAPEPROXY_DASHBOARD_SCREENSHOT sets
// the fallback one's path, as docs/dashboard.png was made).
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { chromium } from 'playwright-core'
import { GRACE_MS, SLACK_MS, proxyArgs } from './faults.js'
import { useHarness } from './harness.js'
import { program } from './programs.js'

const h = useHarness({ name: 'dashboard', leastPrivilege: true, proxyArgs })
const STATE_CHANGE_MS = GRACE_MS + 10_000 + SLACK_MS // the page polls every 2 s
const shots = mkdtempSync(join(tmpdir(), 'shapeproxy-dashboard-'))
let browser
let page
const pageErrors = []

async function shownState() {
  return page.evaluate(() => document.getElementById('state').dataset.state)
}

async function waitForShown(state, timeoutMs = STATE_CHANGE_MS) {
  await page.waitForFunction((s) => document.getElementById('state').dataset.state === s, state, {
    timeout: timeoutMs,
    polling: 100,
  })
}

before(async () => {
  await h.ready
  await h.appSql('CREATE TABLE items (id int4 PRIMARY KEY, title text NOT NULL)')
  await h.appSql(`INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g`)
  const response = await fetch(`${h.shapeUrl}?table=items&offset=-1`)
  await response.arrayBuffer()
  assert.equal(response.status, 200)
  browser = await chromium.launch({
    executablePath: program('chromium'),
    headless: true,
    // No background traffic: this machine's network is closed.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on('pageerror', (error) => pageErrors.push(error.message))
  // Nothing but the proxy's own origin is ever requested.
  const foreign = []
  page.on('request', (request) => {
    if (!request.url().startsWith(h.baseUrl)) foreign.push(request.url())
  })
  h.onCleanup(() => assert.deepEqual(foreign, [], 'requests to other origins'))
  await page.goto(`${h.baseUrl}/dashboard`)
})

after(async () => {
  await browser?.close()
  if (!process.env.KEEP_SCREENSHOTS) rmSync(shots, { recursive: true, force: true })
})

test('the page shows live, the shape and the lag chart', async (t) => {
  await waitForShown('live')
  assert.equal(await page.textContent('#state'), 'live')
  await page.waitForFunction(() => document.querySelectorAll('#shapes tr').length > 0, null, { timeout: 10_000 })
  const shapeRow = await page.textContent('#shapes tr')
  assert.match(shapeRow, /public\.items/)
  assert.match(shapeRow, /50/)
  await page.waitForFunction(() => document.querySelectorAll('#lag-chart polygon').length > 0, null, { timeout: 15_000 })
  assert.match(await page.textContent('#version'), /\d+\.\d+\.\d+/)
  const path = join(shots, 'live.png')
  await page.screenshot({ path, fullPage: true })
  t.diagnostic(`screenshot: ${path}`)
  assert.deepEqual(pageErrors, [])
})

test('replication revoked: the page shows fallback with its cause, and the transition', async (t) => {
  await h.breakReplication()
  await waitForShown('fallback')
  const cause = await page.textContent('#cause')
  const status = await h.status()
  assert.equal(status.body.status, 'fallback')
  assert.ok(cause.length > 0, 'a cause is shown')
  t.diagnostic(`cause shown: ${cause}`)
  // The timeline's newest row is the switch to fallback, with that cause.
  await page.waitForFunction(() => /→\s*fallback/.test(document.querySelector('#transitions tr')?.textContent ?? ''),
    null, { timeout: 10_000 })
  const newest = await page.textContent('#transitions tr')
  assert.ok(newest.includes(cause), `timeline row "${newest}" has the cause "${cause}"`)
  // Health keeps the instance in rotation (README "Health checks").
  const health = await h.health()
  assert.equal(health.status, 200)
  const path = process.env.SHAPEPROXY_DASHBOARD_SCREENSHOT ?? join(shots, 'fallback.png')
  await page.screenshot({ path, fullPage: true })
  t.diagnostic(`screenshot: ${path}`)
})

test('replication restored: the page shows live again', async (t) => {
  await h.restoreReplication()
  await waitForShown('live', 60_000)
  assert.equal(await shownState(), 'live')
  await page.waitForFunction(() => /fallback\s*→\s*live/.test(document.querySelector('#transitions tr')?.textContent ?? ''),
    null, { timeout: 10_000 })
  const rows = await page.$$eval('#transitions tr', (trs) => trs.map((tr) => tr.textContent))
  assert.ok(rows.length >= 3, `starting→live, live→fallback, fallback→live: ${JSON.stringify(rows)}`)
  const path = join(shots, 'live-again.png')
  await page.screenshot({ path, fullPage: true })
  t.diagnostic(`screenshot: ${path}`)
  assert.deepEqual(pageErrors, [])
})
