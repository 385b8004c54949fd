// Sign in / register.
import { register, signIn } from '../lib/api.js'
import { attempt, flash, h, mount } from '../lib/dom.js'

export function renderAuth (root, done) {
  const field = (label, props) => h('label', null, label, h('input', { required: true, ...props }))

  const login = h('form.card', { id: 'login-form' },
    h('h2', null, 'Sign in'),
    field('Email', { name: 'email', type: 'email', autocomplete: 'username' }),
    field('Password', { name: 'password', type: 'password', autocomplete: 'current-password' }),
    h('button.primary', { type: 'submit' }, 'Sign in'))
  login.addEventListener('submit', (event) => {
    event.preventDefault()
    const form = new FormData(login)
    attempt(async () => {
      await signIn(form.get('email'), form.get('password'))
      flash('')
      done()
    }, login.querySelector('button'))
  })

  const signup = h('form.card', { id: 'register-form' },
    h('h2', null, 'Create an account'),
    field('Name', { name: 'name', autocomplete: 'name', maxLength: 200 }),
    field('Email', { name: 'email', type: 'email', autocomplete: 'email' }),
    field('Password', {
      name: 'password', type: 'password', autocomplete: 'new-password', minLength: 8
    }),
    h('button.primary', { type: 'submit' }, 'Create account'))
  signup.addEventListener('submit', (event) => {
    event.preventDefault()
    const form = new FormData(signup)
    attempt(async () => {
      await register(form.get('email'), form.get('password'), form.get('name'))
      flash('')
      done()
    }, signup.querySelector('button'))
  })

  mount(root, h('section.auth', null,
    h('p.lead', null, 'Edit documents together in real time.'),
    h('div.auth-forms', null, login, signup)))
}
