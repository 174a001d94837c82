// Builds an example app (the pipeline editor, the agents console) into its committed dist/:
// `ferrite dev` compiles those files into the binary, so a fresh clone needs no npm. With
// `--check` on the command line it builds into a temporary directory instead and fails if any
// file differs from the committed dist/ — run by the test suite, so dist/ always matches its
// sources.
//
// The output is deterministic: esbuild is pinned, sources are bundled without timestamps or
// absolute paths, and the service worker's cache name is a hash of the other files.
import * as esbuild from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, mkdirSync, readdirSync, copyFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, basename } from 'node:path'

/**
 * Builds the app in `here` (its directory): `src/<entry>` → app.js, src/styles.css → app.css,
 * src/index.html and src/icon.svg copied, src/sw.ts → sw.js with `BUILD_VERSION` defined.
 * `options` are extra esbuild options (e.g. JSX settings).
 */
export async function buildApp({ here, entry, options = {} }) {
  const name = basename(here)
  const check = process.argv.includes('--check')
  const out = check ? mkdtempSync(join(tmpdir(), `${name}-dist-`)) : join(here, 'dist')
  mkdirSync(out, { recursive: true })
  const common = {
    bundle: true,
    format: 'esm',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    charset: 'utf8',
    // @ferrite/client (and @ferrite/react) are bundled from their TypeScript sources.
    conditions: ['source'],
    absWorkingDir: here,
    logLevel: 'warning',
    ...options,
  }
  await esbuild.build({ ...common, entryPoints: [`src/${entry}`], outfile: join(out, 'app.js') })
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
    define: { ...common.define, BUILD_VERSION: JSON.stringify(version.digest('hex').slice(0, 16)) },
  })
  if (!check) {
    console.log(`built ${out}`)
    return
  }
  const committed = join(here, 'dist')
  let present = []
  try {
    present = readdirSync(committed)
  } catch {
    /* no dist/ yet: every file differs */
  }
  const names = new Set([...readdirSync(out), ...present])
  const differ = [...names].filter((n) => {
    try {
      return !readFileSync(join(out, n)).equals(readFileSync(join(committed, n)))
    } catch {
      return true
    }
  })
  rmSync(out, { recursive: true, force: true })
  if (differ.length > 0) {
    console.error(`web/${name}/dist does not match its sources (${differ.join(', ')}): run \`npm run build\` in web/ and commit dist/.`)
    process.exit(1)
  }
  console.log(`web/${name}/dist matches its sources`)
}
