// Managing templates: spawnCount/lastSpawnedAt follow the sandboxes created
// through the SDK, PATCH /templates/{id} and /v2/templates/{id} publish a
// template to every team (and take it back), the build's logs come from
// GET /templates/{id}/builds/{buildID}/logs, and a template is deleted by
// its name.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox, Template } from 'e2b'

import { api, createTeam, integration, killAll, pollUntil, setup, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'template management', () => {
  const name = uniqueTag('mgtpl')
  const sbs = []
  let info
  let other
  before(async () => {
    other = createTeam(env, uniqueTag('tplteam'))
    info = await Template.build(Template().fromTemplate('base').runCmd('echo managed-template-step'), name, {
      cpuCount: 1,
      memoryMB: 512,
    })
  })
  after(() => killAll(sbs))

  const listed = async () => (await api('GET', '/templates')).json.find((t) => t.templateID === info.templateId)

  it('spawnCount and lastSpawnedAt count the sandboxes created from it', async () => {
    const before = await listed()
    assert.equal(before.spawnCount, 0)
    assert.equal(before.lastSpawnedAt, null)
    const t0 = Date.now()
    sbs.push(await Sandbox.create(name))
    sbs.push(await Sandbox.create(info.templateId))
    const now = await listed()
    assert.equal(now.spawnCount, 2)
    assert.ok(Date.parse(now.lastSpawnedAt) >= t0 - 1000, now.lastSpawnedAt)
    const detail = await api('GET', `/templates/${info.templateId}`)
    assert.equal(detail.json.spawnCount, 2)
  })

  it('publishing makes it usable by every team; unpublishing takes it back', async (t) => {
    if (!other) return t.skip('needs the harness-managed server (sbx team create)')
    await assert.rejects(Sandbox.create(name, { apiKey: other }), /not found/i)
    const pub = await api('PATCH', `/v2/templates/${info.templateId}`, { body: { public: true } })
    assert.equal(pub.status, 200, pub.text)
    assert.deepEqual(pub.json.names, [name])
    assert.equal((await listed()).public, true)
    const theirs = await Sandbox.create(name, { apiKey: other })
    sbs.push(theirs)
    assert.equal((await theirs.commands.run('echo from-another-team')).stdout, 'from-another-team\n')
    // The owner's template stays the owner's: another team cannot change it.
    const steal = await api('PATCH', `/templates/${info.templateId}`, { body: { public: false }, key: other })
    assert.equal(steal.status, 404, steal.text)

    const priv = await api('PATCH', `/templates/${name}`, { body: { public: false } })
    assert.equal(priv.status, 200, priv.text)
    await assert.rejects(Sandbox.create(name, { apiKey: other }), /not found/i)
  })

  it('PATCH refuses unknown fields and built-in templates', async () => {
    const typo = await api('PATCH', `/v2/templates/${info.templateId}`, { body: { publc: true } })
    assert.equal(typo.status, 400, typo.text)
    assert.match(typo.json.message, /publc/)
    const builtin = await api('PATCH', '/v2/templates/base', { body: { public: false } })
    assert.equal(builtin.status, 403, builtin.text)
  })

  it('serves the build logs with cursor, direction, level and limit', async () => {
    const path = `/templates/${info.templateId}/builds/${info.buildId}/logs`
    const all = await api('GET', path)
    assert.equal(all.status, 200, all.text)
    assert.ok(all.json.logs.some((l) => l.message.includes('managed-template-step')), all.text)
    for (const l of all.json.logs) for (const k of ['timestamp', 'message', 'level']) assert.ok(k in l, k)
    const last = await api('GET', `${path}?direction=backward&limit=1`)
    assert.deepEqual(last.json.logs, all.json.logs.slice(-1))
    const from = Date.parse(all.json.logs[all.json.logs.length - 1].timestamp)
    const tail = await api('GET', `${path}?cursor=${from}`)
    assert.ok(tail.json.logs.length >= 1 && tail.json.logs.length < all.json.logs.length)
    const errors = await api('GET', `${path}?level=error`)
    assert.ok(errors.json.logs.every((l) => l.level === 'error'))
    const bad = await api('GET', `${path}?direction=sideways`)
    assert.equal(bad.status, 400)
    const missing = await api('GET', `/templates/${info.templateId}/builds/nosuchbuild/logs`)
    assert.equal(missing.status, 404)
  })

  it('deletes a template by its name', async () => {
    const del = await api('DELETE', `/templates/${name}`)
    assert.equal(del.status, 204, del.text)
    const gone = await api('GET', `/templates/${info.templateId}`)
    assert.equal(gone.status, 404)
    await assert.rejects(Sandbox.create(name), /not found/i)
  })

  it('the legacy forms: POST /templates with a Dockerfile, POST /v2/templates', async () => {
    const legacyName = uniqueTag('legacytpl')
    const res = await api('POST', '/templates', {
      body: { alias: legacyName, dockerfile: 'FROM e2bdev/base\nRUN echo legacy-build > /tmp/legacy.txt\n', cpuCount: 1, memoryMB: 512 },
    })
    assert.equal(res.status, 202, res.text)
    for (const k of ['templateID', 'buildID', 'cpuCount', 'memoryMB', 'diskSizeMB', 'public', 'aliases', 'createdAt',
      'updatedAt', 'createdBy', 'lastSpawnedAt', 'spawnCount', 'buildCount', 'envdVersion']) assert.ok(k in res.json, k)
    const { templateID, buildID } = res.json
    // The legacy start call is accepted (the build already runs).
    assert.equal((await api('POST', `/templates/${templateID}/builds/${buildID}`)).status, 202)
    await pollUntil('the legacy build', async () => {
      const st = await api('GET', `/templates/${templateID}/builds/${buildID}/status`)
      if (st.json.status === 'error') throw new Error(st.text)
      return st.json.status === 'ready'
    }, { tries: 300, intervalMs: 500 })
    const sbx = await Sandbox.create(legacyName)
    sbs.push(sbx)
    assert.equal((await sbx.files.read('/tmp/legacy.txt')).trim(), 'legacy-build')

    const copy = await api('POST', '/templates', { body: { alias: uniqueTag('legacycopy'), dockerfile: 'FROM base\nCOPY . /app\n' } })
    assert.equal(copy.status, 400, copy.text)
    assert.match(copy.json.message, /COPY/)

    const v2 = await api('POST', '/v2/templates', { body: { alias: uniqueTag('v2tpl'), cpuCount: 1, memoryMB: 512 } })
    assert.equal(v2.status, 202, v2.text)
    assert.ok(v2.json.buildID && v2.json.templateID)
    const st = await api('GET', `/templates/${v2.json.templateID}/builds/${v2.json.buildID}/status`)
    assert.equal(st.json.status, 'waiting')
    assert.equal((await api('DELETE', `/templates/${v2.json.templateID}`)).status, 204)
  })
})
