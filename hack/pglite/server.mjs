#!/usr/bin/env node
// A PostgreSQL wire-protocol front over PGlite with TimescaleDB, for tests and
// dev mode: `node server.mjs --data-dir DIR --host 127.0.0.1 --port PORT`.
//
// PGlite is one embedded backend, i.e. one session, fed whole protocol
// messages. Several clients (an asyncpg pool) share it here, so the front:
// - hands the session to one client at a time, switching only when the
//   backend reports ReadyForQuery 'I' (never inside a transaction);
// - renames prepared statements per connection (every asyncpg connection
//   names its first one __asyncpg_stmt_1__);
// - answers startup itself (trust auth, SSL declined) and closes the socket
//   on Terminate, which asyncpg's close() waits for;
// - buffers COPY FROM STDIN and hands it to PGlite in one call (the backend
//   cannot wait for more input: a lone COPY query aborts the WASM instance);
// - loads TimescaleDB's library at boot on a reopened data dir (see boot());
// - keeps PGlite's session defaults normal: its reset value of search_path is
//   pg_catalog and of client_min_messages debug3 (every statement would send
//   DEBUG notices), so they are set at boot and again after RESET ALL.
// PGlite is never sent a startup packet: without one it answers every Query
// and Sync with ReadyForQuery, which the front reads the transaction status from.
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'

import {
  CANCEL_REQUEST, GSSENC_REQUEST, MessageReader, PROTOCOL_3, SSL_REQUEST, SYNC,
  backendMessages, dataRow, errorResponse, int32, message, query, readCstr, readyForQuery,
} from './wire.mjs'

// Reported at startup; asyncpg derives its capabilities from server_version.
const REPORTED = [
  'server_version', 'server_encoding', 'client_encoding', 'DateStyle', 'IntervalStyle',
  'TimeZone', 'integer_datetimes', 'standard_conforming_strings', 'is_superuser',
  'session_authorization', 'application_name',
]
const COPY_IN = /\bcopy\b[^;]*\bfrom\s+stdin\b/i
const COPY_IN_EXTENDED =
  "DO $$BEGIN RAISE EXCEPTION 'COPY FROM STDIN is only supported in the simple query protocol here'; END$$"
const RESETS_DEFAULTS = /\b(reset\s+(all|search_path|client_min_messages)|discard\s+all)\b/i
const DEBUG = Boolean(process.env.PGLITE_FRONT_DEBUG)
const debug = DEBUG ? (...a) => console.error('[front]', ...a) : () => {}

/** Last ReadyForQuery status ('' if none) and whether an ErrorResponse came back. */
function scan(out) {
  let status = ''
  let error = false
  for (const m of backendMessages(out)) {
    if (m.type === 'Z') status = String.fromCharCode(m.body[0])
    if (m.type === 'E') error = true
  }
  return { status, error }
}

function withoutFirst(out, type) {
  for (const m of backendMessages(out)) {
    if (m.type === type) return Buffer.concat([out.subarray(0, m.start), out.subarray(m.end)])
  }
  return out
}

const typesOf = (parts) => parts.map((p) => String.fromCharCode(p[0])).join('')

const SLICE_MESSAGES = 256
const SLICE_BYTES = 32 * 1024

/** Consecutive runs of at most SLICE_MESSAGES messages and (unless one is bigger) SLICE_BYTES. */
export function* slices(parts) {
  let slice = []
  let bytes = 0
  for (const p of parts) {
    if (slice.length > 0 && (slice.length >= SLICE_MESSAGES || bytes + p.length > SLICE_BYTES)) {
      yield slice
      slice = []
      bytes = 0
    }
    slice.push(p)
    bytes += p.length
  }
  if (slice.length > 0) yield slice
}

class ProtocolError extends Error {}

/** The one PGlite backend, lent to one connection at a time. */
class Session {
  constructor(db, onBroken) {
    this.db = db
    this.onBroken = onBroken
    this.owner = null
    this.waiters = []
    this.broken = null
    this.params = {}
    this.defaults = ''
  }

