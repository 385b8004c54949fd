#!/usr/bin/env node
/**
 * Generate y-websocket protocol byte vectors with the real npm encoders
 * (yjs, y-protocols, lib0), exactly as y-websocket's WebsocketProvider frames
 * them, and write them to tests/data/protocol_vectors.json.
 *
 * Usage: node tests/node/gen_vectors.mjs [output.json]
 *
 * Every vector is an object:
 *   name          unique identifier
 *   description   what the frame is and who would send it
 *   hex           the whole WebSocket binary frame
 *   message_type  0 sync, 1 awareness, 2 auth, 3 query awareness
 *   sync_type     0 step1, 1 step2, 2 update (sync messages), else null
 *   payload_hex   sync: the varUint8Array payload (state vector or update);
 *                 awareness: the awareness update bytes; else null
 *   text          (optional) content of Y.Text "t" after applying, to a
 *                 fresh Y.Doc, the payloads of the vectors named in `after`
 *                 (in order) and then this vector's payload
 *   after         (optional) names of vectors whose payloads must be applied
 *                 first (only present when non-empty)
 *   state_vector  (step1 only) decoded state vector {clientID: clock}
 *   reason        (auth only) permission-denied reason string
 *   awareness     (awareness only) decoded [{client_id, clock, state}]
 *
 * Client ids are fixed (doc.clientID = N before any edit), so the output is
 * byte-for-byte stable across runs.
 */
import { writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as authProtocol from 'y-protocols/auth'

// Same constants as y-websocket's src/y-websocket.js
const messageSync = 0
const messageAwareness = 1
const messageAuth = 2
const messageQueryAwareness = 3

const here = dirname(fileURLToPath(import.meta.url))
const outPath = resolve(process.argv[2] ?? resolve(here, '..', 'data', 'protocol_vectors.json'))

/** @param {Uint8Array} bytes */
const hex = (bytes) => Buffer.from(bytes).toString('hex')

/** @param {number} clientID */
const newDoc = (clientID) => {
  const doc = new Y.Doc()
  doc.clientID = clientID
  return doc
}

/** Capture every update a doc emits during fn(). */
const captureUpdates = (doc, fn) => {
  /** @type {Uint8Array[]} */
  const updates = []
  const handler = (update) => updates.push(update)
  doc.on('update', handler)
  fn()
  doc.off('update', handler)
  return updates
}

/** Frame exactly like y-websocket: writeVarUint(messageSync) + syncProtocol.write* */
const syncStep1Frame = (doc) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeSyncStep1(encoder, doc)
  return encoding.toUint8Array(encoder)
}

const syncStep2Frame = (doc, stateVector) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeSyncStep2(encoder, doc, stateVector)
  return encoding.toUint8Array(encoder)
}

const syncUpdateFrame = (update) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageSync)
  syncProtocol.writeUpdate(encoder, update)
  return encoding.toUint8Array(encoder)
}

const awarenessFrame = (awareness, clients) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageAwareness)
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
  return encoding.toUint8Array(encoder)
}

const authDeniedFrame = (reason) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageAuth)
  authProtocol.writePermissionDenied(encoder, reason)
  return encoding.toUint8Array(encoder)
}

const queryAwarenessFrame = () => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageQueryAwareness)
  return encoding.toUint8Array(encoder)
}

/** Decode a frame again with the real decoders and fill in the derived fields. */
const describeFrame = (frame) => {
  const decoder = decoding.createDecoder(frame)
  const messageType = decoding.readVarUint(decoder)
  const out = { message_type: messageType, sync_type: null, payload_hex: null }
  switch (messageType) {
    case messageSync: {
      out.sync_type = decoding.readVarUint(decoder)
      const payload = decoding.readVarUint8Array(decoder)
      out.payload_hex = hex(payload)
      if (out.sync_type === syncProtocol.messageYjsSyncStep1) {
        out.state_vector = Object.fromEntries(
          [...Y.decodeStateVector(payload).entries()].map(([k, v]) => [String(k), v])
        )
      }
      break
    }
    case messageAwareness: {
      const payload = decoding.readVarUint8Array(decoder)
      out.payload_hex = hex(payload)
      const d = decoding.createDecoder(payload)
      const n = decoding.readVarUint(d)
      out.awareness = []
      for (let i = 0; i < n; i++) {
        const clientId = decoding.readVarUint(d)
        const clock = decoding.readVarUint(d)
        const state = JSON.parse(decoding.readVarString(d))
        out.awareness.push({ client_id: clientId, clock, state })
      }
      if (decoding.hasContent(d)) throw new Error('trailing bytes in awareness payload')
      break
    }
    case messageAuth: {
      const authType = decoding.readVarUint(decoder)
      if (authType !== authProtocol.messagePermissionDenied) throw new Error('unexpected auth type')
      out.reason = decoding.readVarString(decoder)
      break
    }
    case messageQueryAwareness:
      break
    default:
      throw new Error(`unknown message type ${messageType}`)
  }
  if (decoding.hasContent(decoder)) throw new Error('trailing bytes in frame')
  return out
}

