//! Bearer tokens that a cloud's identity service issues for a while: Microsoft
//! Entra ID's client credentials (Azure OpenAI) and a Google service account's
//! signed JWT exchanged for an access token (Vertex AI). One token is kept per
//! deployment and renewed a margin before it expires; callers that find it
//! stale wait for one renewal rather than each asking for their own.
//!
//! Hand-written rather than Azure's or Google's SDK crates: each is one form
//! POST, and those SDKs bring their own HTTP stacks and runtimes.

use super::ProviderError;
use super::wire::{check_token_status, send_error};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Renew this long before the token's stated expiry (clock skew, slow calls).
const RENEW_MARGIN: Duration = Duration::from_secs(300);
/// What Google's token endpoint is asked for (every Vertex AI call needs it).
const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A Google assertion's lifetime: the most Google accepts.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("reading the service account file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the service account file {path} is not a service account key: {reason}")]
    Invalid { path: String, reason: String },
}

/// How a token is obtained.
enum Grant {
    /// OAuth 2.0 client credentials against an Entra ID tenant.
    ClientCredentials {
        url: String,
        client_id: String,
        secret: SecretString,
        scope: String,
    },
    /// RFC 7523: a JWT signed with the service account's key.
    ServiceAccount {
        email: String,
        key: jsonwebtoken::EncodingKey,
        key_id: Option<String>,
        token_uri: String,
    },
}

pub struct TokenSource {
    client: reqwest::Client,
    grant: Grant,
    current: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "google_token_uri")]
    token_uri: String,
}

fn google_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl TokenSource {
    /// Entra ID's client credentials; the secret is read from `secret_env` now.
    pub fn entra(
        client: reqwest::Client,
        config: &crate::config::EntraConfig,
    ) -> Result<TokenSource, CredentialsError> {
        let secret = std::env::var(&config.client_secret_env)
            .map_err(|_| CredentialsError::MissingEnv(config.client_secret_env.clone()))?;
        Ok(TokenSource::new(
            client,
            Grant::ClientCredentials {
                url: format!(
                    "{}/{}/oauth2/v2.0/token",
                    config.authority.trim_end_matches('/'),
                    config.tenant_id
                ),
                client_id: config.client_id.clone(),
                secret: SecretString::from(secret),
                scope: config.scope.clone(),
            },
        ))
    }

    /// A service account's JSON key file: `path`, else the one
    /// `GOOGLE_APPLICATION_CREDENTIALS` names.
    pub fn google(
        client: reqwest::Client,
        path: Option<&std::path::Path>,
    ) -> Result<TokenSource, CredentialsError> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
                .map(std::path::PathBuf::from)
                .ok_or_else(|| {
                    CredentialsError::MissingEnv("GOOGLE_APPLICATION_CREDENTIALS".into())
                })?,
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        let invalid = |reason: String| CredentialsError::Invalid {
            path: shown.clone(),
            reason,
        };
        let key: ServiceAccountKey =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if key.kind != "service_account" {
            return Err(invalid(format!("its type is `{}`", key.kind)));
        }
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| invalid(format!("private_key: {e}")))?;
        Ok(TokenSource::new(
            client,
            Grant::ServiceAccount {
                email: key.client_email,
                key: signing,
                key_id: key.private_key_id,
                token_uri: key.token_uri,
            },
        ))
    }

    fn new(client: reqwest::Client, grant: Grant) -> TokenSource {
        TokenSource {
            client,
            grant,
            current: Mutex::new(None),
        }
    }

    /// A token valid for a while yet, asked for anew when it is not.
    pub async fn bearer(&self) -> Result<SecretString, ProviderError> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let answer = self.ask().await?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        // A short-lived token is renewed at half its life, not never.
        let renew_in = lifetime.checked_sub(RENEW_MARGIN).unwrap_or(lifetime / 2);
        let token = SecretString::from(answer.access_token);
        *current = Some((token.clone(), Instant::now() + renew_in));
        Ok(token)
    }

    async fn ask(&self) -> Result<TokenAnswer, ProviderError> {
        let form: Vec<(&str, String)> = match &self.grant {
            Grant::ClientCredentials {
                client_id,
                secret,
                scope,
                ..
            } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", secret.expose_secret().to_string()),
                ("scope", scope.clone()),
            ],
            Grant::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
            } => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                (
                    "assertion",
                    assertion(email, key, key_id.as_deref(), token_uri)?,
                ),
            ],
        };
        let url = match &self.grant {
            Grant::ClientCredentials { url, .. } => url,
            Grant::ServiceAccount { token_uri, .. } => token_uri,
        };
        let response = self
            .client
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(send_error)?;
        check_token_status(response)
            .await?
            .json()
            .await
            .map_err(|e| ProviderError::Protocol(format!("the token endpoint's answer: {e}")))
    }
}

/// The signed JWT Google's token endpoint exchanges for an access token.
fn assertion(
    email: &str,
    key: &jsonwebtoken::EncodingKey,
    key_id: Option<&str>,
    token_uri: &str,
) -> Result<String, ProviderError> {
    let now = crate::clock::unix_now();
    let claims = serde_json::json!({
        "iss": email, "scope": GOOGLE_SCOPE, "aud": token_uri,
        "iat": now, "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key_id.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| ProviderError::Unauthorized {
        status: 401,
        message: format!("signing the service account assertion: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_wrong_key_file_is_refused_at_start_with_the_reason() {
        let client = reqwest::Client::new();
        let missing = TokenSource::google(
            client.clone(),
            Some(std::path::Path::new("/nonexistent/sa.json")),
        );
        assert!(matches!(missing, Err(CredentialsError::Read { .. })));

        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.json");
        std::fs::write(
            &user,
            r#"{"type": "authorized_user", "client_email": "a", "private_key": "b"}"#,
        )
        .unwrap();
        let error = TokenSource::google(client.clone(), Some(&user))
            .err()
            .unwrap();
        assert!(error.to_string().contains("authorized_user"), "{error}");

        let bad_key = dir.path().join("bad.json");
        std::fs::write(
            &bad_key,
            r#"{"type": "service_account", "client_email": "a", "private_key": "not a key"}"#,
        )
        .unwrap();
        let error = TokenSource::google(client, Some(&bad_key)).err().unwrap();
        assert!(error.to_string().contains("private_key"), "{error}");
    }

    #[test]
    fn an_entra_secret_must_be_in_the_environment() {
        let config = crate::config::EntraConfig {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret_env: "SLUICE_UNIT_TEST_UNSET_SECRET".into(),
            authority: "http://127.0.0.1:9".into(),
            scope: "s".into(),
        };
        let error = TokenSource::entra(reqwest::Client::new(), &config)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("SLUICE_UNIT_TEST_UNSET_SECRET"),
            "{error}"
        );
    }
}