  async boot() {
    const names = REPORTED.map((n) => `'${n}'`).join(',')
    const out = await this.exec([query(`SELECT name, setting FROM pg_settings WHERE name IN (${names})`)])
    for (const m of backendMessages(out)) if (m.type === 'D') { const [k, v] = dataRow(m.body); this.params[k] = v }
    const sp = await this.exec([query('SHOW search_path')])
    let searchPath = 'public'
    for (const m of backendMessages(sp)) if (m.type === 'D') searchPath = dataRow(m.body)[0]
    this.defaults = `SET search_path TO ${searchPath}; SET client_min_messages TO notice`
    await this.restoreDefaults()
    // On a reopened data dir the extension runs without its TSL module until the
    // library is loaded explicitly: continuous aggregates were refused as "not
    // supported under the current license".
    const ext = await this.exec([query("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")])
    if ([...backendMessages(ext)].some((m) => m.type === 'D')) await this.exec([query("LOAD 'timescaledb'")])
  }

  async restoreDefaults() {
    await this.exec([query(this.defaults)])
  }

  async acquire(conn) {
    if (this.owner === conn) return
    if (this.owner === null) { this.owner = conn; return }
    await new Promise((resolve) => this.waiters.push({ conn, resolve }))
  }

  release(conn) {
    if (this.owner !== conn) return
    const next = this.waiters.shift()
    this.owner = next ? next.conn : null
    next?.resolve()
  }

  /** Runs protocol messages through the backend; returns everything it wrote. */
  async exec(parts, { sliced = true } = {}) {
    if (this.broken) throw this.broken
    try {
      // PGlite silently drops what follows once one call's input passes a
      // limit (asyncpg's executemany of 3,000 rows got 2,048 inserted), so
      // long batches go in slices; the extended protocol's state (implicit
      // transaction, skip-to-Sync after an error) carries across calls.
      const outs = []
      // A COPY must reach the backend whole (see the header).
      for (const slice of sliced ? slices(parts) : [parts]) {
        // The data dir is a real directory (NODEFS): nothing to sync per call.
        outs.push(Buffer.from(await this.db.execProtocolRaw(Buffer.concat(slice), { syncToFs: false })))
      }
      const out = outs.length === 1 ? outs[0] : Buffer.concat(outs)
      if (DEBUG) debug('exec', typesOf(parts), '->', [...backendMessages(out)].map((m) => m.type).join(''))
      return out
    } catch (err) {
      // A WASM abort leaves the instance unusable; fail every client from now on.
      this.broken = err
      this.onBroken(err)
      throw err
    }
  }
}

let nextConnectionId = 1

/** One client socket: its protocol state and its share of the session. */
class Connection {
  constructor(socket, session) {
    this.id = nextConnectionId++
    this.socket = socket
    this.session = session
    this.reader = new MessageReader(false)
    this.pending = [] // extended-protocol messages up to the next Sync or Flush
    this.copy = null // [Query, CopyData...] while a COPY FROM STDIN is being received
    this.status = 'I' // transaction status of the last ReadyForQuery
    this.statements = new Set() // backend names of this client's prepared statements
    this.unnamed = '' // backend name standing in for the unnamed statement
    this.stale = [] // earlier stand-ins, closed before the next run
    this.unnamedCount = 0
    this.closed = false
    this.pumping = false
    this.cleaned = false
    socket.setNoDelay(true)
    socket.on('data', (chunk) => { this.reader.push(chunk); this.pump() })
    socket.on('close', () => { this.closed = true; if (!this.pumping) this.cleanup() })
    socket.on('error', (err) => debug(`#${this.id} socket error`, err.message)) // 'close' follows
    debug(`#${this.id} connected`)
  }

  /** Handles buffered messages strictly in order, one at a time. */
  async pump() {
    if (this.pumping) return
    this.pumping = true
    try {
      for (let m; !this.closed && (m = this.reader.next());) await this.handle(m)
    } catch (err) {
      const fatal = err instanceof ProtocolError ? err.message : `backend failed: ${err.message}`
      this.write(errorResponse('FATAL', err instanceof ProtocolError ? '08P01' : 'XX000', fatal))
      this.closed = true
      this.socket.destroySoon()
    } finally {
      this.pumping = false
    }
    if (this.closed) await this.cleanup()
  }

