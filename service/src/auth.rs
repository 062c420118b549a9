//! API tokens: random, shown once, stored only as their SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is recognisable (and greppable) as ours.
pub const TOKEN_PREFIX: &str = "trt_";

/// A new token: the secret to hand out once, its hash to store, and its public id (for listing
/// and revoking; it tells nothing of the secret).
pub struct NewToken {
    /// The secret, `trt_` and 64 hex digits (256 random bits).
    pub secret: String,
    /// SHA-256 of the secret, lowercase hex: what the store keeps.
    pub hash: String,
    /// `tok_` and 12 hex digits of an independent random value.
    pub id: String,
}

impl NewToken {
    /// Draws a token from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        let mut id = [0u8; 6];
        rand::rng().fill_bytes(&mut secret);
        rand::rng().fill_bytes(&mut id);
        let secret = format!("{TOKEN_PREFIX}{}", hex(&secret));
        Self {
            hash: hash(&secret),
            secret,
            id: format!("tok_{}", hex(&id)),
        }
    }
}

/// The stored form of a presented token.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A new job id: `job_` and 16 hex digits, random (ids do not reveal how many jobs exist).
pub fn new_job_id() -> String {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    format!("job_{}", hex(&id))
}

/// Issues a new token for a tenant, or for the operator (`None`); the secret is returned once.
pub async fn issue_token(
    store: &dyn crate::store::Store,
    tenant: Option<crate::model::TenantId>,
) -> Result<NewToken, crate::store::StoreError> {
    let token = NewToken::generate();
    store.add_token(&token.id, &token.hash, tenant).await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_stored_only_as_their_hash() {
        let (a, b) = (NewToken::generate(), NewToken::generate());
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX) && a.secret.len() == 4 + 64);
        assert_eq!(a.hash, hash(&a.secret));
        assert!(!a.hash.contains(&a.secret[4..]));
        assert!(a.id.starts_with("tok_") && a.id.len() == 16);
    }
}
