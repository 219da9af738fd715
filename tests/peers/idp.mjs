// A real OpenID provider (oidc-provider) for jitgate's integration tests.
//
//   node tests/peers/idp.mjs CONFIG.json     CONFIG = {"cert": "server.pem", "key": "server-key.pem"}
//
// Listens with TLS on 127.0.0.1, port 0; prints one line {"issuer":"https://127.0.0.1:PORT"} on
// stdout when it is ready, logs to stderr, and exits when its stdin closes (so it dies with the
// test binary that started it), removing the directory named by $JITGATE_PEER_DIR if any.
//
// What it offers (see discovery at {issuer}/.well-known/openid-configuration):
// - scopes openid, profile (preferred_username, name), email (email), groups (groups: an array of
//   strings), tickets (jira_account_id, rt_user: a person's identities in ticket systems);
//   sub = the account id.
// - conformIdTokenClaims is left at its default (true): for response_type=code the ID token
//   from the token endpoint carries only iss, sub, aud, exp, iat, nonce (when sent), and
//   auth_time when max_age or prompt=login was sent or the client registered require_auth_time
//   (no at_hash, no sid). The scope claims (preferred_username, name, email, groups) come only
//   from the userinfo endpoint ({issuer}/me) with the access token, unless the RP asks for them in
//   the ID token with the `claims` parameter ({"id_token":{"groups":null}}), enabled here.
// - open dynamic client registration at POST {issuer}/reg (no initial access token);
// - RP-initiated logout at {issuer}/session/end: the confirmation page has a button #logout
//   ("Yes, sign me out"); without a post_logout_redirect_uri the end page shows #signed-out;
// - PKCE required for every client (S256 only);
// - a login page of its own (form #login, #password, #submit; a wrong password shows #error),
//   then consent is granted automatically for everything requested.
//
// Test-only admin routes, all under /__test/ on the same origin:
//   PUT  /__test/accounts/{id}  {"password":"...","claims":{...}}   creates or replaces an account
//   POST /__test/tamper         {"client_id":"...","audience":"..."} the next token response for
//        that client carries its id_token re-signed with the provider's key and aud = audience
//   PUT  /__test/page/{n}       body = HTML;  GET /__test/page?id={n} serves it (text/html)

import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { basename } from 'node:path';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// In-memory state the tests manage through /__test/.
const accounts = new Map(); // id -> { password, claims }
const tampers = new Map(); // client_id -> audience, for the next token response only
const pages = new Map(); // id -> HTML

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Read a request body (the provider parses its own routes; these are only ours).
async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(ctx) {
  try {
    return JSON.parse(await readBody(ctx.req));
  } catch (e) {
    ctx.throw(e.status || 400, `bad JSON body: ${e.message}`);
  }
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
  body { font-family: sans-serif; background: #f4f4f4; margin: 40px; }
  main { background: #fff; max-width: 340px; margin: 0 auto; padding: 20px 30px; border-radius: 4px;
         box-shadow: 0 2px 4px rgba(0,0,0,.2); }
  label, input, button { display: block; width: 100%; box-sizing: border-box; }
  input { margin: 4px 0 14px; padding: 6px; }
  button { padding: 8px; background: #3367d6; color: #fff; border: 0; border-radius: 3px; }
  #error { color: #b00020; }
</style></head>
<body><main>
${body}
</main></body></html>`;
}

function loginPage(uid, clientId, error, login = '') {
  return page('Sign in', `<h1>Sign in</h1>
<p>to <span id="client">${escapeHtml(clientId)}</span> at the jitgate test identity provider</p>
${error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="login">Username</label>
  <input id="login" name="login" value="${escapeHtml(login)}" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password">
  <button id="submit" type="submit">Sign in</button>
</form>`);
}

// The signing key: RS256, new for every run; the tamper route re-signs with the same key.
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const server = https.createServer({
  cert: readFileSync(config.cert),
  key: readFileSync(config.key),
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const issuer = `https://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'profile', 'email', 'groups', 'tickets'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
    tickets: ['jira_account_id', 'rt_user'],
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: false },
    claimsParameter: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.type = 'html';
        ctx.body = page('Sign out', `<h1>Sign out?</h1>
${form}
<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button id="stay" type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<h1 id="signed-out">You are signed out</h1>');
      },
    },
  },
  // The RP must send an S256 code challenge, whatever its client authentication.
  pkce: { required: () => true },
  ttl: {
    AccessToken: 600,
    IdToken: 600,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  async findAccount(_ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      // The provider filters these by the granted scopes and claims.
      async claims() {
        return { ...account.claims, sub };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>
<p id="op-error">${escapeHtml(out.error)}</p>
<p id="op-error-description">${escapeHtml(out.error_description ?? '')}</p>`);
  },
});

