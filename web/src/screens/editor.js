// The editor: shared text with remote cursors, presence, connection status, assets, versions.
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { EditorState } from '@codemirror/state'
import {
  EditorView, drawSelection, highlightActiveLine, highlightSpecialChars, keymap, lineNumbers,
  placeholder
} from '@codemirror/view'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import * as Y from 'yjs'

import { api, projectPath, session, sessionEnded } from '../lib/api.js'
import { openDocument } from '../lib/collab.js'
import { $, h, mount } from '../lib/dom.js'
import { assetsPanel } from '../panels/assets.js'
import { versionsPanel } from '../panels/versions.js'

const STATUS_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline'
}

/** Render the editor of project `uuid` into `root`; returns the cleanup for leaving the screen. */
export function renderEditor (root, uuid) {
  let left = false
  let connection = null
  let view = null
  mount($('#crumbs'), h('a', { href: '#/projects' }, 'Projects'), h('span.sep', null, '/'),
    h('span', { id: 'project-title' }, '…'))
  mount(root, h('p.muted', null, 'Opening the project…'))

  api('GET', projectPath(uuid)).then((project) => {
    if (!left) start(project)
  }, (err) => {
    if (left || err.status === 401) return
    noAccess(root, err.status === 403 || err.status === 404
      ? 'This project does not exist, or you have no access to it.'
      : err.message)
  })

  function start (project) {
    const me = session.get()
    const readOnly = project.role === 'viewer'
    $('#project-title').textContent = project.title || 'Untitled'

    const status = h('span.status', { id: 'connection-status', dataset: { status: 'connecting' } })
    const presence = h('ul.presence', { id: 'presence' })
    const editorHost = h('div.editor', { id: 'editor' })

    connection = openDocument({
      uuid,
      token: me.token,
      user: me.user,
      role: project.role,
      onStatus: (state, pending) => {
        status.dataset.status = state
        status.dataset.pending = String(pending)
        status.textContent = STATUS_TEXT[state] + (pending ? ' · unsent edits kept' : '')
        status.title = pending
          ? 'Your edits are saved in this page and will be sent when the connection is back.'
          : ''
      },
      onClosed: (code) => {
        if (code === 4401) {
          sessionEnded() // the token expired or is no longer valid
        } else {
          leave()
          noAccess(root, code === 4403
            ? 'You have no access to this project (any more).'
            : `The server refused this project (code ${code}).`)
        }
      }
    })

    const { text, awareness } = connection
    view = new EditorView({
      parent: editorHost,
      state: EditorState.create({
        doc: text.toString(),
        extensions: [
          lineNumbers(),
          highlightSpecialChars(),
          drawSelection(),
          highlightActiveLine(),
          EditorView.lineWrapping,
          placeholder(readOnly ? 'This document is empty.' : 'Start typing…'),
          keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
          yCollab(text, awareness, { undoManager: readOnly ? false : new Y.UndoManager(text) }),
          EditorState.readOnly.of(readOnly),
          EditorView.editable.of(!readOnly),
          EditorView.contentAttributes.of({ 'aria-label': 'Shared text' })
        ]
      })
    })

    const renderPresence = () => {
      const people = [...awareness.getStates()]
        .filter(([, state]) => state.user)
        .sort(([a], [b]) => (a === awareness.clientID ? -1 : b === awareness.clientID ? 1 : a - b))
      mount(presence, people.map(([clientId, { user }]) => h('li', {
        dataset: { client: clientId, self: String(clientId === awareness.clientID) }
      },
      h('span.swatch', { style: { background: user.color } }),
      h('span.name', null, user.name),
      clientId === awareness.clientID && h('span.muted', null, ' (you)'),
      user.role === 'viewer' && h('span.badge', { dataset: { role: 'viewer' } }, 'viewer'))))
    }
    awareness.on('change', renderPresence)
    renderPresence()

    mount(root, h('section.editor-screen', { dataset: { role: project.role } },
      h('div.editor-head', null,
        h('h1', null, project.title || 'Untitled'),
        h('span.badge', { dataset: { role: project.role } }, readOnly ? 'read-only' : project.role),
        status),
      h('div.editor-body', null,
        editorHost,
        h('aside.sidebar', null,
          h('section.panel', null, h('h2', null, 'Here now'), presence),
          assetsPanel({ uuid, canEdit: !readOnly, connection }),
          versionsPanel({ uuid, canEdit: !readOnly, connection })))))
  }

  function leave () {
    view?.destroy()
    connection?.destroy()
    view = connection = null
  }

  return () => { left = true; leave() }
}

function noAccess (root, message) {
  mount(root, h('section.card.no-access', { id: 'no-access' },
    h('h2', null, 'No access'),
    h('p', null, message),
    h('a', { href: '#/projects' }, 'Back to my projects')))
}
