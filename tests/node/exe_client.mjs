/**
 * eXeLearning's client side beside a stock y-websocket provider, for `client.mjs --api URL`:
 * our own implementation of the contract its browser editor follows (docs in the README,
 * "Using it with eXeLearning"), so the Node process plays the whole editor.
 *
 * - Control frames share the provider's socket. Once the socket is open, `ws.onmessage` is
 *   wrapped: a binary frame starting with 0xFF (JSON `{type, data}` after it) or a text
 *   frame is a control frame; it is reported as `{"event":"control","type","data","binary"}`
 *   and never reaches y-websocket. Every other frame goes to the provider unchanged.
 * - Outgoing control frames are 0xFF + UTF-8 JSON `{type, data}`, binary.
 * - On every connect (and on `trigger-resync`) the client announces the assets it holds
 *   (`awareness-update {availableAssets, totalAssets}`); on every connect it also reads the
 *   project's asset list (GET `apiUrl/projects/{uuid}/assets`, its `data[].clientId`),
 *   reported as `{"event":"assets_listed","status","client_ids"}`.
 * - `upload-request`: POST the held file as multipart `file` to `apiUrl + uploadUrl` with the
 *   Bearer token, then `asset-uploaded` (success and size, or the HTTP error). Reported as
 *   `{"event":"uploaded","asset","status","body"}`. A file held with `defer: n` leaves its
 *   first n requests unanswered (a slow upload), reported as `{"event":"upload_deferred"}`.
 * - `asset-ready`: GET `apiUrl + url` with the Bearer token; reported as
 *   `{"event":"downloaded","asset","status","size","sha256","headers"}`.
 * - `request-sync-state`: save the whole document (`POST .../yjs-document?markSaved=true`),
 *   reported as `{"event":"saved","status","body","reason"}`.
 *
 * Commands (the reply carries the command's id):
 *   {"op":"hold","asset":id,"filename":s,"mime":s,"base64":s,"defer":n}  -> ok (and announces)
 *   {"op":"request_asset","asset":id}          -> ok (request-asset, priority high, render)
 *   {"op":"control","type":s,"data":{...}}     -> ok (any control frame, as the client sends it)
 *   {"op":"save","mark_saved":b,"cookie":s,"headers":{...}}
 *                                              -> {"event":"response","status","body"}: the
 *       whole document (Y.encodeStateAsUpdate) POSTed to yjs-document, with the Bearer token,
 *       or, given `cookie`, as navigator.sendBeacon sends it: that Cookie header and `headers`
 *       (what the browser adds: Sec-Fetch-Site, Origin), no Authorization, no query
 *   {"op":"load"}                              -> {"event":"loaded","status","text"}: GET
 *       yjs-document applied to a fresh document, its doc.getText('t')
 */
import { createHash } from 'node:crypto'

import * as Y from 'yjs'

const PREFIX = 0xff

/**
 * The control message of a frame, or null for a Yjs frame.
 * @param {ArrayBuffer | string} data
 * @returns {{type: string, data: any, binary: boolean} | null}
 */
const decodeControl = (data) => {
  if (typeof data === 'string') {
    const parsed = JSON.parse(data)
    const { type, ...fields } = parsed
    return { type, data: parsed.data ?? fields, binary: false }
  }
  const bytes = new Uint8Array(data)
  if (bytes.length === 0 || bytes[0] !== PREFIX) return null
  const parsed = JSON.parse(new TextDecoder().decode(bytes.subarray(1)))
  return { type: parsed.type, data: parsed.data, binary: true }
}

/** @param {Uint8Array} bytes */
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

/** The response headers eXeLearning's client reads from a download. */
const DOWNLOAD_HEADERS = ['content-type', 'content-disposition', 'x-original-mime', 'x-filename', 'x-folder-path', 'x-file-size']

export class ExeClient {
  /**
   * @param {{provider: any, doc: Y.Doc, api: string, token: string | undefined, room: string,
   *          emit: (obj: Record<string, any>) => void, emitError: (err: unknown, extra?: Record<string, any>) => void}} options
   */
  constructor ({ provider, doc, api, token, room, emit, emitError }) {
    this.provider = provider
    this.doc = doc
    this.api = api.replace(/\/$/, '')
    this.token = token
    this.projectId = room.replace(/^project-/, '')
    this.emit = emit
    this.emitError = emitError
    /** @type {Map<string, {bytes: Uint8Array, filename: string, mime: string, defer: number}>} */
    this.held = new Map()
    provider.on('status', ({ status }) => {
      if (status === 'connected') this.attach(provider.ws)
    })
  }

  /** @returns {Record<string, string>} */
  get auth () {
    return this.token !== undefined ? { Authorization: `Bearer ${this.token}` } : {}
  }

  get documentUrl () {
    return `${this.api}/projects/uuid/${this.projectId}/yjs-document`
  }

