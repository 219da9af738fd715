//! The relying party: the provider's metadata and keys, the authorization request (code flow
//! with PKCE S256, `state`, `nonce`), the code exchange and the ID token's checks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{Body, IdpHttp, url_encode};
use crate::config::{OidcConfig, TokenAuth};
use crate::types::{Secret, now};

/// Metadata and keys are read again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// An ID token signed with a key not in the cached set makes jitgate fetch the set again, at
/// most this often (a provider rotating keys is picked up; a flood of bad tokens is not a flood
/// of fetches).
const KEY_REFRESH_MIN: Duration = Duration::from_secs(30);
/// After discovery failed, sign-ins are refused with the same reason for this long before the
/// provider is asked again (anonymous `/login` requests must not become a flood of outbound
/// connections).
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Clock difference tolerated between jitgate and the provider.
const LEEWAY: u64 = 60;

/// Signature algorithms accepted for ID tokens: public-key ones only (never `none`, never a
/// MAC keyed with the client secret).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What discovery says about the provider (the fields jitgate uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// The provider as jitgate uses it.
pub struct Provider {
    cfg: OidcConfig,
    /// `(ticket system, claim)`: the claims that name a person in a ticket system.
    ticket_claims: Vec<(String, String)>,
    secret: Secret,
    redirect_url: String,
    http: IdpHttp,
    cache: tokio::sync::Mutex<Option<Cached>>,
    last_key_fetch: Mutex<Option<Instant>>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

struct Cached {
    meta: Metadata,
    keys: JwkSet,
    at: Instant,
}

/// What the token endpoint gave for a code.
pub struct Tokens {
    pub id_token: String,
    pub access_token: Option<Secret>,
}

/// A verified sign-in: who the provider says the person is.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: String,
    /// The value of `username_claim`, if the provider sent one.
    pub username: Option<String>,
    pub groups: Vec<String>,
    /// When the person last authenticated at the provider (`auth_time`, else `iat`).
    pub auth_time: i64,
    /// Their identities in ticket systems (`jira:5b10ac8d...`), from the systems' `oidc_claim`.
    pub external_ids: Vec<String>,
}

