// The cluster definition-of-done load (tests/e2e/cluster_dod_test.go): the
// official E2B JS SDK creates COUNT sandboxes, CONCURRENCY at a time,
// alternating between the api replicas in API_URLS, and in each runs a
// command and writes and reads a file; every PTY_EVERY-th also opens a
// terminal. One JSON line per sandbox on stdout:
// {"i","id","api","createMs","firstCmdMs","doneMs","pty","error"}; doneMs is
// since the script started.
//
//   node cluster_dod.mjs <e2b index.mjs> (env: API_URLS, E2B_API_KEY, COUNT, CONCURRENCY, PTY_EVERY)
const { Sandbox } = await import(process.argv[2])

const apis = process.env.API_URLS.split(',')
const count = Number(process.env.COUNT)
const concurrency = Number(process.env.CONCURRENCY || 8)
const ptyEvery = Number(process.env.PTY_EVERY || 10)
const start = performance.now()

async function one(i) {
  const api = apis[i % apis.length]
  const out = { i, api }
  const t0 = performance.now()
  try {
    const sbx = await Sandbox.create('base', {
      apiUrl: api, sandboxUrl: api, timeoutMs: 20 * 60_000, requestTimeoutMs: 120_000,
      metadata: { dod: 'load', n: String(i) },
    })
    out.id = sbx.sandboxId
    out.createMs = performance.now() - t0
    const r = await sbx.commands.run(`echo dod-${i}`)
    out.firstCmdMs = performance.now() - t0
    if (r.stdout.trim() !== `dod-${i}`) throw new Error(`command stdout ${JSON.stringify(r.stdout)}`)
    const body = `file of sandbox ${i} `.repeat(1000)
    await sbx.files.write('/tmp/dod.txt', body)
    const back = await sbx.files.read('/tmp/dod.txt')
    if (back !== body) throw new Error(`file read back ${back.length} bytes, want ${body.length}`)
    if (i % ptyEvery === 0) {
      let seen = ''
      const done = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`pty output: ${JSON.stringify(seen)}`)), 60_000)
        out.resolvePty = () => { clearTimeout(timer); resolve() }
      })
      const term = await sbx.pty.create({
        cols: 80, rows: 24,
        onData: (d) => { seen += new TextDecoder().decode(d); if (seen.includes('pty-42')) out.resolvePty() },
      })
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo pty-$((6*7))\n'))
      await done
      delete out.resolvePty
      await sbx.pty.kill(term.pid)
      out.pty = true
    }
  } catch (e) {
    out.error = String(e && e.stack || e)
    delete out.resolvePty
  }
  out.doneMs = performance.now() - start
  return out
}

let next = 0
async function worker() {
  while (next < count) {
    const i = next++
    console.log(JSON.stringify(await one(i)))
  }
}
await Promise.all(Array.from({ length: concurrency }, worker))
// Streams the SDK keeps open (a terminal's, until its own timeout) would
// hold the process; every result is out.
process.exit(0)
