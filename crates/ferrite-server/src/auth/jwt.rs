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
}

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
        Ok(Verifier { keys, issuer: cfg.issuer.clone(), audience: cfg.audience.clone(), leeway_secs: cfg.leeway_secs })
    }

    /// The identity in a valid token; the error says why a token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
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
