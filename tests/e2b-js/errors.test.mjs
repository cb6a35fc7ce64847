// Bad input gets a clear error and changes nothing: malformed JSON, unknown
// template, wrong or missing API key, unknown sandbox IDs.

import assert from 'node:assert/strict'
import { it } from 'node:test'

import { AuthenticationError, Sandbox, SandboxNotFoundError } from 'e2b'

import { api, integration, setup, uniqueTag } from './harness.mjs'

const env = await setup()

const wrongKey = `e2b_${'0'.repeat(40)}`
const unknownId = 'nosuchsandbox0000000'

function assertErrorBody(res, status) {
  assert.equal(res.status, status, `want HTTP ${status}, got ${res.status}: ${res.text}`)
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, 'error bodies are JSON')
  assert.equal(res.json?.code, status, `body.code must equal the HTTP status: ${res.text}`)
  assert.equal(typeof res.json?.message, 'string')
  assert.ok(res.json.message.length > 0, 'empty error message')
}

async function countByRun(tag) {
  return (await Sandbox.list({ query: { metadata: { run: tag } } }).nextItems()).length
}

integration(env, 'bad input', () => {
  it('GET /health answers without a key', async () => {
    const r = await api('GET', '/health', { key: null })
    assert.equal(r.status, 200)
  })

  for (const path of ['/v2/sandboxes', '/sandboxes']) {
    it(`malformed JSON to POST ${path} is a 400 JSON error`, async () => {
      const r = await api('POST', path, { body: '{"templateID": "base", "metadata": {', headers: { 'Content-Type': 'application/json' } })
      assertErrorBody(r, 400)
    })
  }

  it('a templateID of the wrong type is a 400 JSON error', async () => {
    const r = await api('POST', '/v2/sandboxes', { body: { templateID: 42 } })
    assertErrorBody(r, 400)
  })

  it('an unknown template is refused with a message naming it, and nothing is created', async () => {
    const tag = uniqueTag('badtpl')
    const name = `no-such-template-${tag}`
    const err = await Sandbox.create(name, { metadata: { run: tag } }).then(
      async (s) => {
        await s.kill()
        assert.fail(`created a sandbox from unknown template ${name}`)
      },
      (e) => e,
    )
    assert.ok(err.message.includes(name), `error should name the template: ${err.message}`)

    const raw = await api('POST', '/v2/sandboxes', { body: { templateID: name, metadata: { run: tag } } })
    assert.ok(raw.status === 400 || raw.status === 404, `unknown template: want 400 or 404, got ${raw.status}: ${raw.text}`)
    assertErrorBody(raw, raw.status)
    assert.ok(raw.json.message.includes(name), `message should name the template: ${raw.json.message}`)

    assert.equal(await countByRun(tag), 0, 'a failed create left a sandbox behind')
  })

  it('a wrong API key raises AuthenticationError', async () => {
    await assert.rejects(Sandbox.create({ apiKey: wrongKey }), AuthenticationError)
    await assert.rejects(Sandbox.list({ apiKey: wrongKey }).nextItems(), AuthenticationError)
    await assert.rejects(Sandbox.getInfo(unknownId, { apiKey: wrongKey }), AuthenticationError)

    for (const key of [wrongKey, null]) {
      const r = await api('GET', '/v2/sandboxes', { key })
      assertErrorBody(r, 401)
    }
    const r = await api('POST', '/v2/sandboxes', { key: wrongKey, body: { templateID: 'base' } })
    assertErrorBody(r, 401)
  })

  it('unknown sandbox IDs: getInfo/connect/setTimeout raise SandboxNotFoundError, kill returns false', async () => {
    await assert.rejects(Sandbox.getInfo(unknownId), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect(unknownId), SandboxNotFoundError)
    await assert.rejects(Sandbox.setTimeout(unknownId, 10_000), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(unknownId), false)

    const r = await api('GET', `/sandboxes/${unknownId}`)
    assertErrorBody(r, 404)
  })
})
