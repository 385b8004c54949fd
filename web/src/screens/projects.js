// My projects: create, open, share with an email and a role.
import { api, projectPath } from '../lib/api.js'
import { $, attempt, flash, formatTime, h, mount } from '../lib/dom.js'

export function renderProjects (root) {
  mount($('#crumbs'), h('span', null, 'Projects'))
  const list = h('ul.projects', { id: 'project-list' }, h('li.muted', null, 'Loading…'))

  const create = h('form.inline', { id: 'create-project' },
    h('input', { name: 'title', placeholder: 'New project title', required: true, maxLength: 500 }),
    h('button.primary', { type: 'submit' }, 'Create'))
  create.addEventListener('submit', (event) => {
    event.preventDefault()
    const title = create.elements.title.value.trim()
    attempt(async () => {
      const project = await api('POST', '/api/projects', { json: { title } })
      location.hash = `#/p/${project.uuid}`
    }, create.querySelector('button'))
  })

  mount(root, h('section.projects-screen', null, h('h1', null, 'My projects'), create, list))

  attempt(async () => {
    const { projects } = await api('GET', '/api/projects')
    mount(list, projects.length
      ? projects.map(projectRow)
      : h('li.muted', null, 'No projects yet: create one above.'))
  })
}

function projectRow (project) {
  return h('li.project', { dataset: { uuid: project.uuid } },
    h('div.project-head', null,
      h('a.title', { href: `#/p/${project.uuid}` }, project.title || 'Untitled'),
      h('span.badge', { dataset: { role: project.role } }, project.role),
      h('span.muted', null, formatTime(project.updated_at))),
    project.role === 'owner' && sharePanel(project))
}

/** Owners: the members and a form to add one (or change a role) by email. */
function sharePanel (project) {
  const members = h('ul.members')
  const load = () => attempt(async () => {
    const body = await api('GET', projectPath(project.uuid, '/members'))
    mount(members, body.members.map((m) => h('li', null,
      h('span', null, m.name ? `${m.name} <${m.email}>` : m.email),
      h('span.badge', { dataset: { role: m.role } }, m.role),
      m.role !== 'owner' && h('button.link', {
        type: 'button',
        title: `Remove ${m.email}`,
        onclick: (event) => attempt(async () => {
          await api('DELETE', projectPath(project.uuid, `/members/${encodeURIComponent(m.email)}`))
          load()
        }, event.currentTarget)
      }, 'remove'))))
  })

  const form = h('form.inline.share-form', null,
    h('input', { name: 'email', type: 'email', placeholder: 'colleague@example.com', required: true }),
    h('select', { name: 'role' },
      h('option', { value: 'editor' }, 'editor'),
      h('option', { value: 'viewer' }, 'viewer'),
      h('option', { value: 'owner' }, 'owner')),
    h('button', { type: 'submit' }, 'Share'))
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const email = form.elements.email.value.trim()
    const role = form.elements.role.value
    attempt(async () => {
      await api('PUT', projectPath(project.uuid, `/members/${encodeURIComponent(email)}`), {
        json: { role }
      })
      flash(`Shared with ${email} as ${role}.`)
      form.reset()
      load()
    }, form.querySelector('button'))
  })

  const details = h('details.share', null, h('summary', null, 'Share'), form, members)
  details.addEventListener('toggle', () => { if (details.open) load() })
  return details
}
