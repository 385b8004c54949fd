// Bundle the browser client into dist/: index.html, app.js, app.css (the gateway serves them at /).
//   node build.mjs           minified build (what `make web` runs)
//   node build.mjs --watch   development: rebuild on change, inline source maps
// A build is written to dist.tmp/ and renamed into place, so dist/ is always complete.
import { copyFile, mkdir, rename, rm } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const here = (p) => fileURLToPath(new URL(p, import.meta.url))
const watch = process.argv.includes('--watch')

const options = (outdir) => ({
  entryPoints: { app: here('./src/main.js') }, // main.js imports style.css: esbuild writes app.css
  outdir,
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  legalComments: 'none',
  logLevel: 'info'
})

if (watch) {
  const dist = here('./dist/')
  await mkdir(dist, { recursive: true })
  await copyFile(here('./src/index.html'), here('./dist/index.html'))
  const ctx = await esbuild.context(options(dist))
  await ctx.watch()
  console.log('watching src/: reload the page after a rebuild (index.html is copied once)')
} else {
  const tmp = here('./dist.tmp/')
  await rm(tmp, { recursive: true, force: true })
  await esbuild.build(options(tmp))
  await copyFile(here('./src/index.html'), here('./dist.tmp/index.html'))
  await rm(here('./dist/'), { recursive: true, force: true })
  await rename(tmp, here('./dist/'))
}
