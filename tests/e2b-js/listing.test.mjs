// Listing (GET /v2/sandboxes) through the official SDK's paginator: the last
// page carries no next token (hasNext turns false even when that page is
// full), and order, startedAfter and the template filter are applied.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from 'e2b'

import { api, integration, killAll, setup, sleep, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'listing', () => {
  const tag = uniqueTag('list')
  const sbs = []
  let between // a time after the first sandbox started and before the second
  before(async () => {
    sbs.push(await Sandbox.create({ metadata: { run: tag } }))
    await sleep(50)
    between = new Date()
    await sleep(50)
    sbs.push(await Sandbox.create({ metadata: { run: tag } }))
  })
  after(() => killAll(sbs))
  const ids = () => sbs.map((s) => s.sandboxId)

  it('a full last page has no next token, so hasNext turns false', async () => {
    const pager = Sandbox.list({ limit: 2, query: { metadata: { run: tag } } })
    const page = await pager.nextItems()
    assert.equal(page.length, 2)
    assert.equal(pager.hasNext, false, 'a full last page still promised another one')
  })

  it('pages through one at a time, newest first by default', async () => {
    const pager = Sandbox.list({ limit: 1, query: { metadata: { run: tag } } })
    const seen = []
    while (pager.hasNext) {
      seen.push(...(await pager.nextItems()).map((s) => s.sandboxId))
      assert.ok(seen.length <= 2, `more pages than sandboxes: ${seen}`)
    }
    assert.deepEqual(seen, ids().reverse())
  })

  it('order asc lists oldest first, across pages', async () => {
    const pager = Sandbox.list({ limit: 1, order: 'asc', query: { metadata: { run: tag } } })
    const seen = []
    while (pager.hasNext) seen.push(...(await pager.nextItems()).map((s) => s.sandboxId))
    assert.deepEqual(seen, ids())
  })

  it('startedAfter keeps the sandboxes started since', async () => {
    const page = await Sandbox.list({ query: { metadata: { run: tag }, startedAfter: between } }).nextItems()
    assert.deepEqual(page.map((s) => s.sandboxId), [sbs[1].sandboxId])
  })

  it('startedBefore (sbx extension) keeps the sandboxes started earlier', async () => {
    const q = new URLSearchParams({ metadata: `run=${tag}`, startedBefore: between.toISOString() })
    const res = await api('GET', `/v2/sandboxes?${q}`)
    assert.equal(res.status, 200, res.text)
    assert.deepEqual(res.json.map((s) => s.sandboxID), [sbs[0].sandboxId])
  })

  it('the template filter matches the template by name or ID', async () => {
    const byName = await Sandbox.list({ query: { metadata: { run: tag }, template: 'base' } }).nextItems()
    assert.equal(byName.length, 2)
    const byID = await Sandbox.list({ query: { metadata: { run: tag }, template: byName[0].templateId } }).nextItems()
    assert.equal(byID.length, 2)
    const none = await Sandbox.list({ query: { metadata: { run: tag }, template: 'no-such-template' } }).nextItems()
    assert.deepEqual(none, [])
  })

  it('bad order and times are refused with a 400 naming them', async () => {
    for (const [q, word] of [['order=sideways', 'order'], ['startedAfter=yesterday', 'startedAfter']]) {
      const res = await api('GET', `/v2/sandboxes?${q}`)
      assert.equal(res.status, 400, res.text)
      assert.match(res.json.message, new RegExp(word))
    }
  })
})
