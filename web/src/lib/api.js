// The gateway's HTTP API (same origin) and the login session kept in localStorage.

const SESSION_KEY = 'exe-collab.session'

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** The signed-in user: { token, expires_at (Unix seconds), user: { id, email, name } } or null. */
export const session = {
  get () {
    try {
      const value = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null')
      if (value && value.token && value.expires_at * 1000 > Date.now() + 5000) return value
    } catch { /* a corrupt entry counts as signed out */ }
    return null
  },
  set (value) { localStorage.setItem(SESSION_KEY, JSON.stringify(value)) },
  clear () {
    localStorage.removeItem(SESSION_KEY)
    // login also set the httpOnly `auth` cookie (for eXeLearning's editor): only the server can clear it
    fetch('/api/auth/logout', { method: 'POST' }).catch(() => {})
  }
}

/** Called when the server says the token is no good (401): set by main.js. */
let onUnauthorized = () => {}
export const setUnauthorizedHandler = (handler) => { onUnauthorized = handler }
/** The token is no good any more (API 401, collab close code 4401): back to the login screen. */
export const sessionEnded = () => onUnauthorized()

export function authHeaders () {
  const current = session.get()
  return current ? { Authorization: `Bearer ${current.token}` } : {}
}

/**
 * Call the API. `json` is sent as a JSON body; the answer is parsed JSON, or the Response
 * itself with `raw: true`. Errors become ApiError with the server's message.
 */
export async function api (method, path, { json, raw = false, anonymous = false } = {}) {
  const headers = anonymous ? {} : authHeaders()
  if (json !== undefined) headers['Content-Type'] = 'application/json'
  let response
  try {
    response = await fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json)
    })
  } catch {
    throw new ApiError(0, 'network', 'the server cannot be reached (offline?)')
  }
  if (!response.ok) {
    let code = String(response.status)
    let message = response.statusText || `HTTP ${response.status}`
    try {
      const body = await response.json()
      code = body.error?.code || code
      message = body.error?.message || message
    } catch { /* not JSON */ }
    if (response.status === 401 && !anonymous) sessionEnded()
    throw new ApiError(response.status, code, message)
  }
  if (raw) return response
  return response.status === 204 ? null : response.json()
}

export async function signIn (email, password) {
  const body = await api('POST', '/api/auth/login', { json: { email, password }, anonymous: true })
  session.set({ token: body.token, expires_at: body.expires_at, user: body.user })
  return body.user
}

export async function register (email, password, name) {
  await api('POST', '/api/auth/register', { json: { email, password, name }, anonymous: true })
  return signIn(email, password)
}

export const projectPath = (uuid, rest = '') => `/api/projects/${encodeURIComponent(uuid)}${rest}`
