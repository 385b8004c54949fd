// Assets of a project: resumable upload (tus) with a progress bar, list, download, delete.
import * as tus from 'tus-js-client'

import { api, authHeaders, projectPath } from '../lib/api.js'
import { attempt, flash, formatBytes, h, mount } from '../lib/dom.js'

const CHUNK_BYTES = 8 * 1024 * 1024

export function assetsPanel ({ uuid, canEdit, connection }) {
  const list = h('ul.assets', { id: 'asset-list' })
  const assetPath = (name) => projectPath(uuid, `/assets/${encodeURIComponent(name)}`)

  const load = () => attempt(async () => {
    const { assets } = await api('GET', projectPath(uuid, '/assets'))
    mount(list, assets.length
      ? assets.map((asset) => h('li.asset', { dataset: { name: asset.name } },
        h('button.link.download', {
          type: 'button', title: `Download ${asset.name}`, onclick: () => download(asset.name)
        }, asset.name),
        h('span.muted', null, formatBytes(asset.size)),
        canEdit && h('button.link.delete', {
          type: 'button',
          title: `Delete ${asset.name}`,
          onclick: (event) => {
            if (!confirm(`Delete ${asset.name}?`)) return
            attempt(async () => {
              await api('DELETE', assetPath(asset.name))
              changed()
            }, event.currentTarget)
          }
        }, '✕')))
      : h('li.muted', null, 'No assets yet.'))
  })

  // Our own changes reload the list here and, through a signal, in every peer's page.
  const changed = () => { load(); connection.signal('assets') }
  connection.onSignal('assets', load)

  // Downloads go through fetch so that the token stays in a header, not in a URL.
  const download = (name) => attempt(async () => {
    const response = await api('GET', assetPath(name), { raw: true })
    const url = URL.createObjectURL(await response.blob())
    const link = h('a', { href: url, download: name, hidden: true })
    document.body.append(link)
    link.click()
    link.remove()
    setTimeout(() => URL.revokeObjectURL(url), 60_000)
  })

  const panel = h('section.panel.assets-panel', null, h('h2', null, 'Assets'))
  if (canEdit) panel.append(uploader(uuid, changed))
  panel.append(list)
  load()
  return panel
}

/** A file input that uploads with tus: resumable (also after a reload), with progress. */
function uploader (uuid, uploaded) {
  const progress = h('progress', { id: 'upload-progress', max: 100, value: 0 })
  const label = h('span.muted.upload-label')
  const pause = h('button.link', { type: 'button' }, 'pause')
  const row = h('div.upload-row', { hidden: true }, progress, label, pause)
  const input = h('input', { type: 'file', id: 'asset-file', 'aria-label': 'Upload a file' })
  let upload = null
  let paused = false

  pause.addEventListener('click', () => {
    if (!upload) return
    paused = !paused
    pause.textContent = paused ? 'resume' : 'pause'
    if (paused) upload.abort()
    else upload.start()
  })

  input.addEventListener('change', async () => {
    const file = input.files[0]
    if (!file || upload) return
    row.hidden = false
    progress.value = 0
    label.textContent = `${file.name}: starting…`
    upload = new tus.Upload(file, {
      endpoint: location.origin + projectPath(uuid, '/uploads'),
      headers: authHeaders(),
      metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
      chunkSize: CHUNK_BYTES,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      onShouldRetry: (err) => {
        const status = err.originalResponse?.getStatus() ?? 0
        return status === 0 || status === 423 || status >= 500 // network, lock, server
      },
      onProgress: (sent, total) => {
        progress.value = total ? Math.round((sent / total) * 100) : 100
        label.textContent = `${file.name}: ${formatBytes(sent)} of ${formatBytes(total)}`
      },
      onSuccess: () => {
        flash(`Uploaded ${file.name}.`)
        finish()
        uploaded()
      },
      onError: (err) => {
        const body = err.originalResponse?.getBody()
        let message = err.message
        try { message = JSON.parse(body).error.message } catch { /* not JSON */ }
        flash(`Upload of ${file.name} failed: ${message}`, 'error')
        finish()
      }
    })
    // Resume an upload of the same file that was interrupted earlier (tus keeps its URL).
    const previous = await upload.findPreviousUploads()
    if (previous.length) upload.resumeFromPreviousUpload(previous[0])
    upload.start()
  })

  function finish () {
    upload = null
    paused = false
    pause.textContent = 'pause'
    row.hidden = true
    input.value = ''
  }

  return h('div.uploader', null, h('label.button', null, 'Upload a file', input), row)
}
