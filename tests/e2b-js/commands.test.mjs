// commands.* and pty.* through the official SDK (envd process.Process over the
// sandbox proxy).

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { CommandExitError, Sandbox, TimeoutError } from 'e2b'

import { integration, killAll, pollUntil, setup } from './harness.mjs'

const env = await setup()

integration(env, 'commands', () => {
  let sbx
  before(async () => {
    sbx = await Sandbox.create()
  })
  after(() => killAll([sbx]))

  it('returns stdout, stderr and exit code 0', async () => {
    const r = await sbx.commands.run('echo out-line; echo err-line >&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out-line\n')
    assert.equal(r.stderr, 'err-line\n')
  })

  it('streams output to onStdout/onStderr callbacks', async () => {
    const out = []
    const errs = []
    await sbx.commands.run('for i in 1 2 3; do echo o$i; echo e$i >&2; done', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => errs.push(d),
    })
    assert.equal(out.join(''), 'o1\no2\no3\n')
    assert.equal(errs.join(''), 'e1\ne2\ne3\n')
  })

  it('raises CommandExitError on a non-zero exit, with the output', async () => {
    const err = await sbx.commands.run('echo partial; echo broken >&2; exit 7').catch((e) => e)
    assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${err?.constructor?.name}: ${err?.message}`)
    assert.equal(err.exitCode, 7)
    assert.equal(err.stdout, 'partial\n')
    assert.equal(err.stderr, 'broken\n')
  })

  it('runs in the default user\'s home unless cwd is given', async () => {
    assert.equal((await sbx.commands.run('pwd')).stdout.trim(), '/home/user')
    assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout.trim(), '/tmp')
    await sbx.commands.run('mkdir -p /home/user/proj/sub')
    assert.equal((await sbx.commands.run('pwd', { cwd: '/home/user/proj/sub' })).stdout.trim(), '/home/user/proj/sub')
  })

  it('passes per-command envs without leaking them to later commands', async () => {
    const r = await sbx.commands.run('echo "$FOO-$BAR"', { envs: { FOO: 'foo value', BAR: 'b=1' } })
    assert.equal(r.stdout, 'foo value-b=1\n')
    const later = await sbx.commands.run('echo "${FOO:-unset}"')
    assert.equal(later.stdout, 'unset\n')
  })

  it('runs as user "user" by default and as root when asked', async () => {
    const def = await sbx.commands.run('whoami; id -u; echo $HOME')
    const [who, uid, home] = def.stdout.trim().split('\n')
    assert.equal(who, 'user')
    assert.notEqual(uid, '0')
    assert.equal(home, '/home/user')

    const root = await sbx.commands.run('whoami; id -u', { user: 'root' })
    assert.deepEqual(root.stdout.trim().split('\n'), ['root', '0'])

    // The default user has passwordless sudo, as on E2B.
    assert.equal((await sbx.commands.run('sudo -n whoami')).stdout.trim(), 'root')
  })

  it('runs in the background and can be reconnected to by pid', async () => {
    const gate = '/tmp/bg-gate'
    const h = await sbx.commands.run(`while [ ! -e ${gate} ]; do sleep 0.05; done; echo finished; exit 3`, {
      background: true,
    })
    assert.ok(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`)

    const listed = await sbx.commands.list()
    assert.ok(listed.some((p) => p.pid === h.pid), `commands.list lacks pid ${h.pid}: ${JSON.stringify(listed)}`)

    await h.disconnect()
    const out = []
    const again = await sbx.commands.connect(h.pid, { onStdout: (d) => out.push(d) })
    assert.equal(again.pid, h.pid)

    await sbx.commands.run(`touch ${gate}`)
    const err = await again.wait().catch((e) => e)
    assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${err?.constructor?.name}: ${err?.message}`)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'finished\n')
    assert.equal(out.join(''), 'finished\n')
  })

  it('sends stdin to a command started with stdin: true', async () => {
    const h = await sbx.commands.run('read a; read b; echo "got:$a,$b"', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'first\n')
    await h.sendStdin('second\n')
    const r = await h.wait()
    assert.equal(r.stdout, 'got:first,second\n')
  })

  it('closeStdin delivers EOF', async () => {
    const h = await sbx.commands.run('cat; echo "<eof>"', { background: true, stdin: true })
    await h.sendStdin('abc\n')
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout, 'abc\n<eof>\n')
  })

  it('kill stops a running command; killing it again returns false', async () => {
    const h = await sbx.commands.run('sleep 600', { background: true })
    assert.equal(await sbx.commands.kill(h.pid), true)
    const err = await h.wait().catch((e) => e)
    assert.ok(err instanceof CommandExitError, `wait after kill: want CommandExitError, got ${err?.constructor?.name}: ${err?.message}`)
    assert.notEqual(err.exitCode, 0)

    await pollUntil(`killed pid ${h.pid} to leave commands.list`, async () =>
      !(await sbx.commands.list()).some((p) => p.pid === h.pid),
    )
    assert.equal(await sbx.commands.kill(h.pid), false)

    const h2 = await sbx.commands.run('sleep 600', { background: true })
    assert.equal(await h2.kill(), true)
    await h2.wait().catch(() => {})
  })

  it('timeoutMs ends a command that runs too long', async () => {
    const err = await sbx.commands.run('sleep 300 && echo never', { timeoutMs: 1_500 }).catch((e) => e)
    assert.ok(err instanceof TimeoutError, `want TimeoutError, got ${err?.constructor?.name}: ${err?.message}`)
    // envd kills the process when its deadline passes.
    await pollUntil('the timed-out sleep to be gone', async () =>
      (await sbx.commands.run('pgrep -x -f "sleep 300" || true')).stdout.trim() === '',
    )
  })

  it('commands.list describes running commands', async () => {
    const h = await sbx.commands.run('sleep 300', { background: true, envs: { LISTED: 'yes' }, cwd: '/tmp' })
    try {
      const p = (await sbx.commands.list()).find((x) => x.pid === h.pid)
      assert.ok(p, `pid ${h.pid} not listed`)
      assert.equal(p.cmd, '/bin/bash')
      assert.ok(p.args.includes('sleep 300'), `args ${JSON.stringify(p.args)}`)
      assert.equal(p.envs.LISTED, 'yes')
      assert.equal(p.cwd, '/tmp')
    } finally {
      await h.kill()
    }
  })

  it('commands.connect to an unknown pid fails', async () => {
    await assert.rejects(sbx.commands.connect(999999), /not found|999999/i)
  })
})

integration(env, 'pty', () => {
  let sbx
  before(async () => {
    sbx = await Sandbox.create()
  })
  after(() => killAll([sbx]))

  it('creates a terminal, takes input, resizes and is killed', async () => {
    const chunks = []
    const text = () => Buffer.concat(chunks.map((c) => Buffer.from(c))).toString('utf8')
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => chunks.push(d) })
    assert.ok(term.pid > 0)

    const enc = new TextEncoder()
    await sbx.pty.sendInput(term.pid, enc.encode('echo pty-$((6*7)); tty; stty size\n'))
    await pollUntil('pty echo output', () => /pty-42/.test(text()) && /24 80/.test(text()), { tries: 100 })
    assert.match(text(), /\/dev\/pts\/\d+/, 'the shell should run on a pseudo-terminal')

    await sbx.pty.resize(term.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(term.pid, enc.encode('stty size\n'))
    await pollUntil('resized pty size', () => /30 100/.test(text()), { tries: 100 })

    await sbx.pty.sendInput(term.pid, enc.encode('echo "$TERM"\n'))
    await pollUntil('TERM inside pty', () => /xterm-256color/.test(text()), { tries: 100 })

    assert.equal(await sbx.pty.kill(term.pid), true)
    const end = await term.wait().catch((e) => e)
    assert.ok(end instanceof CommandExitError, `wait after pty kill: ${end?.constructor?.name}: ${end?.message}`)
    assert.equal(await sbx.pty.kill(term.pid), false)
  })

  it('a pty shell that exits ends the stream with its exit code', async () => {
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('exit 0\n'))
    const r = await term.wait()
    assert.equal(r.exitCode, 0)
  })
})
