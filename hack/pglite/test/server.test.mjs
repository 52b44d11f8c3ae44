// The front, spoken to by hand over TCP so each check sees the exact bytes a
// driver would get. Run: cd hack/pglite && node --test test/
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { startServer } from '../server.mjs'
import {
  MessageReader, SSL_REQUEST, SYNC, dataRow, errorFields, int16, int32, message, query,
  startupMessage,
} from '../wire.mjs'

const parse = (name, sql) => message('P', name, sql, int16(0))
const bind = (name) => message('B', '', name, int16(0), int16(0), int16(0))
const execute = message('E', '', int32(0))
const describeStatement = (name) => message('D', Buffer.from('S'), name)

/** A raw protocol client: send bytes, read typed messages. */
class Client {
  static async connect(port, { ssl = false } = {}) {
    const c = new Client()
    c.socket = net.connect(port, '127.0.0.1')
    await new Promise((resolve, reject) => c.socket.once('connect', resolve).once('error', reject))
    c.reader = new MessageReader(true)
    c.waiting = null
    c.ended = new Promise((resolve) => c.socket.once('close', resolve))
    if (ssl) {
      const answer = new Promise((resolve) => c.socket.once('data', resolve))
      c.socket.write(Buffer.concat([int32(8), int32(SSL_REQUEST)]))
      c.sslAnswer = (await answer).toString('latin1')
    }
    c.socket.on('data', (chunk) => { c.reader.push(chunk); c.waiting?.() })
    c.socket.write(startupMessage({ user: 'postgres', database: 'postgres' }))
    c.startup = await c.until('Z')
    return c
  }

  send(...msgs) { this.socket.write(Buffer.concat(msgs)) }

  /** Messages up to and including the first of type `type`. */
  async until(type, timeoutMs = 20000) {
    const got = []
    const deadline = Date.now() + timeoutMs
    for (;;) {
      for (let m; (m = this.reader.next());) {
        got.push(m)
        if (m.type === type) return got
      }
      if (Date.now() > deadline) throw new Error(`no '${type}' after ${got.map((m) => m.type).join('')}`)
      await new Promise((resolve) => { this.waiting = resolve; setTimeout(resolve, 50) })
    }
  }

  /** Simple query: rows as arrays of text, plus error fields and final status. */
  async query(sql) {
    this.send(query(sql))
    return summarize(await this.until('Z'))
  }

  close() { this.socket.destroy() }
}

function summarize(msgs) {
  const error = msgs.find((m) => m.type === 'E')
  return {
    rows: msgs.filter((m) => m.type === 'D').map((m) => dataRow(m.body)),
    error: error ? errorFields(error.body) : null,
    status: String.fromCharCode(msgs.at(-1).body[0]),
    types: msgs.map((m) => m.type).join(''),
  }
}