provider.on('server_error', (_ctx, err) => console.error('idp server_error:', err));

// Test-only admin routes, then the login and consent interactions, before the provider's own
// routes (which never start with /__test/ or /interaction/).
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/__test/')) return next();
  ctx.set('cache-control', 'no-store');
  let m;
  if (ctx.method === 'PUT' && (m = ctx.path.match(/^\/__test\/accounts\/([^/]+)$/))) {
    const id = decodeURIComponent(m[1]);
    const body = await readJson(ctx);
    if (typeof body.password !== 'string') ctx.throw(400, 'password must be a string');
    accounts.set(id, { password: body.password, claims: body.claims ?? {} });
    ctx.status = 204;
  } else if (ctx.method === 'POST' && ctx.path === '/__test/tamper') {
    const body = await readJson(ctx);
    if (typeof body.client_id !== 'string' || body.audience === undefined) {
      ctx.throw(400, 'client_id and audience are required');
    }
    tampers.set(body.client_id, body.audience);
    ctx.status = 204;
  } else if (ctx.method === 'PUT' && (m = ctx.path.match(/^\/__test\/page\/([^/]+)$/))) {
    pages.set(decodeURIComponent(m[1]), await readBody(ctx.req, 16 << 20));
    ctx.status = 204;
  } else if (ctx.method === 'GET' && ctx.path === '/__test/page') {
    const html = pages.get(String(ctx.query.id));
    if (html === undefined) ctx.throw(404, `no page ${ctx.query.id}`);
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = html;
  } else {
    ctx.throw(404, `no test route ${ctx.method} ${ctx.path}`);
  }
});

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  ctx.set('cache-control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { uid, prompt, params } = details;
  if (uid !== m[1]) ctx.throw(400, 'interaction mismatch');

  if (prompt.name === 'login') {
    if (ctx.method === 'GET' && !m[2]) {
      ctx.type = 'html';
      ctx.body = loginPage(uid, params.client_id);
      return;
    }
    if (ctx.method !== 'POST' || !m[2]) ctx.throw(405);
    const form = new URLSearchParams(await readBody(ctx.req));
    const login = form.get('login') ?? '';
    const account = accounts.get(login);
    if (!account || account.password !== form.get('password')) {
      ctx.type = 'html';
      ctx.body = loginPage(uid, params.client_id, 'Wrong username or password.', login);
      return;
    }
    // auth_time = now: a max_age or prompt=login re-prompt resets it.
    const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: login } });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }

  if (prompt.name === 'consent') {
    // Grant everything the RP asked for, without asking the person.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const to = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }

  ctx.throw(400, `unexpected prompt ${prompt.name}`);
});

// One-shot ID-token tampering: after the token endpoint answered, swap the id_token for the same
// claims with another aud, signed with the provider's own key and kid, so only an RP that checks
// aud can tell.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/token' || ctx.status !== 200 || !ctx.body?.id_token) return;
  const clientId = ctx.oidc?.client?.clientId ?? clientIdOf(ctx);
  if (!clientId || !tampers.has(clientId)) return;
  const audience = tampers.get(clientId);
  tampers.delete(clientId);
  const header = jose.decodeProtectedHeader(ctx.body.id_token);
  const claims = jose.decodeJwt(ctx.body.id_token);
  ctx.body.id_token = await new jose.SignJWT({ ...claims, aud: audience })
    .setProtectedHeader(header)
    .sign(privateKey);
  console.error(`idp: tampered the id_token for ${clientId}: aud=${JSON.stringify(audience)}`);
});

// The client of a token request, from HTTP basic auth or the form (client_secret_post).
function clientIdOf(ctx) {
  const auth = ctx.get('authorization');
  if (auth.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    return decodeURIComponent(decoded.slice(0, decoded.indexOf(':')));
  }
  return ctx.oidc?.body?.client_id;
}

server.on('request', provider.callback());

// Die with the test binary: it holds our stdin open for its whole life. The temp directory it
// made for this run (certificates, our log) goes with us: nothing else can remove it.
function exit() {
  const dir = process.env.JITGATE_PEER_DIR;
  if (dir && basename(dir).startsWith('jitgate-it-')) rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
process.stdin.on('end', exit);
process.stdin.on('error', exit);
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
