// sbx code interpreter: the JavaScript/TypeScript kernel, one node process
// per context, started as `node node_kernel.js [--typescript]` in the
// context's working directory.
//
// Protocol: one JSON request a line on stdin ({id, code, env, marker}); one
// JSON reply a line on fd 3 ({id, text?, error?}), then the marker and a
// status on stdout and on stderr, so the Go side knows it has all of the
// cell's output (see repl.go).
//
// A cell runs as a script in this process's own global scope, like Node's
// REPL: declarations persist between cells and may be declared again,
// `import` loads ES modules (npm packages installed in the sandbox and Node
// built-ins), top-level `await` works, and the value of a trailing
// expression is the cell's result. TypeScript is transpiled first (Babel's
// TypeScript transform: types are stripped, not checked).
//
// To get there the cell is parsed (acorn) and rewritten, keeping line
// numbers, before V8 compiles it:
//   - let/const/class at the top level become global bindings that a later
//     cell can declare again;
//   - a cell with `import` or top-level `await` runs in an async function,
//     its top-level names hoisted as globals, imports turned into awaited
//     dynamic imports, and its trailing expression returned.
'use strict'

const fs = require('fs')
const path = require('path')
const util = require('util')
const vm = require('vm')
const Module = require('module')
const readline = require('readline')
const { pathToFileURL } = require('url')
const { Writable } = require('stream')

// Captured before user code can replace them.
const writeSync = fs.writeSync
const fstatSync = fs.fstatSync
const exit = process.exit.bind(process)
const stringify = JSON.stringify
const bufferFrom = Buffer.from.bind(Buffer)
const inspect = util.inspect
const typescript = process.argv.includes('--typescript')

// ---------------------------------------------------------------------------
// Standard output and error

// process.stdout and process.stderr write straight to their descriptors.
// Node's own streams set a "write in progress" flag that the write's
// completion clears; an interrupt (breakOnSigint ends the cell wherever it
// is) landing between the two leaves the flag set, and every later write,
// the end marker included, queues behind a completion that never comes:
// after about one interrupted console.log loop in two, the context hung
// until it was killed. A synchronous write keeps no such state. The
// descriptors stay blocking (node makes them non-blocking when it opens its
// own pipe handle, which these replace before anything asks for it), so a
// full pipe makes a write wait, as in Python, instead of queueing.
const sleeper = new Int32Array(new SharedArrayBuffer(4))

function writeAll(fd, buf) {
  for (let off = 0; off < buf.length;) {
    try {
      off += writeSync(fd, buf, off)
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e
      Atomics.wait(sleeper, 0, 0, 1) // a child made it non-blocking
    }
  }
}

function directStream(fd) {
  const stream = new Writable({
    write(chunk, encoding, done) {
      writeAll(fd, chunk)
      done()
    },
  })
  // Console and most code call write; end() and pipe() keep Writable's.
  stream.write = function write(chunk, encoding, done) {
    if (typeof encoding === 'function') [done, encoding] = [encoding, undefined]
    writeAll(fd, typeof chunk === 'string' ? bufferFrom(chunk, encoding || 'utf8') : chunk)
    if (typeof done === 'function') process.nextTick(done, null)
    return true
  }
  return Object.assign(stream, { fd, isTTY: false, _type: 'pipe' })
}

const stdout = directStream(1)
const stderr = directStream(2)
for (const [name, stream] of [['stdout', stdout], ['stderr', stderr]]) {
  Object.defineProperty(process, name, { configurable: true, enumerable: true, get: () => stream })
}

// ---------------------------------------------------------------------------
// Libraries: Debian's node packages (node-acorn, node-babel7), found by path
// so that a different version in the user's node_modules never replaces them.

const libraryDirs = [
  ...(process.env.SBX_NODE_LIBRARY_PATH || '').split(':').filter(Boolean),
  '/usr/share/nodejs',
  '/usr/lib/nodejs',
  '/usr/local/lib/node_modules',
  '/usr/lib/node_modules',
]

function library(name, debianPackage) {
  for (const dir of libraryDirs) {
    const p = path.join(dir, name)
    if (!fs.existsSync(path.join(p, 'package.json'))) continue
    if (!Module.globalPaths.includes(dir)) {
      // Debian's node finds the dependencies of Debian's packages (Babel's
      // @babel/types, ...) in /usr/share/nodejs; another node needs telling.
      const saved = process.env.NODE_PATH
      process.env.NODE_PATH = [saved, dir].filter(Boolean).join(path.delimiter)
      Module._initPaths()
      if (saved === undefined) delete process.env.NODE_PATH
      else process.env.NODE_PATH = saved
    }
    return require(p)
  }
  throw new Error(`the JavaScript kernel needs the npm package ${name} (Debian package ${debianPackage}) in one of ${libraryDirs.join(', ')}`)
}

