//! How a Bedrock call is signed: a Bedrock API key as the bearer (the
//! deployment's `keys`, through the key pool), else SigV4 with AWS
//! credentials found where AWS's SDKs look (the deployment's `aws` table,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, then a
//! role assumed with a web-identity token file, as on EKS with IRSA).
//!
//! The signature is AWS's own `aws-sigv4`; the web-identity exchange is one
//! unsigned STS call written here rather than `aws-config`, which brings the
//! SDK's own HTTP stack and runtime.

use super::super::ProviderError;
use super::super::wire::{check_token_status, send_error};
use crate::config::AwsConfig;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// Bedrock's SigV4 service name.
const SERVICE: &str = "bedrock";
/// Renew assumed-role credentials this long before they expire.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AwsCredentialsError {
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error(
        "no AWS credentials: set the deployment's `keys` (Bedrock API keys), its `aws` table, \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE"
    )]
    None,
}

/// Where SigV4 credentials come from.
pub enum CredentialSource {
    /// An access key (and session token), fixed for the process's life.
    Static(Credentials),
    /// A role assumed with a web-identity token, renewed before it expires;
    /// the token file is read anew for each renewal (Kubernetes rotates it).
    WebIdentity(WebIdentity),
}

pub struct WebIdentity {
    client: reqwest::Client,
    sts_url: String,
    role_arn: String,
    token_file: PathBuf,
    session_name: String,
    current: Mutex<Option<(Credentials, SystemTime)>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl CredentialSource {
    /// The deployment's `aws` table, else the environment, as AWS's SDKs read it.
    pub fn resolve(
        client: reqwest::Client,
        config: Option<&AwsConfig>,
        region: &str,
    ) -> Result<CredentialSource, AwsCredentialsError> {
        let config = config.cloned().unwrap_or_default();
        let secret_of =
            |var: &str| env(var).ok_or_else(|| AwsCredentialsError::MissingEnv(var.into()));
        if let Some(access_key_id) = &config.access_key_id {
            let secret_var = config
                .secret_access_key_env
                .as_deref()
                .unwrap_or("AWS_SECRET_ACCESS_KEY");
            let session = match &config.session_token_env {
                Some(var) => Some(secret_of(var)?),
                None => None,
            };
            return Ok(CredentialSource::Static(Credentials::new(
                access_key_id,
                secret_of(secret_var)?,
                session,
                None,
                "sluice-config",
            )));
        }
        let role_arn = config.role_arn.clone().or_else(|| env("AWS_ROLE_ARN"));
        let token_file = config
            .web_identity_token_file
            .clone()
            .or_else(|| env("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from));
        if let (Some(role_arn), Some(token_file)) = (role_arn, token_file) {
            let sts_url = config
                .sts_endpoint
                .clone()
                .or_else(|| env("AWS_ENDPOINT_URL_STS"))
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
            return Ok(CredentialSource::WebIdentity(WebIdentity {
                client,
                sts_url,
                role_arn,
                token_file,
                session_name: config
                    .role_session_name
                    .clone()
                    .or_else(|| env("AWS_ROLE_SESSION_NAME"))
                    .unwrap_or_else(|| "sluice".into()),
                current: Mutex::new(None),
            }));
        }
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(CredentialSource::Static(Credentials::new(
                id,
                secret,
                env("AWS_SESSION_TOKEN"),
                None,
                "environment",
            )));
        }
        Err(AwsCredentialsError::None)
    }

    /// Which credentials these are, to share one source between deployments.
    pub fn identity(&self) -> String {
        match self {
            CredentialSource::Static(c) => c.access_key_id().to_string(),
            CredentialSource::WebIdentity(w) => {
                format!("{}|{}", w.role_arn, w.token_file.display())
            }
        }
    }

    async fn current(&self) -> Result<Credentials, ProviderError> {
        match self {
            CredentialSource::Static(credentials) => Ok(credentials.clone()),
            CredentialSource::WebIdentity(web) => web.credentials().await,
        }
    }

    /// The headers that sign `body` to `url` (`x-amz-date`, `authorization`,
    /// and `x-amz-security-token` for temporary credentials).
    pub async fn sign(
        &self,
        region: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let credentials = self.current().await?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| unsigned(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| unsigned(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| unsigned(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect())
    }
}

fn unsigned(reason: String) -> ProviderError {
    ProviderError::Protocol(format!("signing the Bedrock request: {reason}"))
}

impl WebIdentity {
    async fn credentials(&self) -> Result<Credentials, ProviderError> {
        let mut current = self.current.lock().await;
        if let Some((credentials, renew_at)) = current.as_ref()
            && SystemTime::now() < *renew_at
        {
            return Ok(credentials.clone());
        }
        let (credentials, expires) = self.assume().await?;
        let lifetime = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let renew_in = lifetime.checked_sub(RENEW_MARGIN).unwrap_or(lifetime / 2);
        *current = Some((credentials.clone(), SystemTime::now() + renew_in));
        Ok(credentials)
    }

    /// STS `AssumeRoleWithWebIdentity`: unsigned, the token is the proof.
    async fn assume(&self) -> Result<(Credentials, SystemTime), ProviderError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| ProviderError::Unauthorized {
                status: 401,
                message: format!(
                    "reading the web identity token {}: {e}",
                    self.token_file.display()
                ),
            })?;
        let token = SecretString::from(token.trim().to_string());
        let response = self
            .client
            .post(&self.sts_url)
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", self.role_arn.as_str()),
                ("RoleSessionName", self.session_name.as_str()),
                ("WebIdentityToken", token.expose_secret()),
            ])
            .send()
            .await
            .map_err(send_error)?;
        let text = check_token_status(response)
            .await?
            .text()
            .await
            .map_err(send_error)?;
        parse_assumed(&text)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleWithWebIdentityResponse {
    assume_role_with_web_identity_result: AssumeResult,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeResult {
    credentials: StsCredentials,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// STS's XML answer as credentials and their expiry.
fn parse_assumed(xml: &str) -> Result<(Credentials, SystemTime), ProviderError> {
    let unreadable = |e: String| ProviderError::Protocol(format!("STS's answer: {e}"));
    let answer: AssumeRoleWithWebIdentityResponse =
        quick_xml::de::from_str(xml).map_err(|e| unreadable(e.to_string()))?;
    let sts = answer.assume_role_with_web_identity_result.credentials;
    let expires = time::OffsetDateTime::parse(
        &sts.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| unreadable(format!("Expiration {}: {e}", sts.expiration)))?;
    let expires = SystemTime::from(expires);
    Ok((
        Credentials::new(
            sts.access_key_id,
            sts.secret_access_key,
            Some(sts.session_token),
            Some(expires),
            "web-identity",
        ),
        expires,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sts_credentials_and_their_expiry() {
        let xml = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>arn:aws:sts::123:assumed-role/r/s</Arn><AssumedRoleId>A:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>TOKEN</SessionToken>
      <SecretAccessKey>SECRET</SecretAccessKey>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>oidc.eks.amazonaws.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;
        let (credentials, expires) = parse_assumed(xml).unwrap();
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.secret_access_key(), "SECRET");
        assert_eq!(credentials.session_token(), Some("TOKEN"));
        assert_eq!(
            expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
        );
        assert!(parse_assumed("<Error/>").is_err());
    }

    #[test]
    fn a_configured_key_needs_its_secret_in_the_environment() {
        let config = AwsConfig {
            access_key_id: Some("AKID".into()),
            secret_access_key_env: Some("SLUICE_UNIT_TEST_UNSET_AWS_SECRET".into()),
            ..AwsConfig::default()
        };
        let error = CredentialSource::resolve(reqwest::Client::new(), Some(&config), "us-east-1")
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("SLUICE_UNIT_TEST_UNSET_AWS_SECRET"),
            "{error}"
        );
        let role = AwsConfig {
            role_arn: Some("arn:aws:iam::1:role/r".into()),
            web_identity_token_file: Some("/var/run/token".into()),
            ..AwsConfig::default()
        };
        let source =
            CredentialSource::resolve(reqwest::Client::new(), Some(&role), "eu-west-1").unwrap();
        match source {
            CredentialSource::WebIdentity(web) => {
                assert_eq!(web.sts_url, "https://sts.eu-west-1.amazonaws.com");
                assert_eq!(web.session_name, "sluice");
            }
            CredentialSource::Static(_) => panic!("a role was configured"),
        }
    }

    #[tokio::test]
    async fn signs_with_a_session_token_when_it_has_one() {
        let source = CredentialSource::Static(Credentials::new(
            "AKID",
            "SECRET",
            Some("SESSION".into()),
            None,
            "test",
        ));
        let headers = source
            .sign(
                "us-east-1",
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
                &[("content-type", "application/json")],
                b"{}",
            )
            .await
            .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-amz-date"), "{names:?}");
        assert!(names.contains(&"x-amz-security-token"), "{names:?}");
        let authorization = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID/")
                && authorization.contains("/us-east-1/bedrock/aws4_request"),
            "{authorization}"
        );
    }
}
