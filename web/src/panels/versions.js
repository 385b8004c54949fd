// Version history: save a named version, list, restore.
import { api, projectPath, session } from '../lib/api.js'
import { attempt, flash, formatTime, h, mount } from '../lib/dom.js'

export function versionsPanel ({ uuid, canEdit, connection }) {
  const list = h('ul.versions', { id: 'version-list' })
  const me = session.get()?.user

  const load = () => attempt(async () => {
    const { versions } = await api('GET', projectPath(uuid, '/versions'))
    mount(list, versions.length
      ? versions.map((version) => h('li.version', { dataset: { id: version.id } },
        h('span.label', null, version.label || `Version ${version.id}`),
        h('span.muted', null,
          formatTime(version.created_at), version.created_by === me?.id ? ' · you' : ''),
        canEdit && h('button.link.restore', {
          type: 'button',
          title: 'Make the document look like this version again (for everyone)',
          onclick: (event) => {
            if (!confirm(`Restore "${version.label || `Version ${version.id}`}" for everyone?`)) return
            attempt(async () => {
              await api('POST', projectPath(uuid, `/versions/${version.id}/restore`))
              flash('Version restored.')
            }, event.currentTarget)
          }
        }, 'restore')))
      : h('li.muted', null, 'No saved versions.'))
  })
  connection.onSignal('versions', load)

  const panel = h('section.panel.versions-panel', null, h('h2', null, 'Versions'))
  if (canEdit) {
    const form = h('form.inline', { id: 'save-version' },
      h('input', { name: 'label', placeholder: 'Version name', maxLength: 200 }),
      h('button', { type: 'submit' }, 'Save'))
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      attempt(async () => {
        await api('POST', projectPath(uuid, '/versions'), {
          json: { label: form.elements.label.value.trim() }
        })
        form.reset()
        load()
        connection.signal('versions')
      }, form.querySelector('button'))
    })
    panel.append(form)
  }
  panel.append(list)
  load()
  return panel
}