const acorn = library('acorn', 'node-acorn')
let babel, babelTS
function loadTypeScript() {
  if (!babel) {
    babel = library('@babel/core', 'node-babel7')
    babelTS = library('@babel/plugin-transform-typescript', 'node-babel7')
  }
}
if (typescript) {
  // Loading and first use of Babel take ~0.5 s: pay it while the context
  // is idle rather than in its first cell.
  loadTypeScript()
  transpile('const sbxWarmUp: number = 1')
}

// ---------------------------------------------------------------------------
// REPL globals: require, module, exports, __filename, __dirname as in
// Node's REPL, resolving from the working directory.

const replFile = path.join(process.cwd(), '[repl]')
const replModule = new Module(replFile, null)
replModule.filename = replFile
replModule.paths = Module._nodeModulePaths(process.cwd())
Object.assign(globalThis, {
  require: Module.createRequire(replFile),
  module: replModule,
  exports: replModule.exports,
  __filename: replFile,
  __dirname: process.cwd(),
})

// ---------------------------------------------------------------------------
// Module loading for `import` (static, rewritten, and dynamic): Node
// built-ins, paths relative to the working directory, and packages from
// node_modules of the working directory or above, then the global
// directories (npm install -g, Debian's node packages, NODE_PATH).

const builtins = new Set(Module.builtinModules)
const isBuiltin = (s) => s.startsWith('node:') || builtins.has(s)

function globalDirs() {
  return [
    ...(process.env.NODE_PATH || '').split(':').filter(Boolean),
    ...Module.globalPaths,
    '/usr/local/lib/node_modules',
    '/usr/lib/node_modules',
    '/usr/share/nodejs',
    '/usr/lib/nodejs',
  ]
}

function notFound(spec, why) {
  const err = new Error(`Cannot find package '${spec}' imported from ${process.cwd()}${why ? `: ${why}` : ''} (install it with \`npm install ${spec}\` in ${process.cwd()})`)
  err.code = 'ERR_MODULE_NOT_FOUND'
  return err
}

function fileOrIndex(p) {
  for (const c of [p, `${p}.js`, `${p}.mjs`, `${p}.cjs`, `${p}.json`, path.join(p, 'index.js'), path.join(p, 'index.mjs')]) {
    try {
      if (fs.statSync(c).isFile()) return c
    } catch {}
  }
  return null
}

// Conditional exports: the first key, in the package's order, that an
// importing Node matches; "require" only when nothing else fits (import()
// loads CommonJS too).
function exportTarget(target, conditions) {
  if (typeof target === 'string') return target
  if (Array.isArray(target)) {
    for (const t of target) {
      const r = exportTarget(t, conditions)
      if (r) return r
    }
    return null
  }
  if (target && typeof target === 'object') {
    for (const [key, value] of Object.entries(target)) {
      if (conditions.includes(key)) {
        const r = exportTarget(value, conditions)
        if (r) return r
      }
    }
  }
  return null
}

function packageExport(exports, subpath) {
  const isSubpathMap = exports && typeof exports === 'object' && !Array.isArray(exports) && Object.keys(exports).some((k) => k.startsWith('.'))
  for (const conditions of [['import', 'node', 'default'], ['require']]) {
    if (!isSubpathMap) {
      if (subpath === '.') {
        const t = exportTarget(exports, conditions)
        if (t) return t
      }
      continue
    }
    if (Object.prototype.hasOwnProperty.call(exports, subpath)) {
      const t = exportTarget(exports[subpath], conditions)
      if (t) return t
      continue
    }
    for (const [key, value] of Object.entries(exports)) {
      const star = key.indexOf('*')
      if (star < 0) continue
      const pre = key.slice(0, star)
      const post = key.slice(star + 1)
      if (subpath.startsWith(pre) && subpath.endsWith(post) && subpath.length >= pre.length + post.length) {
        const t = exportTarget(value, conditions)
        if (t) return t.replaceAll('*', subpath.slice(pre.length, subpath.length - post.length))
      }
    }
  }
  return null
}

