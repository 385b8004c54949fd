#!/usr/bin/env node
/**
 * A stock y-websocket client (yjs + y-websocket's WebsocketProvider over the
 * `ws` package), driven over stdin/stdout with JSON lines, for end-to-end
 * tests. The Python side is tests/support/node_client.py.
 *
 * Usage:
 *   node client.mjs --server ws://HOST:PORT/yjs --room project-<uuid> --token JWT
 *                   [--name NAME] [--client-id N] [--max-backoff MS]
 *                   [--preload N:S] [--api URL]
 *
 * --preload N:S fills the document before the first connection with N pieces of
 * S characters, inserted at scattered positions in one transaction (the way an
 * importer writes a whole project), so the client's first sync answer carries
 * all of it.
 * The provider connects to `${server}/${room}?token=JWT`. The shared text is
 * doc.getText('t').
 *
 * --api URL (eXeLearning's `apiUrl`, e.g. http://HOST/api) makes the client play
 * eXeLearning's editor too: control frames, asset uploads and downloads, document saves
 * (exe_client.mjs lists its events and commands).
 *
 * Commands (stdin, one JSON object per line; an optional "id" is echoed back
 * in the reply):
 *   {"op":"insert","index":i,"text":"..."}   -> {"event":"ok","op":"insert"}
 *   {"op":"append","text":"..."}             -> {"event":"ok","op":"append"}
 *   {"op":"delete","index":i,"length":n}     -> {"event":"ok","op":"delete"}
 *   {"op":"get"}                             -> {"event":"text","value":"..."}
 *   {"op":"digest"}                          -> {"event":"digest","length":n,"sha256":hex}
 *   {"op":"roots","fill":n,"pad":s}          -> {"event":"roots","roots":{...},"bulk":n,"bytes":n}
 *                                            builds one root of each type (typed_roots.mjs)
 *   {"op":"json","root":s,"type":"map"|"array"|"text"}
 *                                            -> {"event":"json","value":...}: that root read as
 *                                            that type (doc.getMap(root) etc.), toJSON()
 *   {"op":"awareness","state":{...}|null}    -> {"event":"ok","op":"awareness"}
 *   {"op":"peers"}                           -> {"event":"peers","states":{"<clientId>":state}}
 *   {"op":"info"}                            -> {"event":"info","connected":b,"connecting":b,
 *                                                "synced":b,"should_connect":b,"client_id":n}
 *   {"op":"disconnect"}                      -> {"event":"ok","op":"disconnect"}
 *   {"op":"connect"}                         -> {"event":"ok","op":"connect"}
 *   {"op":"quit"}                            -> {"event":"bye"}, then exit 0
 *
 * Events (stdout, one JSON object per line):
 *   {"event":"client_id","value":n}          at start
 *   {"event":"ready"}                        once the provider is created
 *   {"event":"status","status":"connecting"|"connected"|"disconnected"}
 *   {"event":"instance","value":s}           the X-Instance-Id of each handshake's answer
 *   {"event":"synced","value":bool}          provider 'sync'
 *   {"event":"close","code":n|null,"reason":s|null,"local":bool}
 *                                            provider 'connection-close' (local: closed by
 *                                            the client itself, code/reason then null)
 *   {"event":"closed","code":n,"reason":s}   provider 'closed': the server's close code is
 *                                            permanent (4400-4499), no more reconnects
 *   {"event":"connection_error","message":s} provider 'connection-error'
 *   {"event":"permission_denied","reason":s} auth message (type 2) received
 *   {"event":"update","text":"..."}          after every non-local doc update (for a text
 *                                            over 64 KiB: {"event":"update","length":n})
 *   {"event":"awareness","states":{...},"added":[],"updated":[],"removed":[]}
 *                                            on a remote awareness change (states: remote only)
 *   {"event":"error","message":s,"stack":s}  on an exception (also for a bad command)
 */
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

import WebSocket from 'ws'
import * as Y from 'yjs'
import * as authProtocol from 'y-protocols/auth'
import { WebsocketProvider, messageAuth } from 'y-websocket'

import { ExeClient } from './exe_client.mjs'
import { buildTypedRoots } from './typed_roots.mjs'