  async handle({ type, body, raw }) {
    if (!this.reader.typed) return this.startup(body)
    if (this.copy) {
      if (type === 'd') { this.copy.push(raw); return }
      if (type === 'c' || type === 'f') {
        const parts = [...this.copy, raw]
        this.copy = null
        return this.run(parts, { copy: true })
      }
      return // Flush/Sync during COPY are ignored, as by PostgreSQL
    }
    switch (type) {
      case 'Q': return this.simpleQuery(body, raw)
      case 'P': case 'B': case 'D': case 'C': case 'E':
        this.pending.push(this.rename(type, body, raw))
        return
      case 'H': return this.flush()
      case 'S': { const parts = [...this.pending, raw]; this.pending = []; return this.run(parts) }
      case 'F': return this.run([raw])
      case 'X': this.closed = true; this.socket.destroySoon(); return
      case 'd': case 'c': case 'f': return // stray COPY messages are ignored, as by PostgreSQL
      default: throw new ProtocolError(`unsupported message type '${type}'`)
    }
  }

  startup(body) {
    const code = body.readInt32BE(0)
    // No TLS here; clients with sslmode=prefer (asyncpg's default) go on in clear.
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) { this.socket.write('N'); return }
    // A running WASM query cannot be interrupted: just end the cancel socket.
    if (code === CANCEL_REQUEST) { this.closed = true; this.socket.destroy(); return }
    if (code !== PROTOCOL_3) throw new ProtocolError(`unsupported protocol ${code >> 16}.${code & 0xffff}`)
    this.reader.typed = true
    const params = Object.entries(this.session.params).map(([k, v]) => message('S', k, v))
    this.write(Buffer.concat([
      message('R', int32(0)), // AuthenticationOk: trust, loopback only
      ...params,
      message('K', int32(this.id), int32(0)),
      readyForQuery('I'),
    ]))
  }

  simpleQuery(body, raw) {
    const [sql] = readCstr(body, 0)
    if (COPY_IN.test(sql)) {
      // Answer CopyInResponse ourselves (asyncpg waits for it before sending
      // rows) and run the whole COPY once CopyDone/CopyFail arrives.
      const binary = /\bbinary\b/i.test(sql) ? 1 : 0
      this.write(message('G', Buffer.from([binary]), Buffer.from([0, 0])))
      this.copy = [raw]
      return
    }
    return this.run([raw], { resetsDefaults: RESETS_DEFAULTS.test(sql) })
  }

  /** Maps a client's statement name to this connection's backend name. */
  statementName(name) {
    return name === '' ? this.unnamed : `c${this.id}_${name}`
  }

  rename(type, body, raw) {
    if (type === 'P') {
      const [name, at] = readCstr(body, 0)
      const [sql] = readCstr(body, at)
      if (name === '') {
        // The unnamed statement would be shared by all clients; give each
        // Parse its own name and drop the previous one before the next run.
        if (this.unnamed) this.stale.push(this.unnamed)
        this.unnamed = `c${this.id}__u${++this.unnamedCount}`
      }
      const backend = this.statementName(name)
      this.statements.add(backend)
      // COPY FROM STDIN here would make the backend wait for data inside the
      // call and abort the WASM instance: turn it into a plain error.
      if (COPY_IN.test(sql)) return message('P', backend, COPY_IN_EXTENDED, Buffer.from([0, 0]))
      return message('P', backend, body.subarray(at))
    }
    if (type === 'B') {
      const [portal, at] = readCstr(body, 0)
      const [name, rest] = readCstr(body, at)
      return message('B', portal, this.statementName(name), body.subarray(rest))
    }
    if ((type === 'D' || type === 'C') && body[0] === 'S'.charCodeAt(0)) {
      const [name] = readCstr(body, 1)
      const backend = this.statementName(name)
      if (type === 'C') this.statements.delete(backend)
      return message(type, Buffer.from('S'), backend)
    }
    return raw
  }

  /** Runs messages that end in a client Sync or Query; one ReadyForQuery goes back. */
  async run(parts, { copy = false, resetsDefaults = false } = {}) {
    await this.begin()
    if (this.closed) return
    let out = await this.session.exec(parts, { sliced: !copy })
    if (copy) out = withoutFirst(out, 'G') // the client had ours already
    let { status } = scan(out)
    if (!status) {
      // PGlite loses a ReadyForQuery after an error when more input follows in
      // the same call; never leave the client waiting for it.
      const z = await this.session.exec([SYNC])
      status = scan(z).status
      out = Buffer.concat([out, z])
    }
    this.write(out)
    if (resetsDefaults && status !== 'E') await this.session.restoreDefaults()
    this.settle(status)
  }

  /** Flush: run what we have without a Sync, so no ReadyForQuery goes back. */
  async flush() {
    const parts = this.pending
    this.pending = []
    if (parts.length === 0) return
    await this.begin()
    if (this.closed) return
    const out = await this.session.exec(parts)
    this.write(out)
    // asyncpg prepares with Parse/Describe/Flush and may send the matching
    // Sync much later; outside a transaction nothing ties the session to this
    // client meanwhile, so close the implicit transaction and let others in.
    const onlyStatements = /^[PDC]+$/.test(typesOf(parts))
    if (this.status === 'I' && onlyStatements && !scan(out).error) {
      this.settle(scan(await this.session.exec([SYNC])).status)
    }
  }

  /** Takes the session and closes statements that no name refers to any more. */
  async begin() {
    await this.session.acquire(this)
    if (this.closed || this.stale.length === 0) return
    const stale = this.stale.splice(0)
    for (const name of stale) this.statements.delete(name)
    await this.session.exec(stale.map((n) => message('C', Buffer.from('S'), n)))
  }

  settle(status) {
    this.status = status
    if (status === 'I') this.session.release(this)
  }

  write(out) {
    if (out.length > 0 && !this.socket.destroyed) this.socket.write(out)
  }

  /** After disconnect: roll back what the client left open, drop its statements. */
  async cleanup() {
    if (this.cleaned) return
    this.cleaned = true
    debug(`#${this.id} disconnected`)
    const session = this.session
    if (session.owner !== this && this.statements.size === 0) return
    await session.acquire(this)
    try {
      // Sync ends an unfinished extended-protocol batch, if any.
      if (scan(await session.exec([SYNC])).status !== 'I') {
        await session.exec([query('ROLLBACK')])
      }
      if (this.statements.size > 0) {
        await session.exec([...[...this.statements].map((n) => message('C', Buffer.from('S'), n)), SYNC])
      }
    } catch (err) {
      debug(`#${this.id} cleanup failed`, err.message)
    } finally {
      session.release(this)
    }
  }
}