function resolvePackage(spec) {
  const parts = spec.split('/')
  const nameLen = spec.startsWith('@') ? 2 : 1
  const name = parts.slice(0, nameLen).join('/')
  const subpath = parts.length > nameLen ? `./${parts.slice(nameLen).join('/')}` : '.'
  const candidates = []
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    candidates.push(path.join(dir, 'node_modules', name))
    if (dir === path.dirname(dir)) break
  }
  for (const dir of globalDirs()) candidates.push(path.join(dir, name))
  for (const dir of candidates) {
    let pkg
    try {
      pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
    } catch {
      continue
    }
    if (pkg.exports !== undefined) {
      const target = packageExport(pkg.exports, subpath)
      if (!target) throw notFound(spec, `${dir}/package.json does not export ${subpath}`)
      return path.resolve(dir, target)
    }
    const file = fileOrIndex(subpath === '.' ? path.resolve(dir, pkg.main || 'index.js') : path.resolve(dir, subpath))
    if (file) return file
    throw notFound(spec, `no entry point in ${dir}`)
  }
  throw notFound(spec)
}

// Deno's `npm:name@version/sub` specifiers (E2B's JavaScript kernel is
// Deno) name a package installed here; the version is not checked.
function fromNpmSpecifier(spec) {
  const m = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)(?:@[^/]*)?(\/.*)?$/.exec(spec)
  return m ? m[1] + (m[2] || '') : spec
}

function importModule(spec) {
  spec = fromNpmSpecifier(String(spec))
  if (isBuiltin(spec)) return import(spec.startsWith('node:') ? spec : `node:${spec}`)
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(spec)) return import(spec)
  if (spec === '.' || spec === '..' || spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) {
    return import(pathToFileURL(path.resolve(process.cwd(), spec)).href)
  }
  return import(pathToFileURL(resolvePackage(spec)).href)
}

// Static imports of names a module does not have fail as in ES modules.
function need(ns, spec, names) {
  for (const n of names) {
    if (!(n in ns)) throw new SyntaxError(`The requested module '${spec}' does not provide an export named '${n}'`)
  }
  return ns
}

// What rewritten cells call, as the global __sbx that cells cannot
// replace.
const helpers = { import: importModule, need, global: globalThis, meta: {} }
Object.defineProperty(globalThis, '__sbx', { value: helpers, enumerable: false, writable: false, configurable: false })

// ---------------------------------------------------------------------------
// TypeScript

function transpile(code) {
  const out = babel.transformSync(code, {
    filename: 'cell.ts',
    babelrc: false,
    configFile: false,
    highlightCode: false,
    sourceType: 'module',
    retainLines: true,
    compact: false,
    parserOpts: { allowAwaitOutsideFunction: true, allowReturnOutsideFunction: true, allowImportExportEverywhere: true },
    // A cell's imports may be used only by later cells: keep every import
    // not marked `import type`.
    plugins: [[babelTS, { onlyRemoveTypeImports: true, allowDeclareFields: true }]],
  })
  return out.code
}

// ---------------------------------------------------------------------------
// The rewrite

const parseOptions = {
  ecmaVersion: 'latest',
  sourceType: 'script',
  allowAwaitOutsideFunction: true,
  allowReturnOutsideFunction: true,
  allowImportExportEverywhere: true,
  allowHashBang: true,
}

// walk visits the nodes of the cell's top level scope: not the inside of
// functions (their awaits and imports are their own), yes the inside of
// blocks and expressions.
function walk(node, visit) {
  if (!node || typeof node.type !== 'string') return
  visit(node)
  if (/Function/.test(node.type)) return
  for (const key of Object.keys(node)) {
    const v = node[key]
    if (Array.isArray(v)) v.forEach((c) => walk(c, visit))
    else if (v && typeof v.type === 'string') walk(v, visit)
  }
}

function boundNames(pattern, out) {
  if (!pattern) return out
  switch (pattern.type) {
    case 'Identifier': out.push(pattern.name); break
    case 'ObjectPattern': pattern.properties.forEach((p) => boundNames(p.type === 'RestElement' ? p.argument : p.value, out)); break
    case 'ArrayPattern': pattern.elements.forEach((e) => boundNames(e, out)); break
    case 'RestElement': boundNames(pattern.argument, out); break
    case 'AssignmentPattern': boundNames(pattern.left, out); break
  }
  return out
}

