// Template builds through the official SDK's Template.build(): the
// "template as code" flow (POST /v3/templates, file hashes and uploads,
// POST /v2/templates/{id}/builds/{buildID}, status polling with logs), a
// Dockerfile import, the layer cache on an unchanged rebuild, and a failing
// step surfacing as BuildError with the command's exit code and output.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, it } from 'node:test'

import { BuildError, Sandbox, Template, waitForProcess } from 'e2b'

import { integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()
const created = new Set()

function contextDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbx-tpl-js-'))
  fs.mkdirSync(path.join(dir, 'app'))
  fs.writeFileSync(path.join(dir, 'app', 'main.py'), "print('hello from the template')\n")
  fs.writeFileSync(path.join(dir, 'app', 'data.txt'), 'data v1\n')
  return dir
}

function sdkTemplate(dir) {
  return Template({ fileContextPath: dir })
    .fromTemplate('base')
    .setEnvs({ GREETING: 'hi from sdk' })
    .runCmd('echo built-by-root > /opt/marker.txt', { user: 'root' })
    .copy('app', '/home/user/app/')
    .setWorkdir('/home/user/app')
    .setUser('user')
    .setStartCmd('sleep 1000', waitForProcess('sleep'))
}

async function build(template, name, logs = []) {
  const t0 = Date.now()
  const info = await Template.build(template, name, {
    cpuCount: 1,
    memoryMB: 512,
    onBuildLogs: (e) => logs.push(String(e.message)),
  })
  return { info, logs, ms: Date.now() - t0 }
}

integration(env, 'template builds', () => {
  after(() => killAll(created))

  it('builds with Template.build and starts sandboxes from it', async () => {
    const dir = contextDir()
    const name = uniqueTag('jstpl')
    const first = await build(sdkTemplate(dir), name)
    assert.match(first.info.templateId, /^[a-z0-9]{20}$/)
    assert.ok(first.info.buildId)
    assert.ok(first.logs.some((l) => l.includes('RUN echo built-by-root')), first.logs.join('\n'))

    const sbx = await Sandbox.create(name)
    created.add(sbx)
    const r = await sbx.commands.run(
      'whoami; pwd; echo "G=$GREETING"; cat /opt/marker.txt; cat /home/user/app/main.py; stat -c %U /home/user/app/main.py; pgrep -x sleep >/dev/null && echo start-cmd-running',
    )
    assert.match(r.stdout, /^user\n\/home\/user\/app\n/)
    assert.match(r.stdout, /G=hi from sdk/)
    assert.match(r.stdout, /built-by-root/)
    assert.match(r.stdout, /hello from the template/)
    assert.match(r.stdout, /start-cmd-running/)

    // Unchanged rebuild: every layer from the cache, a new build of the same template.
    const second = await build(sdkTemplate(dir), name)
    assert.equal(second.info.templateId, first.info.templateId)
    assert.notEqual(second.info.buildId, first.info.buildId)
    assert.ok(second.logs.some((l) => /0 built|CACHED/.test(l)), second.logs.join('\n'))
    assert.ok(!second.logs.some((l) => /\] RUN echo built-by-root/.test(l) && !/CACHED/.test(l)), second.logs.join('\n'))
    console.log(`# template build ${first.ms} ms, unchanged rebuild ${second.ms} ms`)

    // Changing a copied file rebuilds the COPY step; the running sandbox keeps its build.
    fs.writeFileSync(path.join(dir, 'app', 'data.txt'), 'data v2\n')
    await build(sdkTemplate(dir), name)
    const sbx2 = await Sandbox.create(name)
    created.add(sbx2)
    assert.equal((await sbx2.commands.run('cat /home/user/app/data.txt')).stdout, 'data v2\n')
    assert.equal((await sbx.commands.run('cat /home/user/app/data.txt')).stdout, 'data v1\n')
  })

  it('imports a Dockerfile', async () => {
    const dir = contextDir()
    const name = uniqueTag('jsdf')
    const template = Template({ fileContextPath: dir }).fromDockerfile(
      'FROM e2bdev/base\nENV MODE=docker\nWORKDIR /srv\nCOPY app/main.py ./main.py\nRUN python3 main.py > out.txt\n',
    )
    await build(template, name)
    const sbx = await Sandbox.create(name)
    created.add(sbx)
    const r = await sbx.commands.run('cat /srv/out.txt; echo "MODE=$MODE"')
    assert.match(r.stdout, /hello from the template/)
    assert.match(r.stdout, /MODE=docker/)
  })

  it('reports a failing step as BuildError with exit code and output', async () => {
    const name = uniqueTag('jsbad')
    const template = Template().fromTemplate('base').runCmd('echo about-to-fail && exit 7')
    await assert.rejects(build(template, name), (err) => {
      assert.ok(err instanceof BuildError, `got ${err}`)
      assert.match(err.message, /exit code 7/)
      assert.match(err.message, /about-to-fail/)
      return true
    })
  })
})
