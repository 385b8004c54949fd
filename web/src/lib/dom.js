// A tiny DOM helper: h('button.primary', { onclick }, 'Save') builds elements without a framework.

/**
 * @param {string} spec  tag, optionally followed by .class names (e.g. 'li.asset.row')
 * @param {Record<string, any> | null} [props]  properties (onclick, value, ...), `dataset`,
 *   `style`, or attributes (`aria-*`, `data-*`, `for`, ...)
 * @param {...(Node | string | number | null | undefined | false | Array<any>)} children
 */
export function h (spec, props, ...children) {
  const [tag, ...classes] = spec.split('.')
  const el = document.createElement(tag || 'div')
  if (classes.length) el.className = classes.join(' ')
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key === 'dataset') Object.assign(el.dataset, value)
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value)
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key in el && !key.includes('-')) el[key] = value
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  append(el, children)
  return el
}

function append (el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    if (Array.isArray(child)) append(el, child)
    else el.append(child instanceof Node ? child : String(child))
  }
}

/** Replace the children of `el`. */
export function mount (el, ...children) {
  el.replaceChildren()
  append(el, children)
  return el
}

export const $ = (selector, root = document) => root.querySelector(selector)

let flashTimer = 0

/** A short message under the top bar; errors stay until the next message. */
export function flash (message, kind = 'info') {
  const el = $('#flash')
  el.textContent = message
  el.className = kind
  el.hidden = !message
  clearTimeout(flashTimer)
  if (message && kind !== 'error') flashTimer = setTimeout(() => { el.hidden = true }, 4000)
}

/** Run an async action for a form or button; show its error instead of throwing. */
export async function attempt (action, button) {
  if (button) button.disabled = true
  try {
    return await action()
  } catch (err) {
    flash(err.message || String(err), 'error')
    return undefined
  } finally {
    if (button) button.disabled = false
  }
}

export function formatBytes (n) {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB']
  let value = n / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++ }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

export function formatTime (iso) {
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString()
}
