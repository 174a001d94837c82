// Builds the lead forms app into dist/ (see web/shared/app-build.mjs; `--check` compares instead).
//
// Besides the five files every example app has, this one ships `worker.js`: the PGlite worker
// (src/worker.ts) that runs the site's local Postgres for all its tabs. It is built by a plugin
// on the app.js build, into the same output directory, so that `--check` (which compares every
// file of dist/ with a fresh build in a temporary directory) covers it too.
import * as esbuild from 'esbuild'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildApp } from '../shared/app-build.mjs'

const here = dirname(fileURLToPath(import.meta.url))

/**
 * The installed PGlite's version: the service worker names its cache of PGlite's files after it,
 * so files of another version (the server serves them from node_modules) are never mixed with
 * this build's worker.
 */
const pgliteVersion = JSON.parse(readFileSync(join(here, '../node_modules/@electric-sql/pglite/package.json'), 'utf8')).version

/** Builds src/worker.ts into worker.js beside app.js, with the same deterministic settings. */
const workerBundle = {
  name: 'lead-forms-worker',
  setup(build) {
    const outfile = build.initialOptions.outfile
    if (!outfile || !outfile.endsWith('app.js')) return
    build.onEnd(async (result) => {
      if (result.errors.length > 0) return
      // The app build's settings, without its entry, output, JSX and plugins.
      const { plugins, jsx, entryPoints, outfile: app, ...common } = build.initialOptions
      await esbuild.build({ ...common, entryPoints: ['src/worker.ts'], outfile: join(dirname(outfile), 'worker.js'), format: 'esm' })
    })
  },
}

await buildApp({
  here,
  entry: 'main.tsx',
  options: { jsx: 'automatic', define: { 'process.env.NODE_ENV': '"production"', PGLITE_VERSION: JSON.stringify(pgliteVersion) }, plugins: [workerBundle] },
})
