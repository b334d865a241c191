// `version-check-js`, a Medic check written in JavaScript: asks a service which version it runs
// and passes when that is one of the expected versions. Built with componentize-js (the Bytecode
// Alliance's, from npm) against the same WIT contract as the Rust plugins (`wit/plugin.wit`).
//
// How the contract looks from JavaScript (jco's conventions): records are objects with
// camelCase fields, variants `{ tag, val }`, enums strings, options `undefined` or the value,
// `list<u8>` a Uint8Array; an import's `err` is thrown (its value in `.payload`), and an
// export's `err` is thrown as the plain variant object.
import { send } from 'medic:plugin/http@0.1.1';
import { log } from 'medic:plugin/log@0.1.1';

function textParam(params, name) {
  for (const [key, value] of params) {
    if (key === name) {
      if (value.tag !== 'text') {
        throw { tag: 'invalid-params', val: `parameter \`${name}\` must be text` };
      }
      return value.val;
    }
  }
  throw { tag: 'invalid-params', val: `parameter \`${name}\` is required` };
}

export const plugin = {
  getManifest() {
    return {
      name: 'version-check-js',
      version: '0.1.0',
      description: 'Checks that a service runs one of the expected versions (written in JavaScript)',
      kind: 'check',
      params: [
        { name: 'url', type: 'text', required: true, default: undefined, description: 'Where to GET the version', secret: false },
        { name: 'expect', type: 'text', required: true, default: undefined, description: 'The accepted versions, comma-separated', secret: false },
      ],
      capabilities: ['http', 'log'],
      supportsRevert: false,
      supportsDryRun: true,
    };
  },
  run(context, params) {
    const url = textParam(params, 'url');
    const accepted = textParam(params, 'expect').split(',').map((v) => v.trim()).filter((v) => v);
    let response;
    try {
      response = send({ method: 'GET', url, headers: [], body: undefined, timeoutMs: undefined });
    } catch (e) {
      const err = e.payload ?? e;
      if (err.tag === 'connection' || err.tag === 'timeout') {
        return { status: 'failure', summary: `${url}: ${err.val}`, outputs: [], metrics: [] };
      }
      throw { tag: 'denied', val: `${url}: ${err.val}` };
    }
    const body = new TextDecoder().decode(response.body).trim();
    if (response.status !== 200) {
      return { status: 'failure', summary: `${url} answered ${response.status}`, outputs: [], metrics: [] };
    }
    let version = body;
    try { version = String(JSON.parse(body).version ?? body); } catch (_) { /* plain text */ }
    log('info', 'version read', [['url', url], ['version', version]]);
    const outputs = [['version', { tag: 'text', val: version }]];
    if (accepted.includes(version)) {
      return { status: 'success', summary: `${url} runs ${version}`, outputs, metrics: [] };
    }
    return { status: 'failure', summary: `${url} runs ${version}, expected ${accepted.join(' or ')}`, outputs, metrics: [] };
  },
  revert(context, params, outputs) {
    throw { tag: 'permanent', val: 'a check has nothing to revert' };
  },
};
