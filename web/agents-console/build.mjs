// Builds the agents console into dist/ (see web/shared/app-build.mjs; `--check` compares instead).
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildApp } from '../shared/app-build.mjs'

await buildApp({
  here: dirname(fileURLToPath(import.meta.url)),
  entry: 'main.tsx',
  options: { jsx: 'automatic', define: { 'process.env.NODE_ENV': '"production"' } },
})
