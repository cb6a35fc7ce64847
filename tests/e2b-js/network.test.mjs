// Sandbox networking through the official SDK: host names from
// sandbox.getHost(port) that reach a server in the sandbox from this
// machine, public traffic off (the traffic access token), and egress
// policies (network.allowOut/denyOut at create, updateNetwork live; what
// they let through is checked against real traffic in tests/security).

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { ALL_TRAFFIC, Sandbox } from 'e2b'

import { integration, killAll, pollUntil, setup, uniqueTag } from './harness.mjs'

const env = await setup()

async function serve(sbx, body) {
  await sbx.files.write('/home/user/site/index.txt', body)
  await sbx.commands.run('python3 -m http.server 8000', { background: true, cwd: '/home/user/site', timeoutMs: 0 })
}

integration(env, 'sandbox networking', () => {
  const made = []
  after(() => killAll(made))
  const create = async (opts) => {
    const s = await Sandbox.create(opts)
    made.push(s)
    return s
  }

  it('getHost(port) reaches a server in the sandbox over plain fetch', async () => {
    const sbx = await create()
    const token = uniqueTag('host')
    await serve(sbx, token)
    const host = sbx.getHost(8000)
    assert.match(host, new RegExp(`^8000-${sbx.sandboxId}\\.`), host)
    assert.doesNotMatch(host, /e2b\.app/, 'getHost must not point at E2B')
    const scheme = new URL(env.apiUrl).protocol
    const r = await pollUntil(`GET ${scheme}//${host}/index.txt`, async () => {
      const res = await fetch(`${scheme}//${host}/index.txt`).catch(() => null)
      return res && res.status === 200 ? res : null
    })
    assert.equal(await r.text(), token)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxDomain, host.slice(`8000-${sbx.sandboxId}.`.length))
  })

  it('allowPublicTraffic: false requires the traffic access token on sandbox ports', async () => {
    const sbx = await create({ network: { allowPublicTraffic: false } })
    assert.ok(sbx.trafficAccessToken, 'create returns trafficAccessToken')
    await serve(sbx, 'private')
    const url = `${new URL(env.apiUrl).protocol}//${sbx.getHost(8000)}/index.txt`
    const withToken = await pollUntil('server with token', async () => {
      const res = await fetch(url, { headers: { 'e2b-traffic-access-token': sbx.trafficAccessToken } }).catch(() => null)
      return res && res.status === 200 ? res : null
    })
    assert.equal(await withToken.text(), 'private')
    for (const headers of [{}, { 'e2b-traffic-access-token': 'wrong' }]) {
      const res = await fetch(url, { headers })
      assert.equal(res.status, 403, `without the right token: ${res.status}`)
    }
    // The agent has its own token; the SDK keeps working.
    const out = await sbx.commands.run('echo ok')
    assert.equal(out.stdout.trim(), 'ok')
    // A client connecting later gets the token too.
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.trafficAccessToken, sbx.trafficAccessToken)
    // Public sandboxes need none.
    const open = await create()
    assert.equal(open.trafficAccessToken, undefined)
  })

  it('network allowOut/denyOut at create, shown by getInfo, replaced by updateNetwork', async () => {
    const sbx = await create({ network: { allowOut: ['1.1.1.1', 'example.com'], denyOut: [ALL_TRAFFIC] } })
    let info = await sbx.getInfo()
    assert.deepEqual(info.network.allowOut, ['1.1.1.1', 'example.com'])
    assert.deepEqual(info.network.denyOut, [ALL_TRAFFIC])
    await sbx.updateNetwork({ denyOut: ['8.8.8.0/24'] })
    info = await sbx.getInfo()
    assert.equal(info.network.allowOut, undefined)
    assert.deepEqual(info.network.denyOut, ['8.8.8.0/24'])
    await sbx.updateNetwork({ allowInternetAccess: false })
    info = await sbx.getInfo()
    assert.deepEqual(info.network.denyOut, [ALL_TRAFFIC])
    // Still running and usable.
    assert.equal((await sbx.commands.run('echo ok')).stdout.trim(), 'ok')
  })

  it('refuses what it cannot enforce, naming the option', async () => {
    await assert.rejects(Sandbox.create({ network: { allowOut: ['*.example.com'] } }), /wildcard/)
    await assert.rejects(Sandbox.create({ network: { denyOut: ['example.com'] } }), /domain names/)
    await assert.rejects(
      Sandbox.create({ network: { allowOut: ['api.example.com'], rules: { 'api.example.com': [{ transform: { headers: { A: 'b' } } }] } } }),
      /network\.rules/,
    )
    const sbx = await create()
    await assert.rejects(sbx.updateNetwork({ allowOut: ['*.example.com'] }), /wildcard/)
  })
})
