// A headless-Chromium driver for jitgate's integration tests, speaking JSON lines.
//
//   node tests/peers/browser.mjs
//
// Launches Debian's /usr/bin/chromium through playwright-core (never a downloaded browser) and
// prints {"ready":true}. Then each line on stdin is one command {"id":N,"cmd":"...",...} and gets
// exactly one answer line {"id":N,"ok":true,"result":...} or {"id":N,"ok":false,"error":"..."}.
// Commands run concurrently (answers may come out of order; match them by id). Every command has
// a timeout (timeout_ms, default 20000). Exits, closing Chromium, when stdin closes, and then
// removes the directory named by $JITGATE_PEER_DIR if any.
//
// Commands (ids of contexts and pages are strings):
//   newContext {}                        -> "c1"  (ignoreHTTPSErrors: true)
//   closeContext {ctx}                   -> null  (closes its pages too)
//   newPage {ctx}                        -> "p1"
//   goto {page,url}                      -> {status, url}  waits for load; status of the final
//                                           main response, null when there was none
//   fill {page,selector,value}           -> null
//   click {page,selector}                -> {url}  when the click starts a navigation of the page,
//                                           waits until that navigation committed and loaded
//   url {page}                           -> the page's URL
//   content {page}                       -> the page's HTML
//   text {page,selector}                 -> innerText of the first match
//   screenshot {page,path}               -> null  (full-page PNG)
//   eval {page,expression}               -> the JSON value of a JavaScript expression evaluated
//                                           in the page's main world. When the expression is a
//                                           function it is called with no arguments, so both
//                                           "document.title" and
//                                           "async () => { const r = await fetch('/x'); return r.status }"
//                                           work; a promise is awaited; undefined gives null.
//                                           It runs with DevTools' rights: the page's CSP does not
//                                           stop the evaluation itself (test script-src with the
//                                           page's own scripts), but does apply to what it fetches.
//   waitForUrl {page,prefix,timeout_ms}  -> the URL once it starts with prefix (then waits for load)
//   cookies {ctx}                        -> the context's cookies (Playwright's shape:
//                                           name, value, domain, path, expires, httpOnly, secure, sameSite)
//   addCookies {ctx,cookies}             -> null
//
// Untrusted certificates: every test server here (the gateway, the IdP) has a certificate from
// its own throwaway CA. With ignoreHTTPSErrors (CDP's per-context certificate-error override),
// Chromium 156 still loads those pages as secure contexts and still stores and sends back
// `Secure` cookies, `__Host-` prefixed ones included (checked by hand: an https page with an
// untrusted certificate set `__Host-t=1; Secure; HttpOnly; Path=/; SameSite=Lax`, cookies{}
// listed it and the next request carried it). So no --ignore-certificate-errors-spki-list or CA
// import is needed; the IdP's own session cookies (Secure, SameSite=Lax) rely on the same thing.

import { rmSync } from 'node:fs';
import { basename } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const DEFAULT_TIMEOUT_MS = 20_000;

// Chromium runs as root here: no sandbox; and nothing that reaches out to the network by itself.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const contexts = new Map(); // id -> BrowserContext
const pages = new Map(); // id -> { page, ctx }
let seq = 0;

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function need(value, name) {
  if (value === undefined || value === null) throw new Error(`missing "${name}"`);
  return value;
}

function contextOf(msg) {
  const ctx = contexts.get(need(msg.ctx, 'ctx'));
  if (!ctx) throw new Error(`no context ${msg.ctx}`);
  return ctx;
}