/** @type {Array<Record<string, any>>} */
const vectors = []
/** @type {Map<string, Record<string, any>>} */
const byName = new Map()

const add = (name, description, frame, extra = {}) => {
  if (byName.has(name)) throw new Error(`duplicate vector ${name}`)
  const { after, text, ...rest } = extra
  const v = { name, description, hex: hex(frame), ...describeFrame(frame), ...rest }
  if (after && after.length > 0) v.after = after
  if (text !== undefined) {
    // Verify the claimed text by replaying the payloads into a fresh doc.
    const check = newDoc(999)
    for (const dep of after ?? []) {
      Y.applyUpdate(check, Buffer.from(byName.get(dep).payload_hex, 'hex'))
    }
    Y.applyUpdate(check, Buffer.from(v.payload_hex, 'hex'))
    const got = check.getText('t').toString()
    if (got !== text) throw new Error(`${name}: text mismatch: ${JSON.stringify(got)}`)
    if (check.store.pendingStructs !== null) throw new Error(`${name}: pending structs`)
    v.text = text
    check.destroy()
  }
  vectors.push(v)
  byName.set(name, v)
}

// --- sync step 1 ----------------------------------------------------------

{
  const empty = newDoc(1)
  add('sync_step1_empty',
    'SyncStep1 of an empty doc (what a fresh WebsocketProvider sends on open)',
    syncStep1Frame(empty))
  empty.destroy()
}

// The "server" doc: client 1 typed "hello", client 2 appended " world".
const server = newDoc(1)
const helloUpdates = captureUpdates(server, () => server.getText('t').insert(0, 'hello'))
{
  const other = newDoc(2)
  Y.applyUpdate(other, Y.encodeStateAsUpdate(server))
  other.getText('t').insert(5, ' world')
  Y.applyUpdate(server, Y.encodeStateAsUpdate(other))
  other.destroy()
}
if (server.getText('t').toString() !== 'hello world') throw new Error('server doc setup')

add('sync_step1_with_content',
  'SyncStep1 of a doc holding "hello world" from clients 1 and 2',
  syncStep1Frame(server))

// --- sync step 2 ----------------------------------------------------------

add('sync_step2_full',
  'SyncStep2 answering sync_step1_empty: the whole "hello world" doc',
  syncStep2Frame(server, Y.encodeStateVector(new Y.Doc())),
  { text: 'hello world' })

{
  // A client that already has client 1's "hello" asks for the rest.
  const partial = newDoc(3)
  Y.applyUpdate(partial, helloUpdates[0])
  add('sync_step1_partial',
    'SyncStep1 of a doc that holds only client 1\'s "hello"',
    syncStep1Frame(partial))
  add('sync_update_hello',
    'Update produced by client 1 inserting "hello" into an empty doc',
    syncUpdateFrame(helloUpdates[0]),
    { text: 'hello' })
  add('sync_step2_diff',
    'SyncStep2 answering sync_step1_partial: only client 2\'s " world"',
    syncStep2Frame(server, Y.encodeStateVector(partial)),
    { after: ['sync_update_hello'], text: 'hello world' })
  partial.destroy()
}

{
  const empty = newDoc(4)
  add('sync_step2_empty',
    'SyncStep2 of an empty doc answering sync_step1_empty (a server with nothing stored)',
    syncStep2Frame(empty, Y.encodeStateVector(new Y.Doc())),
    { text: '' })
  empty.destroy()
}

