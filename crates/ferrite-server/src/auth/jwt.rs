//! Verifying bearer tokens: HS256 with a shared secret, RS256/ES256 with a PEM public key or
//! the keys of a JWKS file. `exp` and `sub` are required, `exp`/`nbf` are checked (with the
//! configured leeway), and so are `iss`/`aud` when configured. Tokens signed with an algorithm no
//! configured key uses — including `alg: none` — are refused before any signature check.

use crate::config::AuthConfig;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys and checks tokens are verified with.
pub struct Verifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    /// Tokens that verified, by their exact text (see [`Verifier::verify`]).
    verified: parking_lot::Mutex<std::collections::HashMap<String, Verified>>,
}

/// A token that verified: who it names, and when it expires (Unix seconds).
struct Verified {
    identity: Identity,
    exp: u64,
}

/// At most this many verified tokens are remembered (then the memory starts over), each at
/// most [`VERIFIED_TOKEN_MAX_BYTES`] long: a bounded few megabytes whatever callers send.
const VERIFIED_TOKENS_MAX: usize = 4096;
const VERIFIED_TOKEN_MAX_BYTES: usize = 4096;

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The `sub` claim: the user, bound to client ids on first use.
    pub subject: String,
    /// Every claim, for table rules (`claims.<name>`).
    pub claims: Map<String, Value>,
}

impl Verifier {
    /// Loads the keys named by `[auth]`; the error names the setting or file at fault.
    pub fn from_config(cfg: &AuthConfig) -> Result<Verifier, String> {
        let mut keys = vec![];
        if let Some(secret) = &cfg.secret {
            if secret.len() < 32 {
                return Err("auth.secret must be at least 32 bytes for HS256".into());
            }
            keys.push(Key { kid: None, alg: Algorithm::HS256, key: DecodingKey::from_secret(secret.as_bytes()) });
        }
        if let Some(path) = &cfg.public_key_file {
            let pem = std::fs::read(path).map_err(|e| format!("auth.public_key_file {}: {e}", path.display()))?;
            let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                Key { kid: None, alg: Algorithm::RS256, key: k }
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                Key { kid: None, alg: Algorithm::ES256, key: k }
            } else {
                return Err(format!("auth.public_key_file {}: not a PEM RSA or EC (P-256) public key", path.display()));
            };
            keys.push(key);
        }
        if let Some(path) = &cfg.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("auth.jwks_file {}: {e}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("auth.jwks_file {}: not a JWKS document: {e}", path.display()))?;
            for jwk in &set.keys {
                let alg = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
                    _ => continue, // other key types are not offered
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwks_file {}: key {:?}: {e}", path.display(), jwk.common.key_id))?;
                keys.push(Key { kid: jwk.common.key_id.clone(), alg, key });
            }
        }
        if keys.is_empty() {
            return Err("auth.mode = \"jwt\" needs auth.secret, auth.public_key_file or auth.jwks_file".into());
        }
        Ok(Verifier {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway_secs,
            verified: Default::default(),
        })
    }

    /// The identity in a valid token; the error says why a token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        // A live client sends the same token with every request; its signature and claims were
        // checked the first time, and only its expiry can change the answer since (the keys,
        // issuer and audience are fixed for the server's life).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        {
            let mut verified = self.verified.lock();
            match verified.get(token) {
                Some(v) if v.exp.saturating_add(self.leeway_secs) >= now => return Ok(v.identity.clone()),
                Some(_) => {
                    verified.remove(token);
                }
                None => {}
            }
        }
        let identity = self.verify_signed(token)?;
        let exp = identity.claims.get("exp").and_then(Value::as_u64);
        if let (Some(exp), true) = (exp, token.len() <= VERIFIED_TOKEN_MAX_BYTES) {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_TOKENS_MAX {
                verified.clear();
            }
            verified.insert(token.to_string(), Verified { identity: identity.clone(), exp });
        }
        Ok(identity)
    }

    /// Checks the token's signature and claims (what [`Verifier::verify`] remembers).
    fn verify_signed(&self, token: &str) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid))
            .collect();
        if candidates.is_empty() {
            return Err(format!("tokens signed with {:?} are not accepted", header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present.
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let mut last = String::new();
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => {
                    let subject = match data.claims.get("sub") {
                        Some(Value::String(s)) if !s.is_empty() => s.clone(),
                        _ => return Err("the token's sub claim must be a non-empty string".into()),
                    };
                    return Ok(Identity { subject, claims: data.claims });
                }
                Err(e) => last = describe(&e),
            }
        }
        Err(last)
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidIssuer => "the token's issuer is not accepted".into(),
        K::InvalidAudience => "the token's audience is not accepted".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        _ => format!("invalid token: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-that-is-long-enough-0123456789";

    fn verifier() -> Verifier {
        let cfg = AuthConfig { secret: Some(SECRET.into()), leeway_secs: 0, ..Default::default() };
        Verifier::from_config(&cfg).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked_again() {
        let v = verifier();
        let t = token(serde_json::json!({"sub": "ann", "exp": now() + 1}));
        assert_eq!(v.verify(&t).unwrap().subject, "ann");
        assert_eq!(v.verify(&t).unwrap().subject, "ann", "remembered");
        // The same claims with another signature are not the remembered token.
        let at = t.len() - 10; // inside the signature, a character carrying six bits
        let other = if &t[at..at + 1] == "A" { "B" } else { "A" };
        let forged = format!("{}{other}{}", &t[..at], &t[at + 1..]);
        assert!(v.verify(&forged).is_err());
        // Once past its expiry, the remembered token is refused like any expired one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match v.verify(&t) {
                Err(e) => {
                    assert!(e.contains("expired"), "{e}");
                    break;
                }
                Ok(_) => assert!(std::time::Instant::now() < deadline, "an expired token was still accepted"),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let v = verifier();
        for i in 0..VERIFIED_TOKENS_MAX + 10 {
            v.verify(&token(serde_json::json!({"sub": format!("u{i}"), "exp": now() + 600}))).unwrap();
        }
        assert!(v.verified.lock().len() <= VERIFIED_TOKENS_MAX);
        let long =
            token(serde_json::json!({"sub": "big", "exp": now() + 600, "pad": "x".repeat(VERIFIED_TOKEN_MAX_BYTES)}));
        v.verify(&long).unwrap();
        assert!(!v.verified.lock().contains_key(&long), "long tokens are not kept");
    }
}