// The provider refers to the global WebSocket in places (resyncInterval).
globalThis.WebSocket = WebSocket

/** @param {Record<string, any>} obj */
const emit = (obj) => {
  // stdout to a pipe or file is synchronous on Linux: lines are never lost
  // or interleaved, even right before process.exit().
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** @param {unknown} err @param {Record<string, any>} [extra] */
const emitError = (err, extra = {}) => {
  const e = /** @type {any} */ (err)
  emit({ event: 'error', message: String(e?.message ?? e), stack: e?.stack ?? null, ...extra })
}

process.on('uncaughtException', (err) => emitError(err, { where: 'uncaughtException' }))
process.on('unhandledRejection', (err) => emitError(err, { where: 'unhandledRejection' }))

const { values: args } = parseArgs({
  options: {
    server: { type: 'string' },
    room: { type: 'string' },
    token: { type: 'string' },
    name: { type: 'string' },
    'client-id': { type: 'string' },
    'max-backoff': { type: 'string' },
    preload: { type: 'string' },
    api: { type: 'string' }
  },
  strict: true
})
if (!args.server || !args.room) {
  emit({ event: 'error', message: 'usage: client.mjs --server URL --room NAME [--token JWT] [--name NAME]' })
  process.exit(2)
}

const LOCAL = Symbol('local-edit')
const QUIET_TEXT = 64 * 1024 // beyond this, update events carry the length only

const doc = new Y.Doc()
if (args['client-id'] !== undefined) {
  // Must happen before the provider creates its Awareness (it copies the id).
  doc.clientID = Number(args['client-id'])
}
const text = doc.getText('t')
if (args.preload !== undefined) {
  const [count, size] = args.preload.split(':').map(Number)
  const filler = 'abcdefghijklmnopqrstuvwxyz'.repeat(Math.ceil(size / 26))
  doc.transact(() => {
    for (let i = 0; i < count; i++) {
      text.insert((i * 7919) % (text.length + 1), (`<${i}>` + filler).slice(0, size))
    }
  }, LOCAL)
}

/** @type {Record<string, any>} */
const opts = {
  connect: false,
  params: args.token !== undefined ? { token: args.token } : {},
  WebSocketPolyfill: WebSocket,
  // Node 20 has a process-local BroadcastChannel; keep all traffic on the socket.
  disableBc: true
}
if (args['max-backoff'] !== undefined) opts.maxBackoffTime = Number(args['max-backoff'])

const provider = new WebsocketProvider(args.server, args.room, doc, opts)
const awareness = provider.awareness

emit({ event: 'client_id', value: doc.clientID })

// Report permission-denied auth messages instead of only console.warn-ing them.
provider.messageHandlers[messageAuth] = (_encoder, decoder, _provider, _emitSynced, _type) => {
  authProtocol.readAuthMessage(decoder, doc, (_y, reason) => {
    emit({ event: 'permission_denied', reason })
  })
}

provider.on('status', ({ status }) => {
  if (status === 'connecting') {
    provider.ws.on('upgrade', (response) => emit({ event: 'instance', value: response.headers['x-instance-id'] ?? null }))
  }
  emit({ event: 'status', status })
})
provider.on('sync', (value) => emit({ event: 'synced', value }))
provider.on('connection-close', (event) => {
  if (event == null) {
    emit({ event: 'close', code: null, reason: null, local: true })
  } else {
    emit({ event: 'close', code: event.code ?? null, reason: event.reason ?? null, local: false })
  }
})
provider.on('closed', ({ code, reason }) => emit({ event: 'closed', code, reason }))
provider.on('connection-error', (event) => {
  const e = /** @type {any} */ (event)
  emit({ event: 'connection_error', message: String(e?.message ?? e?.error?.message ?? e?.type ?? e) })
})

doc.on('update', (_update, origin) => {
  if (origin === LOCAL) return
  emit(text.length > QUIET_TEXT ? { event: 'update', length: text.length } : { event: 'update', text: text.toString() })
})

/** @type {Record<string, (name: string) => Y.AbstractType<any>>} */
const readRoot = {
  map: (name) => doc.getMap(name),
  array: (name) => doc.getArray(name),
  text: (name) => doc.getText(name)
}

const remoteStates = () => {
  /** @type {Record<string, any>} */
  const out = {}
  for (const [clientId, state] of awareness.getStates()) {
    if (clientId !== doc.clientID) out[String(clientId)] = state
  }
  return out
}

awareness.on('change', ({ added, updated, removed }, origin) => {
  if (origin === 'local') return
  emit({ event: 'awareness', states: remoteStates(), added, updated, removed })
})

if (args.name !== undefined) {
  awareness.setLocalState({ user: { name: args.name } })
}

/** @type {Record<string, (cmd: Record<string, any>) => any>} */
const extraOps = args.api !== undefined
  ? new ExeClient({ provider, doc, api: args.api, token: args.token, room: args.room, emit, emitError }).ops
  : {}

let quitting = false

const quit = () => {
  if (quitting) return
  quitting = true
  const ws = provider.ws
  let done = false
  const finish = () => {
    if (done) return
    done = true
    emit({ event: 'bye' })
    process.exit(0)
  }
  // Wait (bounded) for the socket to close so the awareness removal that
  // destroy() sends is flushed and the close handshake completes.
  if (ws != null && ws.readyState !== WebSocket.CLOSED) {
    ws.once('close', finish)
    setTimeout(finish, 2000).unref()
  }
  provider.destroy()
  awareness.destroy()
  doc.destroy()
  if (ws == null || ws.readyState === WebSocket.CLOSED) finish()
}

/** @param {Record<string, any>} cmd */
const handle = (cmd) => {
  const id = cmd.id !== undefined ? { id: cmd.id } : {}
  const ok = () => emit({ event: 'ok', op: cmd.op, ...id })
  switch (cmd.op) {
    case 'insert':
      doc.transact(() => text.insert(cmd.index, String(cmd.text)), LOCAL)
      return ok()
    case 'append':
      doc.transact(() => text.insert(text.length, String(cmd.text)), LOCAL)
      return ok()
    case 'delete':
      doc.transact(() => text.delete(cmd.index, cmd.length), LOCAL)
      return ok()
    case 'get':
      return emit({ event: 'text', value: text.toString(), ...id })
    case 'digest': {
      const value = text.toString()
      return emit({ event: 'digest', length: value.length, sha256: createHash('sha256').update(value).digest('hex'), ...id })
    }
    case 'roots':
      return emit({ event: 'roots', ...buildTypedRoots(doc, LOCAL, cmd.fill ?? 0, cmd.pad ?? 0), ...id })
    case 'json':
      return emit({ event: 'json', value: readRoot[cmd.type](String(cmd.root)).toJSON(), ...id })
    case 'awareness':
      awareness.setLocalState(cmd.state ?? null)
      return ok()
    case 'peers':
      return emit({ event: 'peers', states: remoteStates(), ...id })
    case 'info':
      return emit({
        event: 'info',
        connected: provider.wsconnected,
        connecting: provider.wsconnecting,
        synced: provider.synced,
        should_connect: provider.shouldConnect,
        client_id: doc.clientID,
        ...id
      })
    case 'disconnect':
      provider.disconnect()
      return ok()
    case 'connect':
      provider.connect()
      return ok()
    case 'quit':
      return quit()
    default: {
      const op = extraOps[cmd.op]
      if (op === undefined) throw new Error(`unknown op ${JSON.stringify(cmd.op)}`)
      // the reply may be a promise (an HTTP request): errors are reported as the others
      return Promise.resolve(op(cmd)).then(
        (reply) => emit({ ...reply, ...id }),
        (err) => emitError(err, { ...id, op: cmd.op })
      )
    }
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  if (line.trim() === '') return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    return emitError(err, { line })
  }
  try {
    handle(cmd)
  } catch (err) {
    emitError(err, cmd.id !== undefined ? { id: cmd.id, op: cmd.op } : { op: cmd.op })
  }
})
// The parent went away (or closed our stdin): leave cleanly.
rl.on('close', quit)

provider.connect()
emit({ event: 'ready' })
