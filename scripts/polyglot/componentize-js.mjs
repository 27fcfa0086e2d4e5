// Builds a JavaScript weft plugin into a component with componentize-js's JS
// API (the `jco componentize` CLI fails here on a path lookup):
//
//   node scripts/polyglot/componentize-js.mjs <source.js> <wit dir> <world> <out.wasm>
//
// componentize-js comes from .tools/js (scripts/setup-polyglot).
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const [source, wit, world, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: componentize-js.mjs <source.js> <wit dir> <world> <out.wasm>');
  process.exit(2);
}
const modules = resolve(root, '.tools/js/node_modules/@bytecodealliance');
// componentize-js runs its WIT splicer (itself a wasm component) on
// preview2-shim, whose filesystem has had no preopened directories by default
// since 0.26, so the splicer cannot read the WIT files ("reading file ...: No
// such file or directory"; this is also why `jco componentize` fails). Give it
// the WIT directory, read-only use only, before componentize-js loads.
const shimFs = await import(pathToFileURL(resolve(modules, 'preview2-shim/dist/nodejs/filesystem.js')).href);
shimFs._setPreopens({ [resolve(wit)]: resolve(wit) });
const { componentize } = await import(
  pathToFileURL(resolve(modules, 'componentize-js/src/componentize.js')).href
);
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: world,
  // weft plugins get no ambient authority: without `http` the engine does
  // not import wasi:http, which the host only links for stages granted
  // outbound hosts; `fetch-event` (incoming HTTP) makes no sense in a stage.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