/** Boots PGlite in dataDir and listens; resolves once clients can connect. */
export async function startServer({ dataDir, host = '127.0.0.1', port = 0, onBroken = () => {} }) {
  const db = await PGlite.create({ dataDir, extensions: { timescaledb } })
  const session = new Session(db, onBroken)
  await session.boot()
  const sockets = new Set()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    new Connection(socket, session) // eslint-disable-line no-new
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, resolve)
  })
  return {
    host,
    port: server.address().port,
    db,
    async close() {
      await new Promise((resolve) => {
        server.close(resolve)
        for (const s of sockets) s.destroy()
      })
      if (!session.broken) await db.close()
    },
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '5432' },
    },
  })
  if (!values['data-dir']) {
    console.error('usage: node server.mjs --data-dir DIR [--host 127.0.0.1] [--port 5432]')
    process.exit(2)
  }
  const server = await startServer({
    dataDir: values['data-dir'],
    host: values.host,
    port: Number(values.port),
    onBroken: (err) => {
      console.error('PGlite backend failed; exiting:', err)
      process.exit(70)
    },
  })
  console.log(`pglite-timescaledb ready on ${server.host}:${server.port} data_dir=${values['data-dir']}`)
  const shutdown = async (signal) => {
    console.log(`${signal}: closing`)
    await server.close() // closes the PGlite data dir cleanly
    process.exit(0)
  }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
