// Host -> sandbox traffic through the sandbox proxy: a server started inside a
// sandbox is reachable with plain fetch on E2B_SANDBOX_URL plus the
// E2b-Sandbox-Id / E2b-Sandbox-Port headers; closed ports and unknown or
// killed sandboxes get the 502 JSON bodies of docs/architecture.md.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from 'e2b'

import { integration, killAll, pollUntil, sandboxFetch, setup, uniqueTag } from './harness.mjs'

const env = await setup()

integration(env, 'sandbox proxy', () => {
  let a
  let b
  const token = uniqueTag('served')
  before(async () => {
    ;[a, b] = await Promise.all([Sandbox.create(), Sandbox.create()])
  })
  after(() => killAll([a, b]))

  it('reaches envd /health through the proxy', async () => {
    const r = await sandboxFetch(a.sandboxId, 49983, '/health')
    assert.ok(r.status >= 200 && r.status < 300, `GET /health via proxy: ${r.status} ${r.text}`)
  })

  it('envd requires the access token and hides /init', async () => {
    const stat = (headers) =>
      sandboxFetch(a.sandboxId, 49983, '/filesystem.Filesystem/Stat', {
        method: 'POST',
        body: JSON.stringify({ path: '/home/user' }),
        headers: { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1', ...headers },
      })
    assert.ok(a.envdAccessToken, 'e2b 2.51 creates secured sandboxes: envdAccessToken expected')
    const ok = await stat({ 'X-Access-Token': a.envdAccessToken })
    assert.equal(ok.status, 200, ok.text)
    assert.equal(ok.json?.entry?.path, '/home/user')
    for (const token of [undefined, 'wrong-token']) {
      const r = await stat(token ? { 'X-Access-Token': token } : {})
      assert.equal(r.status, 401, `token ${token}: ${r.status} ${r.text}`)
    }
    const files = await sandboxFetch(a.sandboxId, 49983, '/files?path=/etc/hostname')
    assert.equal(files.status, 401, `GET /files without token or signature: ${files.status} ${files.text}`)

    const init = await sandboxFetch(a.sandboxId, 49983, '/init', {
      method: 'POST',
      body: JSON.stringify({ accessToken: 'takeover' }),
      headers: { 'Content-Type': 'application/json' },
    })
    assert.equal(init.status, 404, `/init must not be reachable through the proxy: ${init.status} ${init.text}`)
    assert.equal((await stat({ 'X-Access-Token': a.envdAccessToken })).status, 200, 'token changed through the proxy')
  })

  it('reaches a server started inside the sandbox', async () => {
    await a.files.write('/home/user/site/hello.txt', token)
    await a.commands.run('python3 -m http.server 8000', { background: true, cwd: '/home/user/site', timeoutMs: 0 })

    const r = await pollUntil(
      'python http.server on port 8000 to answer through the proxy',
      async () => {
        const res = await sandboxFetch(a.sandboxId, 8000, '/hello.txt')
        return res.status === 200 ? res : undefined
      },
      { tries: 100, intervalMs: 200 },
    )
    assert.equal(r.text, token)

    // Status codes of the inner server pass through unchanged.
    const missing = await sandboxFetch(a.sandboxId, 8000, '/no-such-file')
    assert.equal(missing.status, 404)
    assert.match(missing.text, /File not found/)
  })

  it('forwards POST bodies and streamed replies whole, request after request', async () => {
    // A keep-alive client posting to a server that answers with a chunked,
    // flushed reply: the same shape as the code interpreter's /execute. A
    // proxy that races the inbound body against the reply cuts a few percent
    // of these, so many round trips are made.
    const server = [
      'from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer',
      'class H(BaseHTTPRequestHandler):',
      "    protocol_version = 'HTTP/1.1'",
      '    def log_message(self, *a): pass',
      '    def do_POST(self):',
      "        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))",
      '        self.send_response(200)',
      "        self.send_header('Transfer-Encoding', 'chunked')",
      '        self.end_headers()',
      '        for part in (b"echo:", body, b"\\n"):',
      "            self.wfile.write(b'%x\\r\\n%s\\r\\n' % (len(part), part))",
      '            self.wfile.flush()',
      "        self.wfile.write(b'0\\r\\n\\r\\n')",
      "ThreadingHTTPServer(('127.0.0.1', 8002), H).serve_forever()",
    ].join('\n')
    await a.files.write('/tmp/echo_server.py', server)
    await a.commands.run('python3 /tmp/echo_server.py', { background: true, timeoutMs: 0 })
    await pollUntil('echo server on port 8002', async () =>
      (await sandboxFetch(a.sandboxId, 8002, '/', { method: 'POST', body: 'ping' })).status === 200,
    )

    const failures = []
    for (let i = 0; i < 120; i++) {
      const payload = JSON.stringify({ i, pad: 'x'.repeat(i * 7) })
      try {
        const r = await sandboxFetch(a.sandboxId, 8002, `/run/${i}`, {
          method: 'POST',
          body: payload,
          headers: { 'Content-Type': 'application/json' },
        })
        if (r.status !== 200 || r.text !== `echo:${payload}\n`) failures.push(`#${i}: ${r.status} ${r.text.slice(0, 80)}`)
      } catch (err) {
        failures.push(`#${i}: ${err.cause?.message ?? err.message}`)
      }
    }
    assert.deepEqual(failures, [], `${failures.length}/120 round trips through the proxy failed`)
  })

  it('routes by sandbox: the other sandbox has nothing on that port', async () => {
    const r = await sandboxFetch(b.sandboxId, 8000, '/hello.txt')
    assert.equal(r.status, 502, `want 502 from ${b.sandboxId}:8000, got ${r.status} ${r.text}`)
    assert.deepEqual(r.json, {
      sandboxId: b.sandboxId,
      message: 'The sandbox is running but port is not open',
      port: 8000,
      code: 502,
    })
  })

  it('answers 502 "port is not open" for a closed port', async () => {
    const r = await sandboxFetch(a.sandboxId, 8001, '/')
    assert.equal(r.status, 502)
    assert.deepEqual(r.json, {
      sandboxId: a.sandboxId,
      message: 'The sandbox is running but port is not open',
      port: 8001,
      code: 502,
    })
  })

  it('answers 502 "not found" for an unknown sandbox', async () => {
    const id = 'nosuchsandbox0000000'
    const r = await sandboxFetch(id, 49983, '/health')
    assert.equal(r.status, 502)
    assert.deepEqual(r.json, { sandboxId: id, message: 'The sandbox was not found', code: 502 })
  })

  it('answers 502 "not found" once the sandbox is killed', async () => {
    const c = await Sandbox.create()
    try {
      await c.commands.run('python3 -m http.server 8000', { background: true, timeoutMs: 0 })
      await pollUntil('server in the short-lived sandbox', async () => (await sandboxFetch(c.sandboxId, 8000, '/')).status === 200)
    } finally {
      await c.kill()
    }
    for (const port of [49983, 8000]) {
      const r = await sandboxFetch(c.sandboxId, port, '/')
      assert.equal(r.status, 502, `port ${port} after kill: ${r.status} ${r.text}`)
      assert.deepEqual(r.json, { sandboxId: c.sandboxId, message: 'The sandbox was not found', code: 502 })
    }
  })
})
