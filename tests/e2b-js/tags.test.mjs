// Template tags through the official SDK: Template.build('name:tag') and
// build options tags[], Template.assignTags / getTags / removeTags, and
// Sandbox.create('name:tag') starting from the tagged build while rebuilds
// move the default tag; a sandbox keeps the build it started from.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox, Template, TemplateError } from 'e2b'

import { integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()
const created = new Set()

// One small RUN step on base: fast, and the content tells builds apart.
function versioned(version) {
  return Template().fromTemplate('base').runCmd(`echo ${version} > /opt/version.txt`, { user: 'root' })
}

async function version(sbx) {
  return (await sbx.commands.run('cat /opt/version.txt')).stdout.trim()
}

async function start(ref) {
  const sbx = await Sandbox.create(ref)
  created.add(sbx)
  return sbx
}

integration(env, 'template tags', () => {
  after(() => killAll(created))

  it('tags builds, starts sandboxes from tags, and keeps running sandboxes on their build', async () => {
    const name = uniqueTag('jstags')
    const v1 = await Template.build(versioned('v1'), `${name}:v1`, { cpuCount: 1, memoryMB: 512 })
    const fromV1 = await start(`${name}:v1`)
    assert.equal(await version(fromV1), 'v1')

    // A rebuild with tags[]: the new build is the default (latest) one.
    const v2 = await Template.build(versioned('v2'), name, { cpuCount: 1, memoryMB: 512, tags: ['v2', 'edge'] })
    assert.equal(v2.templateId, v1.templateId)
    assert.notEqual(v2.buildId, v1.buildId)
    assert.equal(await version(await start(name)), 'v2')
    assert.equal(await version(await start(`${name}:default`)), 'v2')
    assert.equal(await version(await start(`${name}:v1`)), 'v1')
    // The sandbox started from v1 before the rebuild still runs on v1.
    assert.equal(await version(fromV1), 'v1')
    assert.equal((await fromV1.commands.run('echo still-here')).stdout, 'still-here\n')

    const tags = await Template.getTags(name)
    const byTag = Object.fromEntries(tags.map((t) => [t.tag, t.buildId]))
    assert.deepEqual(byTag, { default: v2.buildId, edge: v2.buildId, v1: v1.buildId, v2: v2.buildId })
    assert.ok(tags.every((t) => t.createdAt instanceof Date && !Number.isNaN(t.createdAt.getTime())), JSON.stringify(tags))
    assert.deepEqual(
      (await Template.getTags(v1.templateId)).map((t) => t.tag),
      tags.map((t) => t.tag),
    )

    // Promote v1 to stable; stable then starts v1 although v2 is the latest build.
    const assigned = await Template.assignTags(`${name}:v1`, ['stable', 'prod'])
    assert.equal(assigned.buildId, v1.buildId)
    assert.deepEqual(assigned.tags, ['stable', 'prod'])
    assert.equal(await version(await start(`${name}:stable`)), 'v1')

    await Template.removeTags(name, ['stable', 'prod'])
    await assert.rejects(Sandbox.create(`${name}:stable`), (err) => {
      assert.match(err.message, new RegExp(`"${name}" has no tag "stable"`))
      assert.match(err.message, /default, edge, v1, v2/)
      return true
    })
    await assert.rejects(Template.removeTags(name, 'nope'), (err) => {
      assert.ok(err instanceof TemplateError, `got ${err}`)
      assert.match(err.message, /no tag "nope"/)
      return true
    })
    await assert.rejects(Template.assignTags(`${name}:v1`, 'default'), TemplateError)
  })
})
