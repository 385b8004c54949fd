/**
 * One root of each Yjs type (Map, Array, Text, XmlFragment) built in a doc, and
 * what the client itself reads back from them, for the JSON export's test
 * (tests/test_document_json.py).
 *
 * A Map, Array or Text root is reported as its `toJSON()`. Yjs answers an XML
 * type's `toJSON()` as an XML string, so an XML root is reported as the server's
 * documented structure, read through the Yjs API: a fragment as
 * {"children": [...]}, an element as {"nodeName", "attributes", "children"}, a
 * text as its characters without formatting.
 */
import * as Y from 'yjs'

/** @param {Y.XmlFragment | Y.XmlElement | Y.XmlText} node @returns {any} */
const xmlJson = (node) => {
  if (node instanceof Y.XmlText) {
    return node.toDelta().map((/** @type {any} */ d) => (typeof d.insert === 'string' ? d.insert : '')).join('')
  }
  const children = node.toArray().map((child) => xmlJson(/** @type {any} */ (child)))
  if (node instanceof Y.XmlElement) {
    return { nodeName: node.nodeName, attributes: node.getAttributes(), children }
  }
  return { children }
}

/**
 * Build the roots `meta` (Map), `list` (Array), `body` (Text) and `xml`
 * (XmlFragment) in one transaction, plus `fill` entries of `pad` characters in
 * the Map root `bulk` (to make a big document), and report what the client reads.
 * @param {Y.Doc} doc @param {any} origin @param {number} fill @param {number} pad
 */
export const buildTypedRoots = (doc, origin, fill, pad) => {
  doc.transact(() => {
    const meta = doc.getMap('meta')
    meta.set('title', 'A project')
    meta.set('count', 3)
    meta.set('ratio', 0.5)
    meta.set('flag', true)
    meta.set('none', null)
    const pages = new Y.Map()
    meta.set('pages', pages)
    pages.set('order', Y.Array.from(['p1', 'p2']))
    pages.set('note', new Y.Text('a nested text'))
    const list = doc.getArray('list')
    list.push([1, 'two', { plain: { object: [1, 2] } }, [3, 4]])
    list.push([new Y.Map([['k', 'v']])])
    const body = doc.getText('body')
    body.insert(0, 'Hello world')
    body.format(0, 5, { bold: true })
    const xml = doc.getXmlFragment('xml')
    const p = new Y.XmlElement('p')
    p.setAttribute('class', 'lead')
    const inner = new Y.XmlText('inner text')
    p.insert(0, [inner, new Y.XmlElement('br')])
    inner.format(0, 5, { em: {} })
    xml.insert(0, [p, new Y.XmlText('tail')])
    const bulk = doc.getMap('bulk')
    const filler = 'x'.repeat(pad)
    for (let i = 0; i < fill; i++) bulk.set(`entry-${i}`, new Y.Map([['n', i], ['text', filler]]))
  }, origin)
  return {
    roots: {
      meta: doc.getMap('meta').toJSON(),
      list: doc.getArray('list').toJSON(),
      body: doc.getText('body').toJSON(),
      xml: xmlJson(doc.getXmlFragment('xml'))
    },
    bulk: doc.getMap('bulk').size,
    bytes: Y.encodeStateAsUpdate(doc).length
  }
}
