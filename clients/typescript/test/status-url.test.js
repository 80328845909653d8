// Pure helpers: the status URL derived from a shape URL, and max-age parsing.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { maxAgeMs, statusUrlFor } from '../dist/index.js'

test('the status URL sits next to the shape URL', () => {
  assert.equal(statusUrlFor('http://localhost:3000/v1/shape'), 'http://localhost:3000/v1/status')
  assert.equal(statusUrlFor('http://h/v1/shape?table=items&offset=-1'), 'http://h/v1/status')
  assert.equal(statusUrlFor('https://cdn.example/sync/v1/shape/'), 'https://cdn.example/sync/v1/status')
  assert.equal(statusUrlFor('https://app.example/api/items'), 'https://app.example/v1/status')
})

test('max-age is read from Cache-Control', () => {
  assert.equal(maxAgeMs('public, max-age=5'), 5_000)
  assert.equal(maxAgeMs('max-age=0'), 0)
  assert.equal(maxAgeMs('public, s-maxage=10, MAX-AGE="2"'), 2_000)
  assert.equal(maxAgeMs('no-cache'), undefined)
  assert.equal(maxAgeMs(null), undefined)
  assert.equal(maxAgeMs('max-age=soon'), undefined)
})
