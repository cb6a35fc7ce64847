// Metrics through the official SDK: getMetrics({start, end}) selects from a
// stored history of samples (the harness serves with --metrics-interval 1s
// when it starts the server; see harness.mjs), GET /sandboxes/metrics
// answers several sandboxes at once, and the team series and maximum come
// in E2B's shapes.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from 'e2b'

import { api, integration, killAll, pollUntil, setup, sleep } from './harness.mjs'

const env = await setup()

integration(env, 'metrics', () => {
  let a
  let b
  let teamID
  before(async () => {
    ;[a, b] = await Promise.all([Sandbox.create(), Sandbox.create()])
    const info = await api('GET', '/teams')
    teamID = info.json?.[0]?.teamID
  })
  after(() => killAll([a, b]))

  it('getMetrics returns the samples of a time range from the history', async () => {
    // Wait until the history holds samples over a few seconds (the
    // sampler's; each read adds a live one too).
    const all = await pollUntil('samples over 2.5 s', async () => {
      const ms = await a.getMetrics()
      return ms.length >= 3 && ms.at(-1).timestamp - ms[0].timestamp >= 2500 ? ms : undefined
    }, { tries: 60, intervalMs: 500 })
    for (let i = 1; i < all.length; i++) {
      assert.ok(all[i].timestamp > all[i - 1].timestamp, 'samples are not in time order')
    }
    assert.ok(all.every((m) => m.memTotal > 0 && m.cpuCount > 0), JSON.stringify(all))
    // A range that ends before the newest sample leaves the newer ones out.
    const newest = all[all.length - 1].timestamp
    const end = new Date(Math.floor(newest.getTime() / 1000) * 1000 - 1000)
    const early = await a.getMetrics({ start: new Date(all[0].timestamp.getTime() - 1000), end })
    assert.ok(early.length >= 1 && early.length < all.length, `range ending ${end.toISOString()} gave ${early.length} of ${all.length}`)
    assert.ok(early.every((m) => m.timestamp.getTime() < end.getTime() + 1000))
    // A range entirely in the past before the sandbox existed is empty.
    const before = await a.getMetrics({ start: new Date(Date.now() - 3600_000), end: new Date(Date.now() - 3500_000) })
    assert.deepEqual(before, [])
  })

  it('start after end is a 400', async () => {
    const res = await api('GET', `/sandboxes/${a.sandboxId}/metrics?start=200&end=100`)
    assert.equal(res.status, 400, res.text)
    assert.match(res.json.message, /before start/)
  })

  it('GET /sandboxes/metrics answers several sandboxes, only the team\'s', async () => {
    const res = await api('GET', `/sandboxes/metrics?sandbox_ids=${a.sandboxId},${b.sandboxId},nosuchsandbox`)
    assert.equal(res.status, 200, res.text)
    assert.deepEqual(Object.keys(res.json.sandboxes).sort(), [a.sandboxId, b.sandboxId].sort())
    for (const m of Object.values(res.json.sandboxes)) {
      assert.equal(typeof m.timestampUnix, 'number')
      assert.ok(m.memTotal > 0)
    }
    const missing = await api('GET', '/sandboxes/metrics')
    assert.equal(missing.status, 400)
    assert.match(missing.json.message, /sandbox_ids/)
  })

  it('team metrics count the running sandboxes; max picks the peak', async (t) => {
    if (!teamID) return t.skip('GET /teams did not name the team')
    await sleep(1500)
    const now = Math.ceil(Date.now() / 1000)
    const series = await api('GET', `/teams/${teamID}/metrics?start=${now - 600}&end=${now}`)
    assert.equal(series.status, 200, series.text)
    assert.ok(series.json.length > 0, 'no team samples')
    const last = series.json[series.json.length - 1]
    for (const k of ['timestamp', 'timestampUnix', 'concurrentSandboxes', 'sandboxStartRate']) assert.ok(k in last, k)
    assert.ok(series.json.some((s) => s.concurrentSandboxes >= 2), JSON.stringify(series.json.slice(-3)))
    const peak = await api('GET', `/teams/${teamID}/metrics/max?start=${now - 600}&end=${now}&metric=concurrent_sandboxes`)
    assert.equal(peak.status, 200, peak.text)
    assert.equal(peak.json.value, Math.max(...series.json.map((s) => s.concurrentSandboxes)))
    const bad = await api('GET', `/teams/${teamID}/metrics/max?metric=cpu`)
    assert.equal(bad.status, 400)
    const other = await api('GET', '/teams/someoneelse/metrics')
    assert.equal(other.status, 403, other.text)
  })
})