// rewrite returns {code, async, prefixLines}: the script to compile and
// whether it evaluates to an async function taking the kernel's helpers.
function rewrite(source) {
  // A cell that is one object literal is an object, not a block (as in
  // Node's REPL).
  if (/^\s*\{/.test(source) && /\}\s*;?\s*$/.test(source)) {
    const wrapped = `(${source.replace(/;\s*$/, '')})`
    try {
      const ast = acorn.parse(wrapped, parseOptions)
      if (ast.body.length === 1 && ast.body[0].type === 'ExpressionStatement') return rewrite(wrapped)
    } catch {}
  }
  let ast
  try {
    ast = acorn.parse(source, parseOptions)
  } catch (err) {
    // Let V8 report it (its messages are the ones users know); if V8
    // accepts what acorn did not, run the cell as it is.
    return { code: source, async: false }
  }

  let needsAsync = false
  const metas = []
  for (const stmt of ast.body) {
    if (stmt.type === 'ImportDeclaration') needsAsync = true
    walk(stmt, (n) => {
      if (n.type === 'AwaitExpression' || (n.type === 'ForOfStatement' && n.await)) needsAsync = true
      if (n.type === 'MetaProperty' && n.meta.name === 'import') metas.push(n)
    })
  }
  if (metas.length) needsAsync = true
  // import() anywhere, functions included: V8 asks the embedder to load
  // the module, and node only lets vm scripts do that behind a flag.
  const dynamicImports = []
  ;(function all(node) {
    if (!node || typeof node.type !== 'string') return
    if (node.type === 'ImportExpression') dynamicImports.push(node)
    for (const key of Object.keys(node)) {
      const v = node[key]
      if (Array.isArray(v)) v.forEach(all)
      else if (v && typeof v.type === 'string') all(v)
    }
  })(ast)

  const edits = [] // {at, end, text}: replace source[at:end] with text
  const replace = (at, end, text) => edits.push({ at, end, text })
  const insert = (at, text) => edits.push({ at, end: at, text })
  // Keep the line count when a construct is replaced whole.
  const keepLines = (node, text) => text + '\n'.repeat(Math.max(0, (source.slice(node.start, node.end).match(/\n/g) || []).length - (text.match(/\n/g) || []).length))

  const hoisted = []
  const functions = []
  let last = null

  const declaration = (decl) => {
    if (decl.type === 'VariableDeclaration') {
      const names = []
      decl.declarations.forEach((d) => boundNames(d.id, names))
      hoisted.push(...names)
      if (!needsAsync) {
        // A global var may be declared again by a later cell.
        if (decl.kind !== 'var') replace(decl.start, decl.start + decl.kind.length, 'var'.padEnd(decl.kind.length))
        return
      }
      // `const a = 1, {b} = o;` → `void (a = 1, {b} = o);` assigning the
      // hoisted globals.
      replace(decl.start, decl.start + decl.kind.length, 'void (')
      for (const d of decl.declarations) {
        if (!d.init) insert(d.id.end, decl.kind === 'var' ? '' : ' = undefined')
      }
      const end = source[decl.end - 1] === ';' ? decl.end - 1 : decl.declarations[decl.declarations.length - 1].end
      insert(end, ')')
    } else if (decl.type === 'ClassDeclaration') {
      hoisted.push(decl.id.name)
      insert(decl.start, needsAsync ? `${decl.id.name} = ` : `var ${decl.id.name} = `)
      insert(decl.end, ';')
    } else if (decl.type === 'FunctionDeclaration') {
      hoisted.push(decl.id.name)
      if (needsAsync) functions.push(decl.id.name)
    }
  }

  let directives = 0
  ast.body.forEach((stmt, i) => {
    if (stmt.directive !== undefined && i === directives) directives++
    switch (stmt.type) {
      case 'VariableDeclaration':
      case 'ClassDeclaration':
      case 'FunctionDeclaration':
        declaration(stmt)
        break
      case 'ImportDeclaration': {
        const names = []
        let ns = null
        const props = []
        for (const s of stmt.specifiers) {
          hoisted.push(s.local.name)
          if (s.type === 'ImportNamespaceSpecifier') ns = s.local.name
          else {
            const imported = s.type === 'ImportDefaultSpecifier' ? 'default' : s.imported.type === 'Literal' ? s.imported.value : s.imported.name
            names.push(imported)
            props.push(`${stringify(imported)}: ${s.local.name}`)
          }
        }
        const load = `await __sbx.import(${stringify(stmt.source.value)})`
        let text
        if (ns && props.length) text = `(${ns} = ${load}, {${props.join(', ')}} = __sbx.need(${ns}, ${stringify(stmt.source.value)}, ${stringify(names)}));`
        else if (ns) text = `${ns} = ${load};`
        else if (props.length) text = `({${props.join(', ')}} = __sbx.need(${load}, ${stringify(stmt.source.value)}, ${stringify(names)}));`
        else text = `${load};`
        replace(stmt.start, stmt.end, keepLines(stmt, text))
        break
      }
      case 'ExportNamedDeclaration':
        if (stmt.declaration) {
          replace(stmt.start, stmt.declaration.start, '')
          declaration(stmt.declaration)
        } else {
          replace(stmt.start, stmt.end, keepLines(stmt, ''))
        }
        break
      case 'ExportDefaultDeclaration':
        if (/Declaration$/.test(stmt.declaration.type) && stmt.declaration.id) {
          replace(stmt.start, stmt.declaration.start, '')
          declaration(stmt.declaration)
        } else {
          replace(stmt.start, stmt.declaration.start, 'void ')
        }
        break
      case 'ExportAllDeclaration':
        replace(stmt.start, stmt.end, keepLines(stmt, ''))
        break
    }
    // The trailing expression is the result, even a lone 'string' (which
    // parses as a directive).
    if (i === ast.body.length - 1 && stmt.type === 'ExpressionStatement') last = stmt
  })
  for (const m of metas) replace(m.start, m.end, '__sbx.meta')
  // `import(` → `__sbx.import(`: the keyword only, the argument stays.
  for (const d of dynamicImports) replace(d.start, d.start + 'import'.length, '__sbx.import')

  if (!needsAsync) {
    // The script's completion value is the result: only a trailing
    // expression has one.
    let code = apply(source, edits)
    if (!last) code += '\n;void 0'
    return { code, async: false }
  }
  if (last) {
    insert(last.start, 'return (')
    insert(last.expression.end, ')')
  }
  if (functions.length) {
    // Function declarations are hoisted inside the async function; make
    // them global as they would be in a script.
    const at = directives ? ast.body[directives - 1].end : 0
    insert(at, functions.map((f) => ` __sbx.global[${stringify(f)}] = ${f};`).join(''))
  }
  const names = [...new Set(hoisted)]
  const prefix = `${names.length ? `var ${names.join(', ')};` : ''}(async () => {\n`
  return { code: `${prefix}${apply(source, edits)}\n})()`, async: true, prefixLines: 1 }
}

