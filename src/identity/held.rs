//! What a sign-in holds between two requests: the sign-in in flight (from `/login` to the
//! provider's callback), the one-time code a CLI redeems, a sign-in link. Kept in the store,
//! by the SHA-256 of its secret, so that the request that finishes it may reach any gateway
//! node, and taken exactly once.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MAX_IN_FLIGHT, Refusal};
use crate::store::Store;
use crate::types::now;

/// The kinds held, each a namespace of keys.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// A browser sign-in in flight, by its `state`.
    Login,
    /// A CLI's one-time code.
    CliCode,
    /// A sign-in link's token.
    Link,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::CliCode => "cli-code",
            Kind::Link => "link",
        }
    }
}

/// Hold `value` under `secret` for `window` seconds; refused when [`MAX_IN_FLIGHT`] of this
/// kind are held already (the bound on what unauthenticated callers can make jitgate keep).
pub(super) async fn put<T: Serialize>(
    store: &dyn Store,
    kind: Kind,
    secret: &str,
    value: &T,
    window: u64,
) -> Result<(), Refusal> {
    let json = serde_json::to_string(value).expect("held values serialize");
    let key = crate::crypto::sha256_hex(secret.as_bytes());
    let kept = store
        .put_held(
            kind.as_str(),
            &key,
            &json,
            now() + window as i64,
            MAX_IN_FLIGHT,
        )
        .await
        .map_err(|e| Refusal(e.to_string()))?;
    if kept {
        Ok(())
    } else {
        Err(Refusal(
            "too many sign-ins are in progress on this gateway; try again in a minute".into(),
        ))
    }
}

/// Take what `secret` holds (once: it is gone afterwards, whoever asks next). Expired values
/// are still returned, for the caller to say so.
pub(super) async fn take<T: DeserializeOwned>(
    store: &dyn Store,
    kind: Kind,
    secret: &str,
) -> Result<Option<T>, Refusal> {
    let key = crate::crypto::sha256_hex(secret.as_bytes());
    let json = store
        .take_held(kind.as_str(), &key)
        .await
        .map_err(|e| Refusal(e.to_string()))?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}
