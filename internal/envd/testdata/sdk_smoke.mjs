// Drives envd with the official E2B JS SDK (run by TestOfficialJSSDK).
// debug mode skips the control plane; sandboxUrl points the SDK at envd.
const { Sandbox } = await import(process.env.E2B_MODULE)
const dir = process.env.WORK_DIR
const sbx = await Sandbox.create({ debug: true, sandboxUrl: process.env.SANDBOX_URL })
const failures = []
const ok = (cond, what) => { if (!cond) failures.push(what) }

let r = await sbx.commands.run('echo hello; echo err >&2')
ok(r.stdout === 'hello\n' && r.stderr === 'err\n' && r.exitCode === 0, 'run: ' + JSON.stringify(r))
try { await sbx.commands.run('exit 4'); ok(false, 'exit 4 did not throw') } catch (e) { ok(e.exitCode === 4, 'CommandExitError: ' + e) }
r = await sbx.commands.run('echo $FOO; pwd', { envs: { FOO: 'bar' }, cwd: dir })
ok(r.stdout === `bar\n${dir}\n`, 'envs and cwd: ' + r.stdout)
const h = await sbx.commands.run('read x; echo got $x', { background: true, stdin: true })
await sbx.commands.sendStdin(h.pid, 'abc\n')
r = await h.wait()
ok(r.stdout === 'got abc\n', 'stdin: ' + r.stdout)
const h2 = await sbx.commands.run('sleep 100', { background: true })
ok((await sbx.commands.list()).some(p => p.pid === h2.pid), 'list')
ok(await sbx.commands.kill(h2.pid), 'kill')
try { await h2.wait(); ok(false, 'killed wait did not throw') } catch (e) { ok(e.exitCode === -1, 'killed: ' + e) }
ok(!(await sbx.commands.kill(999999)), 'kill of unknown pid is false')
const h3 = await sbx.commands.run('sleep 0.3; echo late', { background: true })
r = await (await sbx.commands.connect(h3.pid)).wait()
ok(r.stdout.includes('late'), 'connect: ' + r.stdout)
let ptyOut = ''
const p = await sbx.pty.create({ cols: 80, rows: 24, onData: d => { ptyOut += new TextDecoder().decode(d) } })
await sbx.pty.resize(p.pid, { cols: 100, rows: 30 })
await sbx.pty.sendInput(p.pid, new TextEncoder().encode('echo pty-$((1+2)); stty size; exit\n'))
await p.wait()
ok(ptyOut.includes('pty-3') && ptyOut.includes('30 100'), 'pty: ' + JSON.stringify(ptyOut))

await sbx.files.write(`${dir}/s/a.txt`, 'content')
ok((await sbx.files.read(`${dir}/s/a.txt`)) === 'content', 'write/read')
await sbx.files.write([{ path: `${dir}/s/b.txt`, data: 'B' }, { path: `${dir}/s/d/c.txt`, data: 'C' }])
ok((await sbx.files.list(`${dir}/s`, { depth: 2 })).length === 4, 'list depth 2')
ok(await sbx.files.exists(`${dir}/s/a.txt`), 'exists')
ok(!(await sbx.files.exists(`${dir}/s/zz`)), 'not exists')
ok(await sbx.files.makeDir(`${dir}/s/new`), 'makeDir')
ok(!(await sbx.files.makeDir(`${dir}/s/new`)), 'makeDir of existing dir is false')
ok((await sbx.files.rename(`${dir}/s/a.txt`, `${dir}/s/a2.txt`)).name === 'a2.txt', 'rename')
const info = await sbx.files.getInfo(`${dir}/s/a2.txt`)
ok(info.size === 7 && info.type === 'file' && info.permissions === '-rw-r--r--', 'getInfo: ' + JSON.stringify(info))
const events = []
const w = await sbx.files.watchDir(`${dir}/s`, ev => events.push(ev), { recursive: true })
await sbx.files.write(`${dir}/s/d/w.txt`, 'w')
for (let i = 0; i < 100 && !events.some(e => e.name === 'd/w.txt'); i++) await new Promise(r => setTimeout(r, 20))
await w.stop()
ok(events.some(e => e.name === 'd/w.txt' && e.type === 'create'), 'watchDir: ' + JSON.stringify(events))
await sbx.files.write(`${dir}/gz.txt`, 'gzdata', { gzip: true })
ok((await sbx.files.read(`${dir}/gz.txt`, { gzip: true })) === 'gzdata', 'gzip write/read')
await sbx.files.remove(`${dir}/s`)
ok(!(await sbx.files.exists(`${dir}/s`)), 'remove')
ok(await sbx.isRunning(), 'isRunning')
try { await sbx.commands.run('sleep 5', { timeoutMs: 300 }); ok(false, 'timeout did not throw') } catch (e) { ok(e.name === 'TimeoutError', 'timeout: ' + e) }

if (failures.length) { console.log(failures.join('\n')); process.exit(1) }
console.log('all ok')
