// One project's shared document: a Y.Doc synced with the collab servers by the stock
// y-websocket provider, the connection status as the user should see it, and small
// "something changed, reload" signals between the people in the room, sent over awareness.
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

/** The shared text: the same Y.Text the other clients of this project (tests, tools) use. */
export const TEXT_NAME = 't'

const COLOURS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#008080', '#9a6324', '#d6336c']

/** A stable colour per user id, so a person keeps their colour on every device. */
export function colourFor (userId) {
  let hash = 0
  for (const ch of String(userId)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0
  return COLOURS[hash % COLOURS.length]
}

/**
 * Connect to project `uuid` as `user` ({ id, name, email }) with `token`.
 *
 * `onStatus(status, pending)` is called with 'connecting' | 'connected' | 'reconnecting' |
 * 'offline' and whether local edits are waiting to be sent. `onClosed(code, reason)` is
 * called when the server refuses the connection for good (4400-4499: the provider stops).
 */
export function openDocument ({ uuid, token, user, role, onStatus, onClosed }) {
  const doc = new Y.Doc()
  const text = doc.getText(TEXT_NAME)
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, `project-${uuid}`, doc, {
    params: { token },
    connect: navigator.onLine,
    disableBc: true // every tab is its own connection (and its own entry in the presence list)
  })
  const colour = colourFor(user.id)
  provider.awareness.setLocalStateField('user', {
    id: user.id,
    name: user.name || user.email,
    color: colour,
    colorLight: colour + '33',
    role
  })

  let everSynced = false
  let pending = false // local edits made while not connected: Yjs keeps them and sends them on sync
  let closed = false
  const live = () => provider.wsconnected && provider.synced
  const status = () => {
    if (!navigator.onLine) return 'offline'
    if (live()) return 'connected'
    return everSynced ? 'reconnecting' : 'connecting'
  }
  const report = () => { if (!closed) onStatus(status(), pending) }

  provider.on('status', report)
  provider.on('sync', (synced) => {
    if (synced) { everSynced = true; pending = false }
    report()
  })
  doc.on('update', (_update, origin) => {
    if (origin !== provider && !live() && !pending) { pending = true; report() }
  })
  provider.on('closed', ({ code, reason }) => {
    closed = true
    onClosed(code, reason)
  })

  // The browser knows when the network is gone: stop the socket at once (rather than after the
  // 30 s silence timeout) and reconnect as soon as it is back. Edits made meanwhile stay in the doc.
  const goOffline = () => { provider.disconnect(); report() }
  const goOnline = () => { if (!closed) provider.connect(); report() }
  window.addEventListener('offline', goOffline)
  window.addEventListener('online', goOnline)

  // Signals: "I changed the assets / versions": peers reload that list.
  const signals = {}
  const seen = new Map() // clientId -> last signals object seen
  const listeners = new Map() // kind -> Set(callback)
  const signal = (kind) => {
    signals[kind] = (signals[kind] || 0) + 1
    provider.awareness.setLocalStateField('signals', { ...signals })
  }
  const onSignal = (kind, callback) => {
    if (!listeners.has(kind)) listeners.set(kind, new Set())
    listeners.get(kind).add(callback)
  }
  provider.awareness.on('change', () => {
    for (const [clientId, state] of provider.awareness.getStates()) {
      if (clientId === doc.clientID) continue
      const now = state.signals || {}
      const before = seen.get(clientId) || {}
      for (const [kind, callbacks] of listeners) {
        if ((now[kind] || 0) > (before[kind] || 0) && seen.has(clientId)) callbacks.forEach((cb) => cb())
      }
      seen.set(clientId, now)
    }
  })

  const destroy = () => {
    closed = true
    window.removeEventListener('offline', goOffline)
    window.removeEventListener('online', goOnline)
    provider.destroy()
    doc.destroy()
  }
  report()
  return { doc, text, provider, awareness: provider.awareness, signal, onSignal, destroy }
}