  /** Wrap the new socket's onmessage (set by the provider just before 'connected'), announce. */
  attach (ws) {
    const original = ws.onmessage
    ws.onmessage = (event) => {
      let message
      try {
        message = decodeControl(event.data)
      } catch (err) {
        return this.emitError(err, { where: 'control frame' })
      }
      if (message === null) return original.call(ws, event)
      this.emit({ event: 'control', ...message })
      this.react(message).catch((err) => this.emitError(err, { where: message.type }))
    }
    this.announce()
    this.listAssets().catch((err) => this.emitError(err, { where: 'asset list' }))
  }

  async listAssets () {
    const response = await fetch(`${this.api}/projects/${this.projectId}/assets`, { headers: this.auth })
    const body = response.ok ? await response.json() : { data: [] }
    const clientIds = (body.data ?? []).map((asset) => asset.clientId).filter((id) => id)
    this.emit({ event: 'assets_listed', status: response.status, client_ids: clientIds })
  }

  /** @param {string} type @param {Record<string, any>} data */
  send (type, data) {
    const ws = this.provider.ws
    if (ws == null || ws.readyState !== ws.OPEN) throw new Error('the socket is not open')
    const json = new TextEncoder().encode(JSON.stringify({ type, data }))
    const frame = new Uint8Array(json.length + 1)
    frame[0] = PREFIX
    frame.set(json, 1)
    ws.send(frame)
  }

  announce () {
    const ids = [...this.held.keys()]
    this.send('awareness-update', { availableAssets: ids, totalAssets: ids.length })
  }

  /** @param {{type: string, data: any}} message */
  async react ({ type, data }) {
    switch (type) {
      case 'upload-request': return this.upload(data)
      case 'asset-ready': return this.download(data)
      case 'trigger-resync': return this.announce()
      case 'request-sync-state': {
        const reply = await this.save({ mark_saved: true })
        return this.emit({ ...reply, event: 'saved', reason: type })
      }
    }
  }

  async upload ({ assetId, requestId, requestedBy, uploadUrl }) {
    const held = this.held.get(assetId)
    if (held === undefined) {
      return this.send('asset-uploaded', { assetId, requestId, requestedBy, success: false, error: 'not held' })
    }
    if (held.defer > 0) {
      held.defer--
      return this.emit({ event: 'upload_deferred', asset: assetId })
    }
    const form = new FormData()
    form.append('file', new Blob([held.bytes], { type: held.mime }), held.filename)
    const response = await fetch(this.api + uploadUrl, { method: 'POST', headers: this.auth, body: form })
    const body = await response.text()
    this.emit({ event: 'uploaded', asset: assetId, status: response.status, body })
    const outcome = response.ok
      ? { success: true, size: held.bytes.length }
      : { success: false, error: `HTTP ${response.status}: ${body}` }
    this.send('asset-uploaded', { assetId, requestId, requestedBy, ...outcome })
  }

  async download ({ assetId, url }) {
    const response = await fetch(this.api + url, { headers: this.auth })
    const bytes = new Uint8Array(await response.arrayBuffer())
    const headers = Object.fromEntries(DOWNLOAD_HEADERS.map((name) => [name, response.headers.get(name)]))
    this.emit({ event: 'downloaded', asset: assetId, status: response.status, size: bytes.length, sha256: sha256(bytes), headers })
  }

  /** @param {Record<string, any>} cmd */
  async save ({ mark_saved: markSaved = false, cookie, headers = {} }) {
    const beacon = cookie !== undefined
    const url = this.documentUrl + (markSaved && !beacon ? '?markSaved=true' : '')
    const response = await fetch(url, {
      method: 'POST',
      headers: beacon
        ? { Cookie: cookie, 'Content-Type': 'application/octet-stream', ...headers }
        : { ...this.auth, 'Content-Type': 'application/octet-stream', ...headers },
      body: Y.encodeStateAsUpdate(this.doc)
    })
    const text = await response.text()
    let body = text
    try {
      body = JSON.parse(text)
    } catch {}
    return { event: 'response', status: response.status, body }
  }

  async load () {
    const response = await fetch(this.documentUrl, { headers: this.auth })
    const bytes = new Uint8Array(await response.arrayBuffer())
    if (!response.ok) return { event: 'loaded', status: response.status, text: null }
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, bytes)
    return { event: 'loaded', status: response.status, text: fresh.getText('t').toString() }
  }

  /** The commands this adds to client.mjs, by op; each returns its reply (without the id). */
  get ops () {
    return {
      hold: (cmd) => {
        const bytes = new Uint8Array(Buffer.from(String(cmd.base64), 'base64'))
        this.held.set(String(cmd.asset), { bytes, filename: String(cmd.filename), mime: String(cmd.mime), defer: Number(cmd.defer ?? 0) })
        if (this.provider.wsconnected) this.announce()
        return { event: 'ok', op: 'hold' }
      },
      request_asset: (cmd) => {
        this.send('request-asset', { assetId: String(cmd.asset), priority: 'high', reason: 'render' })
        return { event: 'ok', op: 'request_asset' }
      },
      control: (cmd) => {
        this.send(String(cmd.type), cmd.data ?? {})
        return { event: 'ok', op: 'control' }
      },
      save: (cmd) => this.save(cmd),
      load: () => this.load()
    }
  }
}
