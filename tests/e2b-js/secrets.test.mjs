// Team secrets through the official SDK's Secret class: create, getInfo by
// ID and by name, paged list, update (a new version), destroy; values are
// never returned; Secret.fill placeholders in a sandbox's envs resolve to
// the value inside the sandbox; other teams see none of it.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox, Secret, SecretNotFoundError } from 'e2b'

import { api, createTeam, integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'secrets', () => {
  const made = []
  const names = []
  after(async () => {
    await killAll(made)
    await Promise.all(names.map((n) => Secret.destroy(n).catch(() => {})))
  })
  const value = `v-${uniqueTag('secret')}`

  it('create, getInfo, list, update, destroy without ever returning the value', async () => {
    const name = uniqueTag('api-key-')
    names.push(name)
    const created = await Secret.create(name, value, { metadata: { owner: 'tests' } })
    assert.match(created.secretId, /^sec_/)
    assert.equal(created.name, name)
    assert.equal(created.version, 1)
    assert.deepEqual(created.metadata, { owner: 'tests' })
    assert.ok(created.createdAt instanceof Date && !isNaN(created.createdAt))

    const byId = await Secret.getInfo(created.secretId)
    const byName = await Secret.getInfo(name.toUpperCase())
    assert.equal(byId.secretId, created.secretId)
    assert.equal(byName.secretId, created.secretId)
    await assert.rejects(Secret.create(name, 'again'), (e) => /exists/.test(e.message))

    const updated = await Secret.update(name, `${value}-2`)
    assert.equal(updated.version, 2)
    assert.deepEqual(updated.metadata, { owner: 'tests' }, 'metadata kept when not given')

    const raw = await api('GET', `/secrets/${created.secretId}`)
    assert.ok(!raw.text.includes(value), `GET returned the value: ${raw.text}`)
    assert.equal(raw.json.currentVersion, 2)

    assert.equal(await Secret.exists(name), true)
    assert.equal(await Secret.destroy(name), true)
    assert.equal(await Secret.exists(name), false)
    assert.equal(await Secret.destroy(name), false)
    await assert.rejects(Secret.getInfo(name), SecretNotFoundError)
  })

  it('lists page by page, the last page without a next token', async () => {
    const prefix = uniqueTag('page-')
    for (let i = 0; i < 3; i++) {
      names.push(`${prefix}-${i}`)
      await Secret.create(`${prefix}-${i}`, value)
    }
    const seen = []
    const pager = Secret.list({ limit: 2 })
    let pages = 0
    while (pager.hasNext) {
      const items = await pager.nextItems()
      assert.ok(items.length <= 2)
      seen.push(...items.map((s) => s.name))
      pages++
    }
    assert.ok(pages >= 2)
    for (let i = 0; i < 3; i++) assert.ok(seen.includes(`${prefix}-${i}`), `${prefix}-${i} listed`)
    const raw = await api('GET', '/secrets?limit=1000')
    assert.ok(!raw.text.includes(value), 'list returned a value')
  })

  it('Secret.fill in envs resolves inside the sandbox; unknown names fail the create', async () => {
    const name = uniqueTag('token-')
    names.push(name)
    await Secret.create(name, value)
    const sbx = await Sandbox.create({ envs: { TOKEN: Secret.fill(name), PLAIN: 'x' } })
    made.push(sbx)
    const out = await sbx.commands.run('printf %s "$TOKEN/$PLAIN"')
    assert.equal(out.stdout, `${value}/x`)
    await assert.rejects(Sandbox.create({ envs: { T: Secret.fill('no-such-secret') } }), /no-such-secret/)
  })

  it("another team sees and uses none of this team's secrets", async (t) => {
    const other = createTeam(env, uniqueTag('team'))
    if (!other) return t.skip('needs the harness-managed server')
    const name = uniqueTag('mine-')
    names.push(name)
    const mine = await Secret.create(name, value)
    assert.equal(await Secret.exists(mine.secretId, { apiKey: other }), false)
    assert.equal(await Secret.exists(name, { apiKey: other }), false)
    assert.equal(await Secret.destroy(name, { apiKey: other }), false)
    const listed = []
    const pager = Secret.list({ apiKey: other })
    while (pager.hasNext) listed.push(...(await pager.nextItems()))
    assert.equal(listed.length, 0)
    await assert.rejects(Sandbox.create({ apiKey: other, envs: { T: Secret.fill(name) } }), new RegExp(name))
    assert.equal(await Secret.exists(name), true)
  })
})