function apply(source, edits) {
  // From the end backwards, so offsets stay valid. At one offset a
  // replacement goes first and inserts then land before it, in the order
  // they were made.
  const order = edits
    .map((e, i) => ({ ...e, i }))
    .sort((a, b) => b.at - a.at || (a.end > a.at ? 0 : 1) - (b.end > b.at ? 0 : 1) || b.i - a.i)
  let out = source
  for (const e of order) out = out.slice(0, e.at) + e.text + out.slice(e.end)
  return out
}

// ---------------------------------------------------------------------------
// Running cells

let cellCount = 0
let onInterrupt = null
process.on('SIGINT', () => {
  if (onInterrupt) onInterrupt()
})
// What a cell leaves running may fail later: report it, do not die. When
// the report cannot be written either, stderr is gone (the server closed
// its end, or a cell closed fd 2): end. Node's own stream failed
// asynchronously, a new uncaught error whose report failed again, and the
// driver spun at full CPU for good, inside the sandbox.
function report(text) {
  try {
    writeAll(2, bufferFrom(text))
  } catch {
    exit(70)
  }
}
process.on('uncaughtException', (err) => report(`Uncaught ${errorOf(err).traceback}\n`))
process.on('unhandledRejection', (err) => report(`Unhandled promise rejection: ${errorOf(err).traceback}\n`))
// Experimental-feature notices (vm's dynamic import) are not the user's.
process.removeAllListeners('warning')
process.on('warning', (w) => {
  if (w.name !== 'ExperimentalWarning') report(`${w.name}: ${w.message}\n`)
})

function errorOf(e) {
  if (e && typeof e === 'object' && 'message' in e) {
    let name = e.name || (e.constructor && e.constructor.name) || 'Error'
    let value = String(e.message)
    if (/Script execution (was )?interrupted/.test(value)) {
      name = 'KeyboardInterrupt'
      value = 'Execution interrupted'
    }
    return { name, value, traceback: trimStack(String(e.stack || `${name}: ${value}`)) }
  }
  const value = typeof e === 'string' ? e : inspect(e)
  return { name: 'Error', value, traceback: `Uncaught ${value}` }
}