// --- sync update ----------------------------------------------------------

{
  const doc = newDoc(5)
  const [ins] = captureUpdates(doc, () => doc.getText('t').insert(0, 'hi'))
  add('sync_update_insert', 'Update: client 5 inserts "hi" into an empty doc',
    syncUpdateFrame(ins), { text: 'hi' })
  const [ins2] = captureUpdates(doc, () => doc.getText('t').insert(2, '!'))
  add('sync_update_append', 'Update: client 5 appends "!" after sync_update_insert',
    syncUpdateFrame(ins2), { after: ['sync_update_insert'], text: 'hi!' })
  const [del] = captureUpdates(doc, () => doc.getText('t').delete(0, 1))
  add('sync_update_delete', 'Update: client 5 deletes the first character (a pure delete set)',
    syncUpdateFrame(del), { after: ['sync_update_insert', 'sync_update_append'], text: 'i!' })
  doc.destroy()
}

{
  const doc = newDoc(6)
  const s = 'héllo wörld 🌍 日本語'
  const [u] = captureUpdates(doc, () => doc.getText('t').insert(0, s))
  add('sync_update_unicode', 'Update: client 6 inserts non-ASCII text (UTF-16 surrogate pair included)',
    syncUpdateFrame(u), { text: s })
  doc.destroy()
}

{
  const doc = newDoc(7)
  // 20 000 deterministic ASCII characters: payload > 16 KiB, so the
  // varUint length prefix of the payload takes 3 bytes.
  let big = ''
  for (let i = 0; big.length < 20000; i++) big += `line ${i};`
  big = big.slice(0, 20000)
  const [u] = captureUpdates(doc, () => doc.getText('t').insert(0, big))
  if (u.length <= 16384 || u.length >= 2097152) throw new Error('large update size')
  add('sync_update_large',
    'Update: client 7 inserts 20 000 characters; payload > 16 KiB so its length varint takes 3 bytes',
    syncUpdateFrame(u), { text: big })
  doc.destroy()
}

{
  // Multi-byte client ids (varint > 1 byte) as real random ids are.
  const doc = newDoc(3141592653)
  const [u] = captureUpdates(doc, () => doc.getText('t').insert(0, 'pi'))
  add('sync_update_big_client_id', 'Update from client 3141592653 (5-byte varint id) inserting "pi"',
    syncUpdateFrame(u), { text: 'pi' })
  add('sync_step1_big_client_id', 'SyncStep1 of that doc', syncStep1Frame(doc))
  doc.destroy()
}

// --- awareness ------------------------------------------------------------

{
  const docA = newDoc(10)
  const docB = newDoc(11)
  // The Awareness takes its client id from the doc at construction time.
  const a = new awarenessProtocol.Awareness(docA)
  const b = new awarenessProtocol.Awareness(docB)
  a.setLocalState({ user: { name: 'alice', color: '#ff0000' }, cursor: { index: 3 } })
  b.setLocalState({ user: { name: 'bob', color: '#00ff00' }, cursor: null })

  add('awareness_single',
    'Awareness update: client 10 announces its state (what the provider sends on open / on change)',
    awarenessFrame(a, [10]))

  awarenessProtocol.applyAwarenessUpdate(a, awarenessProtocol.encodeAwarenessUpdate(b, [11]), 'test')
  add('awareness_two_clients',
    'Awareness update carrying clients 10 and 11 (e.g. the answer to query-awareness)',
    awarenessFrame(a, [10, 11]))

  awarenessProtocol.removeAwarenessStates(a, [10], 'test')
  add('awareness_removal',
    'Awareness removal: client 10 leaves (state null, clock incremented)',
    awarenessFrame(a, [10]))

  a.destroy()
  b.destroy()
  docA.destroy()
  docB.destroy()
}

// --- auth / query awareness -----------------------------------------------

add('auth_permission_denied',
  'Auth message: permission denied with a reason (y-protocols/auth writePermissionDenied)',
  authDeniedFrame('read-only access'))

add('query_awareness', 'Query awareness: just varUint 3', queryAwarenessFrame())

server.destroy()

writeFileSync(outPath, JSON.stringify(vectors, null, 2) + '\n')
console.error(`wrote ${vectors.length} vectors to ${outPath}`)
