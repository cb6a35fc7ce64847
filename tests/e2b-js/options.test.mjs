// Options the SDK sends that sbx does not implement are refused with a 400
// naming them, never dropped in silence: the create body's iam, a template
// build's fromImageRegistry, and any field sbx does not know.

import assert from 'node:assert/strict'
import { it } from 'node:test'

import { Sandbox, Template } from 'e2b'

import { api, integration, setup, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'unsupported options', () => {
  it('Sandbox.create with iam tokens is refused, naming iam', async () => {
    await assert.rejects(
      Sandbox.create({ iam: { tokens: { cloud: { audience: 'https://example.com', tokenType: 'oidc' } } } }),
      (err) => /iam/.test(err.message) && /not supported/.test(err.message),
    )
  })

  it('a template built from a private registry is refused, naming fromImageRegistry', async () => {
    const t = Template().fromImage('registry.example.com/private/app:1', { username: 'u', password: 'p' })
    await assert.rejects(Template.build(t, uniqueTag('privreg')), (err) => /fromImageRegistry/.test(err.message))
  })

  it('unknown fields in create, template and timeout bodies are named in a 400', async () => {
    for (const [path, body] of [
      ['/v2/sandboxes', { templateID: 'base', autoDestroy: true }],
      ['/v3/templates', { name: uniqueTag('opt'), colour: 'blue' }],
    ]) {
      const res = await api('POST', path, { body })
      assert.equal(res.status, 400, `${path}: ${res.text}`)
      assert.match(res.json.message, new RegExp(Object.keys(body).at(-1)))
    }
  })
})
