// Builds the editor into dist/ (committed: `ferrite dev` compiles it into the binary).
// `node build.mjs --check` builds into a temporary directory and fails if any file differs from
// the committed dist/ — run by the test suite, so dist/ always matches its sources.
//
// The output is deterministic: esbuild is pinned, sources are bundled without timestamps or
// absolute paths, and the service worker's cache name is a hash of the other files.
import * as esbuild from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, readdirSync, copyFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const check = process.argv.includes('--check')
const out = check ? mkdtempSync(join(tmpdir(), 'editor-dist-')) : join(here, 'dist')
mkdirSync(out, { recursive: true })

const common = {
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  conditions: ['source'],
  absWorkingDir: here,
  logLevel: 'warning',
}

await esbuild.build({ ...common, entryPoints: ['src/main.ts'], outfile: join(out, 'app.js') })
await esbuild.build({ ...common, entryPoints: ['src/styles.css'], outfile: join(out, 'app.css'), bundle: false })
copyFileSync(join(here, 'src/index.html'), join(out, 'index.html'))
copyFileSync(join(here, 'src/icon.svg'), join(out, 'icon.svg'))
const version = createHash('sha256')
for (const f of ['index.html', 'app.js', 'app.css', 'icon.svg']) version.update(readFileSync(join(out, f)))
await esbuild.build({
  ...common,
  entryPoints: ['src/sw.ts'],
  outfile: join(out, 'sw.js'),
  format: 'iife',
  define: { BUILD_VERSION: JSON.stringify(version.digest('hex').slice(0, 16)) },
})

if (check) {
  const committed = join(here, 'dist')
  const names = new Set([...readdirSync(out), ...readdirSync(committed)])
  const differ = [...names].filter((n) => {
    try {
      return !readFileSync(join(out, n)).equals(readFileSync(join(committed, n)))
    } catch {
      return true
    }
  })
  rmSync(out, { recursive: true, force: true })
  if (differ.length > 0) {
    console.error(`web/editor/dist does not match its sources (${differ.join(', ')}): run \`npm run build\` in web/ and commit dist/.`)
    process.exit(1)
  }
  console.log('web/editor/dist matches its sources')
} else {
  console.log(`built ${out}`)
}