// Only the cell's frames and what it called: the frames below the cell's
// and those of this driver are not the user's.
function trimStack(stack) {
  let lines = stack.split('\n')
  let end = -1
  lines.forEach((l, i) => {
    if (/^\s+at .*<cell\d+>/.test(l)) end = i
  })
  if (end >= 0) lines = lines.slice(0, end + 1)
  return lines.filter((l) => !/^\s+at /.test(l) || !(l.includes(__filename) || /\(node:|at node:/.test(l))).join('\n')
}

function compileError(e, source, filename) {
  // SyntaxErrors from Babel carry a location; show it as V8 would.
  if (e && e.loc && typeof e.loc.line === 'number') {
    const line = source.split('\n')[e.loc.line - 1] || ''
    const message = String(e.message).split('\n')[0].replace(/^.*?cell\.ts: /, '').replace(/\s*\(\d+:\d+\)\s*$/, '')
    return { name: 'SyntaxError', value: message, traceback: `${filename}:${e.loc.line}\n${line}\n${' '.repeat(e.loc.column)}^\n\nSyntaxError: ${message}` }
  }
  return errorOf(e)
}

async function run(req) {
  const n = ++cellCount
  const filename = `<cell${n}>`
  const saved = {}
  for (const [k, v] of Object.entries(req.env || {})) {
    saved[k] = process.env[k]
    process.env[k] = v
  }
  let out
  try {
    let source = req.code
    if (typescript) {
      try {
        source = transpile(source)
      } catch (e) {
        out = { id: req.id, error: compileError(e, req.code, filename) }
        return
      }
    }
    const r = rewrite(source)
    const script = new vm.Script(r.code, {
      filename,
      lineOffset: r.async ? -r.prefixLines : 0,
      importModuleDynamically: (spec) => importModule(spec),
    })
    helpers.meta = {
      url: pathToFileURL(path.join(process.cwd(), filename)).href,
      resolve: (s) => pathToFileURL(path.resolve(process.cwd(), s)).href,
    }
    let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false })
    if (value && typeof value.then === 'function') {
      value = await Promise.race([
        value,
        new Promise((_, reject) => {
          onInterrupt = () => reject(Object.assign(new Error('Execution interrupted'), { name: 'KeyboardInterrupt' }))
        }),
      ])
    }
    out = { id: req.id }
    if (value !== undefined) out.text = typeof value === 'string' ? value : inspect(value)
  } catch (e) {
    out = { id: req.id, error: errorOf(e) }
  } finally {
    onInterrupt = null
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
    finish(out, req.marker)
  }
}

// The replies' pipe is fd 3, which node cannot move out of a cell's way
// (it has no dup): a cell may close it and open a file that gets the
// number, and a reply written there would never reach the server, which
// would wait for it for good. The same goes for the end markers on fd 1
// and 2. So each run's end first checks that the three are still the pipes
// they were (device and inode); when one is not, or writing to it fails,
// the driver ends, saying why on stderr if that is still its pipe: a death
// the server reports, restarting the context, instead of a hang.
function identity(fd) {
  try {
    const st = fstatSync(fd, { bigint: true })
    return `${st.dev}:${st.ino}`
  } catch {
    return null
  }
}
const pipes = [
  [3, identity(3), 'reply descriptor (3)'],
  [1, identity(1), 'stdout (1)'],
  [2, identity(2), 'stderr (2)'],
]

function finish(out, marker) {
  const lost = pipes.filter(([fd, id]) => identity(fd) !== id).map(([, , name]) => name)
  if (lost.length === 0) {
    try {
      writeSync(3, `${stringify(out)}\n`)
      const end = bufferFrom(`${marker}0\x1e`)
      writeAll(1, end)
      writeAll(2, end)
      return
    } catch (e) {
      lost.push(`pipes (${e.code || e})`)
    }
  }
  if (identity(2) === pipes[2][1]) {
    try {
      writeSync(2, `\nsbx: the cell closed or replaced the code interpreter's ${lost.join(', ')}; ` +
        'the JavaScript context ends here and restarts on the next run\n')
    } catch {}
  }
  exit(70)
}

const queue = []
let busy = false
async function pump() {
  if (busy) return
  busy = true
  while (queue.length) await run(queue.shift())
  busy = false
}
// The end of stdin is the server's: nobody is left to run cells for, even
// if one left timers or servers running that would keep node alive.
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  queue.push(JSON.parse(line))
  pump()
}).on('close', () => exit(0))
