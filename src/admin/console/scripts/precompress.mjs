// SPDX-License-Identifier: Apache-2.0
// Writes NAME.gz beside each compressible file of the built console (node's zlib, level 9),
// so qf-coordinator serves gzip without compressing at run time; prints the bundle size.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { gzipSync } from 'node:zlib'

const root = process.argv[2] ?? 'dist'
const compressible = /\.(html|js|mjs|css|json|svg|map|txt|webmanifest)$/
let raw = 0
let gzipped = 0
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path)
    else if (!name.endsWith('.gz')) {
      const bytes = readFileSync(path)
      raw += bytes.length
      if (compressible.test(name) && bytes.length > 256) {
        const gz = gzipSync(bytes, { level: 9 })
        if (gz.length < bytes.length) {
          writeFileSync(path + '.gz', gz)
          gzipped += gz.length
          continue
        }
      }
      gzipped += bytes.length
      void relative
    }
  }
}
walk(root)
console.log(`console bundle: ${(raw / 1024).toFixed(0)} KiB, ${(gzipped / 1024).toFixed(0)} KiB as served with gzip`)
