// PostgreSQL wire protocol v3: framing and the few messages the front builds.
// Shared by server.mjs and the tests (which speak the protocol by hand so they
// can check bytes no driver would show them).

export const PROTOCOL_3 = 196608
export const SSL_REQUEST = 80877103
export const GSSENC_REQUEST = 80877104
export const CANCEL_REQUEST = 80877102

export const cstr = (s) => Buffer.from(`${s}\0`, 'utf8')

/** One typed message: type byte, int32 length (itself included), body. */
export function message(type, ...parts) {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? cstr(p) : p)))
  const head = Buffer.alloc(5)
  head.write(type, 0, 'latin1')
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}

export const int16 = (n) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b }
export const int32 = (n) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b }

export const SYNC = message('S')
export const query = (sql) => message('Q', sql)
export const readyForQuery = (status) => message('Z', Buffer.from(status, 'latin1'))

/** ErrorResponse; the front only makes its own errors for protocol violations. */
export function errorResponse(severity, code, text) {
  return message('E', `S${severity}`, `V${severity}`, `C${code}`, `M${text}`, Buffer.from([0]))
}

/** Startup packet (untyped): int32 length, int32 code, then key/value C strings. */
export function startupMessage(params, code = PROTOCOL_3) {
  const kv = Object.entries(params).flatMap(([k, v]) => [cstr(k), cstr(v)])
  const body = Buffer.concat([int32(code), ...kv, Buffer.from([0])])
  return Buffer.concat([int32(body.length + 4), body])
}

/** Reads C string at `offset`; returns [text, offset after the NUL]. */
export function readCstr(buf, offset) {
  const end = buf.indexOf(0, offset)
  return [buf.toString('utf8', offset, end), end + 1]
}

/**
 * Splits a byte stream into messages. Until `typed` is set (the startup phase)
 * messages carry no type byte, as in the protocol.
 */
export class MessageReader {
  constructor(typed = false) {
    this.typed = typed
    this.buf = Buffer.alloc(0)
  }

  push(chunk) {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
  }

  /** Next complete message as {type, body, raw}, or null; type is '' when untyped. */
  next() {
    const head = this.typed ? 1 : 0
    if (this.buf.length < head + 4) return null
    const len = this.buf.readInt32BE(head)
    if (this.buf.length < head + len) return null
    const raw = this.buf.subarray(0, head + len)
    this.buf = this.buf.subarray(head + len)
    return { type: this.typed ? String.fromCharCode(raw[0]) : '', body: raw.subarray(head + 4), raw }
  }
}

/** Iterates the messages of a complete backend output buffer. */
export function* backendMessages(buf) {
  let i = 0
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1)
    yield { type: String.fromCharCode(buf[i]), start: i, end: i + 1 + len, body: buf.subarray(i + 5, i + 1 + len) }
    i += 1 + len
  }
}

/** Text columns of a DataRow body (null for SQL NULL). */
export function dataRow(body) {
  const cols = []
  let at = 2
  for (let n = body.readInt16BE(0); n > 0; n--) {
    const len = body.readInt32BE(at)
    at += 4
    cols.push(len < 0 ? null : body.toString('utf8', at, at + len))
    at += Math.max(len, 0)
  }
  return cols
}

/** Field map of an ErrorResponse/NoticeResponse body, keyed by field letter. */
export function errorFields(body) {
  const fields = {}
  for (let at = 0; body[at] !== 0 && at < body.length;) {
    const key = String.fromCharCode(body[at])
    const [value, next] = readCstr(body, at + 1)
    fields[key] = value
    at = next
  }
  return fields
}
