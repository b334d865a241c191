// Builds a JavaScript plugin into a Medic plugin component with componentize-js:
//   node build.mjs SOURCE.js WIT_DIR OUT.wasm
// (scripts/setup --javascript runs it with the componentize-js it installs).
// Features a plugin cannot use are left out: outbound HTTP goes through Medic's `http`
// capability (granted per runbook), never `fetch`, and a plugin serves no requests.
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';

const [src, wit, out] = process.argv.slice(2);
const { component } = await componentize(await readFile(src, 'utf8'), {
  witPath: wit,
  worldName: 'medic-plugin',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
