// Sandbox logs (GET /sandboxes/{id}/logs and /v2/sandboxes/{id}/logs): the
// output of the template's start command and envd's own log, with the
// spec's query parameters; and POST /sandboxes/{id}/refreshes, which keeps
// a sandbox alive for a while without ever shortening its timeout.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'
import { Sandbox as BaseSandbox } from 'e2b'

import { api, integration, killAll, setup, waitForTemplate } from './harness.mjs'

const env = await setup()

integration(env, 'sandbox logs and refreshes', () => {
  let ci
  let base
  before(async () => {
    // The code interpreter's template runs a start command in every sandbox
    // (its root filesystem is built on first use).
    await waitForTemplate('code-interpreter')
    ;[ci, base] = await Promise.all([Sandbox.create(), BaseSandbox.create({ timeoutMs: 60_000 })])
  })
  after(() => killAll([ci, base]))

  it('v1 logs carry the start command\'s lines and envd\'s, in both shapes', async () => {
    const res = await api('GET', `/sandboxes/${ci.sandboxId}/logs`)
    assert.equal(res.status, 200, res.text)
    assert.equal(res.json.logs.length, res.json.logEntries.length)
    const sources = new Set(res.json.logEntries.map((e) => e.fields.source))
    assert.ok(sources.has('start-command') || sources.has('sbx'), `sources: ${[...sources]}`)
    assert.ok(res.json.logEntries.some((e) => e.message.startsWith('start command started')), res.text.slice(0, 2000))
    for (const e of res.json.logEntries) for (const k of ['timestamp', 'level', 'message', 'fields']) assert.ok(k in e, k)
    // As times, not strings: RFC 3339 drops a fraction's trailing zeros, so
    // "…22.1234Z" sorts after "…22.12345678Z" as text.
    const times = res.json.logs.map((l) => Date.parse(l.timestamp))
    for (let i = 1; i < times.length; i++) {
      assert.ok(times[i] >= times[i - 1], `not oldest first: ${res.json.logs[i - 1].timestamp} before ${res.json.logs[i].timestamp}`)
    }
    const one = await api('GET', `/sandboxes/${ci.sandboxId}/logs?limit=1`)
    assert.equal(one.json.logs.length, 1)
    const future = await api('GET', `/sandboxes/${ci.sandboxId}/logs?start=${Date.now() + 3600_000}`)
    assert.deepEqual(future.json.logs, [])
  })

  it('v2 logs: direction, limit, level and search', async () => {
    const all = await api('GET', `/v2/sandboxes/${ci.sandboxId}/logs`)
    assert.equal(all.status, 200, all.text)
    assert.ok(all.json.logs.length >= 2, all.text.slice(0, 2000))
    const last = await api('GET', `/v2/sandboxes/${ci.sandboxId}/logs?direction=backward&limit=1`)
    assert.deepEqual(last.json.logs, all.json.logs.slice(-1))
    const found = await api('GET', `/v2/sandboxes/${ci.sandboxId}/logs?search=START%20COMMAND`)
    assert.ok(found.json.logs.length >= 1 && found.json.logs.every((e) => /start command/i.test(e.message)))
    const errors = await api('GET', `/v2/sandboxes/${ci.sandboxId}/logs?level=error`)
    assert.ok(errors.json.logs.every((e) => e.level === 'error'))
    const bad = await api('GET', `/v2/sandboxes/${ci.sandboxId}/logs?level=loud`)
    assert.equal(bad.status, 400)
    const nobody = await api('GET', '/v2/sandboxes/nosuchsandbox/logs')
    assert.equal(nobody.status, 404)
  })

  it('refreshes extend a sandbox\'s life but never shorten it', async () => {
    const before = (await base.getInfo()).endAt.getTime()
    const short = await api('POST', `/sandboxes/${base.sandboxId}/refreshes`, { body: { duration: 5 } })
    assert.equal(short.status, 204, short.text)
    assert.equal((await base.getInfo()).endAt.getTime(), before, 'a shorter refresh cut the timeout')
    const long = await api('POST', `/sandboxes/${base.sandboxId}/refreshes`, { body: { duration: 1800 } })
    assert.equal(long.status, 204, long.text)
    assert.ok((await base.getInfo()).endAt.getTime() > Date.now() + 1700_000)
    const tooLong = await api('POST', `/sandboxes/${base.sandboxId}/refreshes`, { body: { duration: 7200 } })
    assert.equal(tooLong.status, 400, tooLong.text)
    const missing = await api('POST', '/sandboxes/nosuchsandbox/refreshes', { body: {} })
    assert.equal(missing.status, 404)
  })
})
