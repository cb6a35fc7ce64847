// Teams: a second team (its own API key from `sbx team create`) never sees or
// touches the first team's sandboxes, through the official SDK.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox, SandboxNotFoundError } from 'e2b'

import { createTeam, integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'teams', () => {
  let other
  let mine
  let theirs
  before(() => {
    other = createTeam(env, uniqueTag('team'))
  })
  after(() => killAll([mine, theirs]))

  it('a team sees only its own sandboxes', async (t) => {
    if (!other) return t.skip('needs the harness-managed server (sbx team create uses its data dir)')
    const tag = uniqueTag('teams')
    mine = await Sandbox.create({ metadata: { run: tag } })
    theirs = await Sandbox.create({ apiKey: other, metadata: { run: tag } })

    const mineListed = await Sandbox.list({ query: { metadata: { run: tag } } }).nextItems()
    assert.deepEqual(mineListed.map((s) => s.sandboxId), [mine.sandboxId])
    const theirsListed = await Sandbox.list({ apiKey: other, query: { metadata: { run: tag } } }).nextItems()
    assert.deepEqual(theirsListed.map((s) => s.sandboxId), [theirs.sandboxId])

    await assert.rejects(Sandbox.getInfo(mine.sandboxId, { apiKey: other }), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect(mine.sandboxId, { apiKey: other }), SandboxNotFoundError)
    await assert.rejects(Sandbox.setTimeout(mine.sandboxId, 1_000, { apiKey: other }), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(mine.sandboxId, { apiKey: other }), false, 'another team killed my sandbox')

    assert.equal(await mine.isRunning(), true)
    const info = await mine.getInfo()
    assert.ok(info.endAt - Date.now() > 60_000, 'another team shortened my sandbox timeout')

    // And the other way round.
    await assert.rejects(Sandbox.getInfo(theirs.sandboxId), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(theirs.sandboxId), false)
    assert.equal((await theirs.commands.run('echo still-here')).stdout, 'still-here\n')
  })
})