describe('pglite front', () => {
  let server
  let dataDir

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'pglite-front-'))
    server = await startServer({ dataDir, port: 0 })
  })

  after(async () => {
    await server?.close()
    await rm(dataDir, { recursive: true, force: true })
  })

  test('declines SSL, then accepts startup with the parameters drivers read', async () => {
    const c = await Client.connect(server.port, { ssl: true })
    assert.equal(c.sslAnswer, 'N')
    const types = c.startup.map((m) => m.type).join('')
    assert.match(types, /^RS+KZ$/)
    const params = Object.fromEntries(c.startup.filter((m) => m.type === 'S').map((m) => {
      const [k, v] = m.body.toString('utf8').split('\0')
      return [k, v]
    }))
    assert.match(params.server_version, /^17\./)
    assert.equal(params.integer_datetimes, 'on')
    assert.deepEqual((await c.query('SELECT 1 + 1')).rows, [['2']])
    c.close()
  })

  test('TimescaleDB is available', async () => {
    const c = await Client.connect(server.port)
    assert.equal((await c.query('CREATE EXTENSION IF NOT EXISTS timescaledb')).error, null)
    const r = await c.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    assert.match(r.rows[0][0], /^2\./)
    c.close()
  })

  test('an error answers with ErrorResponse and ReadyForQuery, in both protocols', async () => {
    const c = await Client.connect(server.port)
    const simple = await c.query('SELECT no_such_column')
    assert.equal(simple.error.C, '42703')
    assert.equal(simple.status, 'I')
    // Extended: everything after the error up to Sync is skipped, one ReadyForQuery.
    c.send(parse('s', 'SELECT no_such_column'), bind('s'), execute, SYNC)
    const ext = summarize(await c.until('Z'))
    assert.equal(ext.types, 'EZ')
    assert.deepEqual((await c.query('SELECT 3')).rows, [['3']])
    c.close()
  })

  test('a failed transaction reports E and recovers on ROLLBACK', async () => {
    const c = await Client.connect(server.port)
    await c.query('BEGIN')
    assert.equal((await c.query('SELECT no_such_column')).status, 'E')
    assert.equal((await c.query('SELECT 1')).error.C, '25P02')
    assert.equal((await c.query('ROLLBACK')).status, 'I')
    assert.deepEqual((await c.query('SELECT 4')).rows, [['4']])
    c.close()
  })

  test('prepared statement names are per connection', async () => {
    const a = await Client.connect(server.port)
    const b = await Client.connect(server.port)
    a.send(parse('__asyncpg_stmt_1__', "SELECT 'a'"), describeStatement('__asyncpg_stmt_1__'), SYNC)
    assert.equal(summarize(await a.until('Z')).error, null)
    b.send(parse('__asyncpg_stmt_1__', "SELECT 'b'"), SYNC)
    assert.equal(summarize(await b.until('Z')).error, null)
    a.send(bind('__asyncpg_stmt_1__'), execute, SYNC)
    b.send(bind('__asyncpg_stmt_1__'), execute, SYNC)
    assert.deepEqual(summarize(await a.until('Z')).rows, [['a']])
    assert.deepEqual(summarize(await b.until('Z')).rows, [['b']])
    a.close()
    b.close()
  })

  test('a long pipelined batch runs every message (asyncpg executemany)', async () => {
    // PGlite alone dropped what came after ~2,048 Bind/Execute pairs in one call.
    const c = await Client.connect(server.port)
    await c.query('CREATE TABLE batch (n int)')
    const rows = 5000
    const pairs = []
    for (let i = 0; i < rows; i++) pairs.push(bind('ins'), execute)
    c.send(parse('ins', 'INSERT INTO batch VALUES (1)'), ...pairs, SYNC)
    const got = summarize(await c.until('Z', 60000))
    assert.equal(got.error, null)
    assert.equal(got.types.split('C').length - 1, rows)
    assert.deepEqual((await c.query('SELECT count(*) FROM batch')).rows, [[String(rows)]])
    // An error midway skips the rest up to Sync, across slices too.
    const failing = []
    for (let i = 0; i < rows; i++) failing.push(bind(i === 10 ? 'nope' : 'ins'), execute)
    c.send(...failing, SYNC)
    const failed = summarize(await c.until('Z', 60000))
    assert.equal(failed.error.C, '26000')
    assert.equal(failed.status, 'I')
    assert.deepEqual((await c.query('SELECT count(*) FROM batch')).rows, [[String(rows)]])
    await c.query('DROP TABLE batch')
    c.close()
  })

  test('another client waits while one is inside a transaction', async () => {
    const a = await Client.connect(server.port)
    const b = await Client.connect(server.port)
    await a.query('CREATE TABLE IF NOT EXISTS turn (v int)')
    await a.query('BEGIN')
    await a.query('INSERT INTO turn VALUES (1)')
    const order = []
    const bDone = b.query('SELECT count(*) FROM turn').then((r) => { order.push('b'); return r })
    await new Promise((resolve) => setTimeout(resolve, 300))
    order.push('a-commit')
    await a.query('COMMIT')
    const r = await bDone
    assert.deepEqual(order, ['a-commit', 'b'])
    assert.deepEqual(r.rows, [['1']]) // b saw the committed row, not a half-done transaction
    a.close()
    b.close()
  })

  test('a client that disconnects inside a transaction is rolled back', async () => {
    const a = await Client.connect(server.port)
    await a.query('CREATE TABLE IF NOT EXISTS gone (v int)')
    await a.query('BEGIN')
    await a.query('INSERT INTO gone VALUES (1)')
    a.close()
    const b = await Client.connect(server.port)
    const r = await b.query('SELECT count(*) FROM gone')
    assert.deepEqual(r.rows, [['0']])
    assert.equal(r.status, 'I')
    b.close()
  })

  test('COPY FROM STDIN is buffered and run in one call', async () => {
    const c = await Client.connect(server.port)
    await c.query('CREATE TABLE IF NOT EXISTS copied (a int, b text)')
    c.send(query('COPY copied FROM STDIN'))
    assert.equal((await c.until('G')).at(-1).type, 'G')
    c.send(message('d', Buffer.from('1\tx\n2\ty\n')), message('d', Buffer.from('3\tz\n')), message('c'))
    const done = summarize(await c.until('Z'))
    assert.equal(done.types, 'CZ') // exactly one CopyInResponse reached the client
    assert.deepEqual((await c.query('SELECT count(*) FROM copied')).rows, [['3']])
    // Bad data: an error, not a hang.
    c.send(query('COPY copied FROM STDIN'))
    await c.until('G')
    c.send(message('d', Buffer.from('not-a-number\tx\n')), message('c'))
    assert.equal(summarize(await c.until('Z')).error.C, '22P02')
    // COPY in the extended protocol is refused instead of aborting the backend.
    c.send(parse('', 'COPY copied FROM STDIN'), bind(''), execute, SYNC)
    assert.notEqual(summarize(await c.until('Z')).error, null)
    assert.deepEqual((await c.query('SELECT 5')).rows, [['5']])
    c.close()
  })

  test('RESET ALL keeps a usable search_path and quiet client_min_messages', async () => {
    const c = await Client.connect(server.port)
    await c.query('RESET ALL')
    assert.deepEqual((await c.query('SHOW search_path')).rows, [['public']])
    assert.deepEqual((await c.query('SHOW client_min_messages')).rows, [['notice']])
    c.close()
  })

  test('Terminate closes the socket from the server side', async () => {
    const c = await Client.connect(server.port)
    c.send(message('X'))
    await c.ended // would hang (test timeout) if the server kept the socket open
  })

  test('CancelRequest is answered by closing its socket', async () => {
    const s = net.connect(server.port, '127.0.0.1')
    await new Promise((resolve) => s.once('connect', resolve))
    s.write(Buffer.concat([int32(16), int32(80877102), int32(1), int32(0)]))
    await new Promise((resolve) => s.once('close', resolve))
  })
})

describe('pglite front on a reopened data dir', () => {
  test('continuous aggregates still work after a restart', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'pglite-reopen-'))
    try {
      for (const round of [0, 1]) {
        const server = await startServer({ dataDir, port: 0 })
        try {
          const c = await Client.connect(server.port)
          await c.query('CREATE EXTENSION IF NOT EXISTS timescaledb')
          await c.query(`CREATE TABLE m${round} (ts timestamptz NOT NULL, v float8)`)
          await c.query(`SELECT create_hypertable('m${round}', by_range('ts'))`)
          const view = await c.query(
            `CREATE MATERIALIZED VIEW m${round}_hourly WITH (timescaledb.continuous) AS ` +
              `SELECT time_bucket('1 hour', ts) AS bucket, avg(v) FROM m${round} GROUP BY bucket WITH NO DATA`,
          )
          assert.equal(view.error, null, `round ${round}: ${view.error?.M}`)
          c.close()
        } finally {
          await server.close()
        }
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true })
    }
  })
})
