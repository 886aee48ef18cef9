// The /docs page: the OpenAPI document rendered server-side into one self-contained HTML page
// (no scripts, no CDN: the service may run where there is no network), and its headers.

import { OPERATOR_SCHEME, TENANT_SCHEME, WHOLE_TENANT } from '../auth/guard.ts';
import { fromHex, sha256Hex, toBase64 } from '../util/bytes.ts';

type Json = Record<string, unknown>;

/** An operation's security requirements in words: the key it needs, checked before anything else (docs/API.md). */
function keyNeeded(op: Json): string {
  const security = op.security as Record<string, string[]>[] | undefined;
  if (!security?.length) return 'none';
  if (security.some((r) => OPERATOR_SCHEME in r)) return 'the operator key';
  const scopes = security.flatMap((r) => r[TENANT_SCHEME] ?? []);
  const key = scopes.length ? `a tenant key with the ${scopes.map((s) => `"${s}"`).join(' or the ')} scope` : 'any tenant key';
  return op[WHOLE_TENANT] === true ? `${key}, not limited to collections` : key;
}

/** The page's look: one fixed <style>, allowed by the CSP by its hash (no 'unsafe-inline'). */
const STYLE = `
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
section{border-top:1px solid #ddd;padding:.5rem 0}
h3{margin:.4rem 0;font-size:1rem}.m{display:inline-block;min-width:4.5rem;font-family:monospace}
.get{color:#1565c0}.post{color:#2e7d32}.delete{color:#c62828}
pre{background:#f5f5f5;padding:.5rem;overflow:auto;font-size:13px}summary{cursor:pointer;color:#555}
`;

let headers: Promise<Record<string, string>> | undefined;

/**
 * The page is markup and that one <style>, nothing else: no script of any origin runs in it, no
 * other style applies (a style= attribute or another <style> is blocked), nothing is fetched, no
 * form is sent, and no other site frames it. Should a description ever carry markup past esc(), it
 * stays inert. The style is inline, not a stylesheet of its own, so the page stays one
 * self-contained answer; its hash is computed once, from the text the page carries.
 */
export function docsHeaders(): Promise<Record<string, string>> {
  headers ??= sha256Hex(STYLE).then((hex) => ({
    'content-security-policy': ["default-src 'none'", `style-src 'sha256-${toBase64(fromHex(hex)!)}'`, "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"].join('; '),
  }));
  return headers;
}

const esc = (s: unknown): string =>
  String(s).replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);

/** Replaces `$ref`s by the component they name, once per path (enough for these schemas). */
function resolve(doc: Json, node: unknown, seen: Set<string> = new Set()): unknown {
  if (Array.isArray(node)) return node.map((n) => resolve(doc, n, seen));
  if (!node || typeof node !== 'object') return node;
  const ref = (node as Json).$ref;
  if (typeof ref === 'string' && ref.startsWith('#/')) {
    if (seen.has(ref)) return { $ref: ref };
    const target = ref.slice(2).split('/').reduce<unknown>((o, k) => (o as Json)?.[k], doc);
    return resolve(doc, target, new Set([...seen, ref]));
  }
  return Object.fromEntries(Object.entries(node as Json).map(([k, v]) => [k, resolve(doc, v, seen)]));
}

const block = (label: string, value: unknown): string =>
  `<details><summary>${esc(label)}</summary><pre>${esc(JSON.stringify(value, null, 2))}</pre></details>`;

export function renderDocs(doc: Json): string {
  const info = (doc.info ?? {}) as Json;
  const ops: string[] = [];
  for (const [path, item] of Object.entries((doc.paths ?? {}) as Record<string, Json>)) {
    for (const [method, raw] of Object.entries(item)) {
      const op = raw as Json;
      const params = ((op.parameters ?? []) as Json[]).map((p) => `<code>${esc(p.name)}</code> (${esc(p.in)})`).join(', ');
      const body = ((op.requestBody as Json | undefined)?.content as Json | undefined)?.['application/json'] as Json | undefined;
      const responses = Object.entries((op.responses ?? {}) as Record<string, Json>)
        .map(([status, r]) => {
          const schema = ((r.content as Json | undefined)?.['application/json'] as Json | undefined)?.schema;
          return `<li><b>${esc(status)}</b> ${esc(r.description ?? '')}${schema && status.startsWith('2') ? block('schema', resolve(doc, schema)) : ''}</li>`;
        })
        .join('');
      ops.push(`<section id="${esc(`${method}-${path}`)}">
<h3><span class="m ${esc(method)}">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code></h3>
<p>${esc(op.summary ?? '')}</p>${op.description ? `<p>${esc(op.description)}</p>` : ''}
<p>Key: ${esc(keyNeeded(op))}</p>
${params ? `<p>Parameters: ${params}</p>` : ''}
${body ? block('request body', resolve(doc, body.schema)) : ''}
<ul>${responses}</ul></section>`);
    }
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(info.title)} API</title>
<style>${STYLE}</style></head><body>
<h1>${esc(info.title)} <small>${esc(info.version)}</small></h1>
<p>${esc(info.description ?? '')}</p>
<p>Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>: on /v1 the key is checked
before the request (401, 403), and only then its shape (415, 400). Errors are always
<code>{"error":{"code","message","field"}}</code>. Machine-readable document: <a href="/openapi.json">/openapi.json</a>.</p>
${ops.join('\n')}
</body></html>`;
}