impl Provider {
    /// A provider from `[oidc]`; nothing is fetched until the first sign-in. `ticket_claims`
    /// are `(ticket system, claim)` pairs read into [`Verified::external_ids`].
    pub fn new(
        cfg: &OidcConfig,
        redirect_url: String,
        ticket_claims: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let secret = cfg.secret()?;
        let ca = match &cfg.ca {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("oidc.ca {}: {e}", p.display()))?),
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            ticket_claims,
            secret,
            redirect_url,
            http: IdpHttp::new(ca.as_deref())?,
            cache: tokio::sync::Mutex::new(None),
            last_key_fetch: Mutex::new(None),
            last_failure: Mutex::new(None),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// The metadata fetched already, if any (never contacts the provider).
    pub fn cached(&self) -> Option<Metadata> {
        self.cache
            .try_lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.meta.clone()))
    }

    /// The provider's metadata (fetched, or cached for [`METADATA_TTL`]).
    pub async fn metadata(&self) -> Result<Metadata, String> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && c.at.elapsed() < METADATA_TTL
        {
            return Ok(c.meta.clone());
        }
        if let Some((at, why)) = self.last_failure.lock().expect("failure lock").as_ref()
            && at.elapsed() < RETRY_AFTER
        {
            return Err(why.clone());
        }
        let fresh = match self.discover().await {
            Ok(f) => f,
            Err(why) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %why, "identity provider discovery failed");
                *self.last_failure.lock().expect("failure lock") =
                    Some((Instant::now(), why.clone()));
                return Err(why);
            }
        };
        *self.last_failure.lock().expect("failure lock") = None;
        let meta = fresh.meta.clone();
        *cache = Some(fresh);
        Ok(meta)
    }

    async fn discover(&self) -> Result<Cached, String> {
        let unreachable = |why: String| {
            format!(
                "the identity provider {} cannot be used: {why}",
                self.cfg.issuer
            )
        };
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let a = self
            .http
            .call("GET", &url, None, Body::None)
            .await
            .map_err(unreachable)?;
        if a.status != 200 {
            return Err(unreachable(format!("{url} answered {}", a.status)));
        }
        let meta: Metadata = serde_json::from_value(a.body)
            .map_err(|e| unreachable(format!("its metadata at {url} is incomplete: {e}")))?;
        if meta.issuer != self.cfg.issuer {
            return Err(unreachable(format!(
                "its metadata names the issuer {:?}, not {:?} as [oidc] issuer says",
                meta.issuer, self.cfg.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", &meta.authorization_endpoint),
            ("token_endpoint", &meta.token_endpoint),
            ("jwks_uri", &meta.jwks_uri),
        ] {
            if !u.starts_with("https://") {
                return Err(unreachable(format!("its {what} {u:?} is not https://")));
            }
        }
        if let Some(m) = &meta.code_challenge_methods_supported
            && !m.iter().any(|x| x == "S256")
        {
            return Err(unreachable(
                "it does not support PKCE with S256 (code_challenge_methods_supported)".into(),
            ));
        }
        let keys = self.fetch_keys(&meta.jwks_uri).await.map_err(unreachable)?;
        Ok(Cached {
            meta,
            keys,
            at: Instant::now(),
        })
    }

    async fn fetch_keys(&self, uri: &str) -> Result<JwkSet, String> {
        *self.last_key_fetch.lock().expect("key fetch lock") = Some(Instant::now());
        let a = self.http.call("GET", uri, None, Body::None).await?;
        if a.status != 200 {
            return Err(format!("its key set {uri} answered {}", a.status));
        }
        // Keys of types jitgate cannot use are skipped rather than failing the whole set.
        let keys = a
            .body
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("its key set {uri} has no keys"))?
            .iter()
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .collect();
        Ok(JwkSet { keys })
    }

    /// Where to send the browser: the authorization endpoint with every parameter.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        challenge: &str,
        max_age: Option<u64>,
    ) -> Result<String, String> {
        let meta = self.metadata().await?;
        let scope = self.cfg.scopes.join(" ");
        let mut q = vec![
            ("response_type", "code".to_string()),
            ("client_id", self.cfg.client_id.clone()),
            ("redirect_uri", self.redirect_url.clone()),
            ("scope", scope),
            ("state", state.to_string()),
            ("nonce", nonce.to_string()),
            ("code_challenge", challenge.to_string()),
            ("code_challenge_method", "S256".to_string()),
        ];
        if let Some(m) = max_age {
            q.push(("max_age", m.to_string()));
        }
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{sep}{}",
            meta.authorization_endpoint,
            query.join("&")
        ))
    }

    /// Redeem an authorization code (with the PKCE verifier) at the token endpoint.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<Tokens, String> {
        let meta = self.metadata().await?;
        // As configured; else client_secret_basic unless the provider lists only
        // client_secret_post.
        let post = match self.cfg.token_endpoint_auth {
            Some(TokenAuth::ClientSecretPost) => true,
            Some(TokenAuth::ClientSecretBasic) => false,
            None => meta
                .token_endpoint_auth_methods_supported
                .as_ref()
                .is_some_and(|m| {
                    !m.iter().any(|x| x == "client_secret_basic")
                        && m.iter().any(|x| x == "client_secret_post")
                }),
        };
        let mut fields: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_url),
            ("code_verifier", verifier),
        ];
        let auth = if post {
            fields.push(("client_id", &self.cfg.client_id));
            fields.push(("client_secret", self.secret.expose()));
            None
        } else {
            // RFC 6749 2.3.1: both parts are form-encoded before Basic.
            let pair = format!(
                "{}:{}",
                url_encode(&self.cfg.client_id),
                url_encode(self.secret.expose())
            );
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        };
        let a = self
            .http
            .call("POST", &meta.token_endpoint, auth, Body::Form(&fields))
            .await?;
        if a.status != 200 {
            let why = a
                .body
                .get("error_description")
                .or_else(|| a.body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .chars()
                .take(300)
                .collect::<String>();
            return Err(format!(
                "the identity provider refused the sign-in code ({}: {why})",
                a.status
            ));
        }
        let id_token = a
            .body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or("the identity provider's token answer has no id_token (is the openid scope allowed for this client?)")?
            .to_string();
        let access_token = a
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .map(|t| Secret::new(t.to_string()));
        Ok(Tokens {
            id_token,
            access_token,
        })
    }

    /// Check the ID token (signature, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, and
    /// `auth_time` against `max_age`); fill in claims it lacks from the userinfo endpoint.
    pub async fn verify(
        &self,
        tokens: &Tokens,
        nonce: &str,
        max_age: Option<u64>,
    ) -> Result<Verified, String> {
        let claims = self
            .check_id_token(&tokens.id_token, nonce, max_age)
            .await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or("the ID token has no usable sub claim")?
            .to_string();
        let auth_time = claims
            .get("auth_time")
            .or_else(|| claims.get("iat"))
            .and_then(Value::as_i64)
            .unwrap_or_else(now);
        let mut username = claim_string(&claims, &self.cfg.username_claim);
        let mut groups = claim_groups(&claims, &self.cfg.groups_claim);
        let mut external = self.external_ids(&claims);
        let need_more =
            username.is_none() || groups.is_none() || external.len() < self.ticket_claims.len();
        if need_more
            && let (Some(access), Ok(meta)) = (&tokens.access_token, self.metadata().await)
            && let Some(ui) = &meta.userinfo_endpoint
        {
            let info = self.userinfo(ui, access).await?;
            if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
                return Err(
                    "the userinfo answer is about another subject than the ID token".into(),
                );
            }
            username = username.or_else(|| claim_string(&info, &self.cfg.username_claim));
            groups = groups.or_else(|| claim_groups(&info, &self.cfg.groups_claim));
            for id in self.external_ids(&info) {
                let system = id.split(':').next().unwrap_or_default();
                if !external.iter().any(|x| x.split(':').next() == Some(system)) {
                    external.push(id);
                }
            }
        }
        Ok(Verified {
            subject,
            username,
            groups: groups.unwrap_or_default(),
            auth_time,
            external_ids: external,
        })
    }

    /// `system:identity` for each ticket system whose claim `m` holds (a non-empty string of
    /// at most 255 characters without control characters; anything else is ignored).
    fn external_ids(&self, m: &Map<String, Value>) -> Vec<String> {
        self.ticket_claims
            .iter()
            .filter_map(|(system, claim)| {
                claim_string(m, claim)
                    .filter(|v| !v.is_empty() && v.len() <= 255 && !v.chars().any(char::is_control))
                    .map(|v| format!("{system}:{v}"))
            })
            .collect()
    }

    async fn userinfo(&self, url: &str, access: &Secret) -> Result<Map<String, Value>, String> {
        let a = self
            .http
            .call(
                "GET",
                url,
                Some(format!("Bearer {}", access.expose())),
                Body::None,
            )
            .await?;
        match (a.status, a.body) {
            (200, Value::Object(m)) => Ok(m),
            (s, _) => Err(format!(
                "the identity provider's userinfo endpoint answered {s}"
            )),
        }
    }

    async fn check_id_token(
        &self,
        token: &str,
        nonce: &str,
        max_age: Option<u64>,
    ) -> Result<Map<String, Value>, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the ID token is malformed: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!(
                "the ID token is signed with {:?}, which jitgate does not accept (only public-key signatures)",
                header.alg
            ));
        }
        let key = self.key_for(&header).await?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY;
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => {
                    "the ID token's signature does not verify against the provider's keys"
                        .to_string()
                }
                K::ExpiredSignature => "the ID token has expired; sign in again".to_string(),
                K::InvalidIssuer => format!(
                    "the ID token was issued by someone other than {}",
                    self.cfg.issuer
                ),
                K::InvalidAudience => format!(
                    "the ID token was issued for another client, not {} (aud)",
                    self.cfg.client_id
                ),
                _ => format!("the ID token is not acceptable: {e}"),
            }
        })?;
        let c = data.claims;
        // Several audiences: the token must say it was issued to jitgate (azp).
        if let Some(Value::Array(auds)) = c.get("aud")
            && auds.len() > 1
            && c.get("azp").and_then(Value::as_str) != Some(self.cfg.client_id.as_str())
        {
            return Err(format!(
                "the ID token names several audiences and was not issued to {} (azp)",
                self.cfg.client_id
            ));
        }
        let got = c.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !crate::crypto::ct_eq(got.as_bytes(), nonce.as_bytes()) {
            return Err("the ID token's nonce is not the one this sign-in sent (a replayed or injected token)".into());
        }
        let iat = c
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or("the ID token has no iat")?;
        if iat > now() + LEEWAY as i64 {
            return Err("the ID token was issued in the future; check the clocks".into());
        }
        if let Some(max) = max_age {
            let at = c
                .get("auth_time")
                .and_then(Value::as_i64)
                .ok_or("the provider did not say when the person authenticated (auth_time)")?;
            if now() - at > max as i64 + LEEWAY as i64 {
                return Err(format!(
                    "the provider did not make the person sign in again within {max} s (auth_time)"
                ));
            }
        }
        Ok(c)
    }

    /// The key that signed a token: by `kid`, fetching the set again once when it is unknown.
    async fn key_for(&self, header: &jsonwebtoken::Header) -> Result<DecodingKey, String> {
        self.metadata().await?;
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match &header.kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        {
            let cache = self.cache.lock().await;
            if let Some(k) = cache.as_ref().and_then(|c| find(&c.keys)) {
                return Ok(k);
            }
        }
        let recently = self
            .last_key_fetch
            .lock()
            .expect("key fetch lock")
            .is_some_and(|t| t.elapsed() < KEY_REFRESH_MIN);
        if !recently {
            let mut cache = self.cache.lock().await;
            if let Some(c) = cache.as_mut() {
                let uri = c.meta.jwks_uri.clone();
                c.keys = self.fetch_keys(&uri).await?;
                if let Some(k) = find(&c.keys) {
                    return Ok(k);
                }
            }
        }
        Err("the ID token is signed with a key the provider does not publish".into())
    }
}

fn claim_string(m: &Map<String, Value>, name: &str) -> Option<String> {
    m.get(name).and_then(Value::as_str).map(str::to_string)
}

/// Most groups kept from one sign-in, and the longest group name.
const MAX_GROUPS: usize = 500;
const MAX_GROUP_LEN: usize = 256;

/// Groups: an array of strings (or one string); absent is `None`.
fn claim_groups(m: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    let v = m.get(name)?;
    let list: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| s.len() <= MAX_GROUP_LEN)
            .take(MAX_GROUPS)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_come_as_a_list_or_one_string_and_absent_is_none() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            claim_groups(&m(json!({"groups": ["a", "b", 7]})), "groups"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            claim_groups(&m(json!({"roles": "ops"})), "roles"),
            Some(vec!["ops".into()])
        );
        assert_eq!(claim_groups(&m(json!({})), "groups"), None);
    }
}
