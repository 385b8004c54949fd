// The exe-collab browser client: a hash router over three screens.
//   #/login        sign in or register
//   #/projects     my projects: create, open, share
//   #/p/<uuid>     the collaborative editor with presence, assets and versions
import './style.css'
import { session, setUnauthorizedHandler } from './lib/api.js'
import { $, flash, h, mount } from './lib/dom.js'
import { renderAuth } from './screens/auth.js'
import { renderEditor } from './screens/editor.js'
import { renderProjects } from './screens/projects.js'

const PROJECT_ROUTE = /^#\/p\/([0-9a-fA-F-]{36})$/
let leaveScreen = null // cleanup of the current screen (closes the editor's connection)

export function signOut (message) {
  session.clear()
  if (message) flash(message, 'error')
  if (location.hash !== '#/login') location.hash = '#/login'
  else route()
}

function renderAccount () {
  const current = session.get()
  mount($('#account'), current && [
    h('span.who', { title: current.user.email }, current.user.name || current.user.email),
    h('button.link', { type: 'button', onclick: () => signOut() }, 'Log out')
  ])
}

function route () {
  leaveScreen?.()
  leaveScreen = null
  if ($('#flash').className !== 'error') flash('') // info messages belong to the last screen
  const app = $('#app')
  mount($('#crumbs'))
  renderAccount()
  const hash = location.hash || '#/projects'
  if (!session.get()) {
    if (hash !== '#/login') {
      sessionStorage.setItem('exe-collab.next', hash)
      location.replace('#/login')
      return
    }
    renderAuth(app, () => {
      const next = sessionStorage.getItem('exe-collab.next') || '#/projects'
      sessionStorage.removeItem('exe-collab.next')
      location.hash = next === '#/login' ? '#/projects' : next
    })
    return
  }
  const project = PROJECT_ROUTE.exec(hash)
  if (project) leaveScreen = renderEditor(app, project[1].toLowerCase())
  else if (hash !== '#/projects') location.replace('#/projects')
  else renderProjects(app)
}

// 401 from the API (or 4401 from the collab server): the token expired or was revoked.
setUnauthorizedHandler(() => signOut('Your session has ended: please sign in again.'))
window.addEventListener('hashchange', route)
route()
