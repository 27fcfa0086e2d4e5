// Builds component.js into a weft component (world `{{world}}`) with
// componentize-js's JS API:
//
//   node build.mjs [out.wasm]        (default: {{component}})
//
// `weft plugin build .` runs this. componentize-js (and preview2-shim, which
// it loads) come from $WEFT_NODE_MODULES, a node_modules directory, else from
// ./node_modules (`npm install`; package.json pins the versions).
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '{{component}}'));
const modules = [process.env.WEFT_NODE_MODULES, join(here, 'node_modules')]
  .filter(Boolean)
  .map((d) => resolve(d, '@bytecodealliance'))
  .find((d) => existsSync(join(d, 'componentize-js')));
if (!modules) {
  console.error(
    'componentize-js not found: run `npm install` here, or set WEFT_NODE_MODULES ' +
      'to a node_modules directory that has @bytecodealliance/componentize-js',
  );
  process.exit(1);
}
const wit = join(here, 'wit');
// componentize-js reads the WIT files through preview2-shim, which preopens
// no directory since 0.26: give it the WIT directory before it loads.
const shimFs = await import(pathToFileURL(join(modules, 'preview2-shim/dist/nodejs/filesystem.js')).href);
shimFs._setPreopens({ [wit]: wit });
const { componentize } = await import(pathToFileURL(join(modules, 'componentize-js/src/componentize.js')).href);
const { component } = await componentize({
  sourcePath: join(here, 'component.js'),
  witPath: wit,
  worldName: '{{world}}',
  // No ambient authority: without `http` the engine imports no wasi:http,
  // which weft only links for stages granted outbound hosts.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
