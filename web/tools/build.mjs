// Bundles the page into dist/ with esbuild: one ES module (app.js) and the static files.
// Deterministic: the same lockfile and sources give the same bytes (scripts/web.sh
// --check builds twice and compares). Usage: node tools/build.mjs [outdir]
import { copyFile, mkdir, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const web = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = process.argv[2] ?? join(web, 'dist')
const STATIC = ['index.html', 'style.css', 'manifest.json', 'icon.svg', 'sw.js']

await rm(out, { recursive: true, force: true })
await mkdir(out, { recursive: true })
const result = await build({
  absWorkingDir: web,
  entryPoints: ['src/main.ts'],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // Browsers with WebRTC, WebCodecs and BigInt64 DataView methods.
  target: ['chrome110', 'firefox115', 'safari16.4'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning'
})
if (result.errors.length > 0) process.exit(1)
for (const f of STATIC) await copyFile(join(web, f), join(out, f))
const size = (await stat(join(out, 'app.js'))).size
console.log(`web: ${out}/app.js ${size} bytes`)