function pageOf(msg) {
  const entry = pages.get(need(msg.page, 'page'));
  if (!entry) throw new Error(`no page ${msg.page}`);
  return entry.page;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Click, then follow the navigation it started, if any. A click that navigates sends its main-frame
// request at once (form submissions, links); one that sends none within a short grace does not
// navigate (or only runs script), and the click answers then.
async function click(page, selector, timeout) {
  const main = page.mainFrame();
  let started = false;
  let timer;
  let settle;
  const settled = new Promise((resolve) => { settle = resolve; });
  const onRequest = (r) => { if (r.isNavigationRequest() && r.frame() === main) started = true; };
  const onNavigated = (f) => { if (f === main) settle(); };
  // A navigation that fails, or ends without a new document (204), commits nothing; a redirect
  // hop is not an end (its next request follows).
  const onFailed = (r) => {
    if (r.isNavigationRequest() && r.frame() === main) setTimeout(settle, 250);
  };
  const onFinished = async (r) => {
    if (!r.isNavigationRequest() || r.frame() !== main) return;
    const status = (await r.response().catch(() => null))?.status() ?? 0;
    if (status < 300 || status >= 400) setTimeout(settle, 250);
  };
  page.on('request', onRequest);
  page.on('framenavigated', onNavigated);
  page.on('requestfailed', onFailed);
  page.on('requestfinished', onFinished);
  try {
    await page.click(selector, { timeout });
    if (!started) await sleep(300);
    if (started) {
      await Promise.race([
        settled,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the navigation after clicking ${selector} did not finish within ${timeout} ms`)), timeout);
        }),
      ]);
      await page.waitForLoadState('load', { timeout });
    }
  } finally {
    clearTimeout(timer);
    page.off('request', onRequest);
    page.off('framenavigated', onNavigated);
    page.off('requestfailed', onFailed);
    page.off('requestfinished', onFinished);
  }
  return { url: page.url() };
}

async function waitForUrl(page, prefix, timeout) {
  const deadline = Date.now() + timeout;
  while (!page.url().startsWith(prefix)) {
    if (Date.now() >= deadline) {
      throw new Error(`the page did not reach ${prefix} within ${timeout} ms; it is at ${page.url()}`);
    }
    await sleep(50);
  }
  // So that content and text read the new document, not a half-parsed one.
  await page.waitForLoadState('load', { timeout: Math.max(deadline - Date.now(), 1000) }).catch(() => {});
  return page.url();
}

async function run(msg, timeout) {
  switch (msg.cmd) {
    case 'newContext': {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const id = `c${++seq}`;
      contexts.set(id, ctx);
      return id;
    }
    case 'closeContext': {
      const ctx = contextOf(msg);
      contexts.delete(msg.ctx);
      for (const [id, entry] of pages) if (entry.ctx === msg.ctx) pages.delete(id);
      await ctx.close();
      return null;
    }
    case 'newPage': {
      const page = await contextOf(msg).newPage();
      page.setDefaultTimeout(timeout);
      const id = `p${++seq}`;
      // Every main-frame navigation request, redirects included (what a tester would see in the
      // browser's network panel): tests read the provider's redirects from it.
      const navigations = [];
      page.on('request', (r) => {
        if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push(r.url());
      });
      pages.set(id, { page, ctx: msg.ctx, navigations });
      return id;
    }
    case 'goto': {
      const page = pageOf(msg);
      const response = await page.goto(need(msg.url, 'url'), { waitUntil: 'load', timeout });
      return { status: response ? response.status() : null, url: page.url() };
    }
    case 'fill':
      await pageOf(msg).fill(need(msg.selector, 'selector'), String(need(msg.value, 'value')), { timeout });
      return null;
    case 'click':
      return click(pageOf(msg), need(msg.selector, 'selector'), timeout);
    case 'url':
      return pageOf(msg).url();
    case 'navigations':
      return pages.get(need(msg.page, 'page'))?.navigations ?? [];
    case 'content':
      return pageOf(msg).content();
    case 'text':
      return pageOf(msg).innerText(need(msg.selector, 'selector'), { timeout });
    case 'screenshot':
      await pageOf(msg).screenshot({ path: need(msg.path, 'path'), type: 'png', fullPage: true, timeout });
      return null;
    case 'eval': {
      // An expression, or a function (called with no arguments): either may give a promise.
      const source = String(need(msg.expression, 'expression'));
      const value = await pageOf(msg).evaluate(
        `(() => { const v = (\n${source}\n); return typeof v === 'function' ? v() : v; })()`,
      );
      return value === undefined ? null : value;
    }
    case 'waitForUrl':
      return waitForUrl(pageOf(msg), String(need(msg.prefix, 'prefix')), timeout);
    case 'cookies':
      return contextOf(msg).cookies();
    case 'addCookies':
      await contextOf(msg).addCookies(need(msg.cookies, 'cookies'));
      return null;
    default:
      throw new Error(`unknown command ${JSON.stringify(msg.cmd)}`);
  }
}

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    send({ id: null, ok: false, error: `not JSON: ${e.message}` });
    return;
  }
  const id = msg?.id ?? null;
  const timeout = Number(msg?.timeout_ms) > 0 ? Number(msg.timeout_ms) : DEFAULT_TIMEOUT_MS;
  let timer;
  try {
    // The command's own timeouts should fire first; this bounds whatever does not take one.
    const result = await Promise.race([
      run(msg, timeout),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${msg?.cmd} timed out after ${timeout + 1000} ms`)), timeout + 1000);
      }),
    ]);
    send({ id, ok: true, result: result ?? null });
  } catch (e) {
    // Playwright's messages end with a multi-line call log; the first lines say what failed.
    // Playwright's messages end with a call log, and page errors with the page's stack; the
    // first lines say what failed.
    const message = String(e?.message ?? e).split('\nCall log:')[0].split(/\n\s+at /)[0];
    send({ id, ok: false, error: message });
  } finally {
    clearTimeout(timer);
  }
}

process.on('unhandledRejection', (e) => console.error('browser driver: unhandled rejection:', e));

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  // The test binary's temp directory for this run (our log): nothing else can remove it.
  const dir = process.env.JITGATE_PEER_DIR;
  if (dir && basename(dir).startsWith('jitgate-it-')) rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGTERM', shutdown);
browser.on('disconnected', () => {
  if (!closing) {
    console.error('browser driver: Chromium went away');
    process.exit(1);
  }
});

const rl = createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => { if (line.trim()) handle(line); });
rl.on('close', shutdown);

send({ ready: true });
