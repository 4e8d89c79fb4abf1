//! `aws_sigv4`: AWS Signature Version 4 on every request, with the `aws-sigv4` crate.
//!
//! The request is signed as it leaves: whatever signature the client attached (throwaway keys,
//! an SDK's own signing) is removed first, the signed `host` is the authority actually
//! contacted, and the payload hash is the SHA-256 of the body (read whole, up to
//! `proxy.max_body`) unless `UNSIGNED-PAYLOAD` applies.

use std::sync::Arc;
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SigningInstructions, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;
use pingora::http::RequestHeader;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::SecretValue;
use crate::config::units::parse_duration;
use crate::secret::Secret;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsSigv4 {
    /// Omit to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    pub access_key_id: Option<SecretValue>,
    pub secret_access_key: Option<SecretValue>,
    pub session_token: Option<SecretValue>,
    /// Signing name, e.g. `s3`, `execute-api`, `sqs`.
    pub service: String,
    pub region: String,
    /// Presigned query string instead of the Authorization header.
    #[serde(default)]
    pub sign_query: bool,
    /// Validity of a presigned request. Default 5m, at most 7d.
    pub expires: Option<String>,
    /// Allow `UNSIGNED-PAYLOAD` (streamed, not hashed) for bodies over max_body or chunked.
    #[serde(default)]
    pub unsigned_payload: bool,
}

/// Headers a client may have set from its own signing attempt; always replaced.
const CLIENT_SIGNING_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];
/// SHA-256 of nothing: the payload hash of every bodiless request.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Presign parameters a client may have put in the query; always removed.
const PRESIGN_PARAMS: [&str; 7] = [
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-amz-signature",
    "x-amz-security-token",
];
/// Not signed: changed by intermediaries or meaningless to AWS (botocore's list plus framing).
const UNSIGNED_HEADERS: [&str; 5] = [
    "user-agent",
    "expect",
    "x-amzn-trace-id",
    "transfer-encoding",
    "connection",
];

/// What the signature covers of the body.
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    Unsigned,
    /// aws-chunked: the body's chunks are signed as they stream (see `chunked`).
    Streaming,
}

/// The payload hash of an aws-chunked body whose chunks are signed.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";

pub struct AwsSigV4 {
    pub service: String,
    pub region: String,
    pub sign_query: bool,
    pub expires: Duration,
    pub unsigned_payload: bool,
    /// Send the payload hash as `x-amz-content-sha256` (S3 requires it).
    pub payload_hash_header: bool,
    /// The keys (access key id, secret, session token) as aws-sigv4 takes them, made once
    /// rather than per request. Not `Debug`-printed: see the impl below.
    identity: Identity,
    /// The signing key of the current day, for the fast path.
    keys: fast::KeyCache,
}

impl std::fmt::Debug for AwsSigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigV4")
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SigV4 signing failed: {0}")]
pub struct SignError(pub String);

impl AwsSigV4 {
    pub fn build(raw: &RawAwsSigv4, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        check_names(raw)?;
        let expires = match &raw.expires {
            Some(e) => parse_duration(e).map_err(|m| invalid("expires", m))?,
            None => Duration::from_secs(300),
        };
        if expires < Duration::from_secs(1) || expires > Duration::from_secs(7 * 86400) {
            return Err(invalid("expires", "between 1s and 7d (AWS's limit)".into()));
        }
        let (access_key_id, secret_access_key, session_token) = keys(raw, ctx)?;
        let identity = aws_credential_types::Credentials::new(
            access_key_id.expose(),
            secret_access_key.expose(),
            session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "credproxy",
        )
        .into();
        Ok(AwsSigV4 {
            service: raw.service.clone(),
            region: raw.region.clone(),
            sign_query: raw.sign_query,
            expires,
            unsigned_payload: raw.unsigned_payload,
            payload_hash_header: raw.service == "s3" || raw.service == "s3-object-lambda",
            identity,
            keys: fast::KeyCache::default(),
        })
    }

    /// What `explain` shows: where the signature goes, secrets as `***`.
    pub fn describe(&self) -> String {
        let scope = format!("(SigV4 {}/{})", self.service, self.region);
        if self.sign_query {
            format!("presigned query (X-Amz-Signature=***) {scope}")
        } else {
            format!("authorization: AWS4-HMAC-SHA256 *** {scope}")
        }
    }

    /// The session token sent with each request, if any (the only secret a signature carries).
    pub fn session_token(&self) -> Option<String> {
        let creds = self.identity.data::<aws_credential_types::Credentials>()?;
        creds.session_token().map(str::to_string)
    }

    pub fn is_s3(&self) -> bool {
        self.service == "s3" || self.service == "s3-object-lambda"
    }

    fn settings(&self) -> SigningSettings {
        let mut s = SigningSettings::default();
        if self.is_s3() {
            // S3 encodes the path once and never normalises it; it also wants the payload hash
            // as a header.
            s.percent_encoding_mode = PercentEncodingMode::Single;
            s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        if self.payload_hash_header {
            s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        if self.sign_query {
            s.signature_location = SignatureLocation::QueryParams;
            s.expires_in = Some(self.expires);
        }
        s.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| Cow::Borrowed(*h)).collect());
        s
    }

    /// Signs `req` (already rewritten to origin-form with the outgoing `Host`) in place.
    pub fn sign(
        &self,
        req: &mut RequestHeader,
        tls: bool,
        payload: Payload<'_>,
        time: SystemTime,
    ) -> Result<(), SignError> {
        self.sign_returning(req, tls, payload, time, true).map(|_| ())
    }

    /// The fast path (`fast`): the headers it adds, or None for a request it does not take.
    fn sign_fast(
        &self,
        req: &RequestHeader,
        path_and_query: &str,
        payload: &Payload<'_>,
        time: SystemTime,
    ) -> Option<Vec<(http::HeaderName, String)>> {
        let creds = self.identity.data::<aws_credential_types::Credentials>()?;
        let hash;
        let payload_hash = match payload {
            Payload::Bytes([]) => EMPTY_PAYLOAD_SHA256,
            Payload::Bytes(b) => {
                hash = chunked::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
                hash.as_str()
            }
            Payload::Unsigned => "UNSIGNED-PAYLOAD",
            Payload::Streaming => return None,
        };
        let keys = fast::Keys {
            access_key_id: creds.access_key_id(),
            secret: creds.secret_access_key(),
            session_token: creds.session_token(),
            region: &self.region,
            service: &self.service,
            payload_hash_header: self.payload_hash_header,
        };
        fast::sign(&self.keys, &keys, req, path_and_query, payload_hash, &UNSIGNED_HEADERS, time)
    }

    /// Signs the headers of an aws-chunked upload, and returns the signer of its chunks,
    /// seeded with the headers' signature.
    pub fn sign_streaming(
        &self,
        req: &mut RequestHeader,
        tls: bool,
        time: SystemTime,
    ) -> Result<chunked::ChunkSigner, SignError> {
        let seed = self.sign_returning(req, tls, Payload::Streaming, time, false)?;
        let timestamp = req
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SignError("no x-amz-date after signing".into()))?
            .to_string();
        let creds = self
            .identity
            .data::<aws_credential_types::Credentials>()
            .ok_or_else(|| SignError("no AWS credentials".into()))?;
        let key = aws_sigv4::sign::v4::generate_signing_key(
            creds.secret_access_key(),
            time,
            &self.region,
            &self.service,
        );
        Ok(chunked::ChunkSigner::new(
            key.as_ref(),
            &timestamp,
            &self.region,
            &self.service,
            &seed,
        ))
    }

    /// Signs `req` in place; returns the signature. Without `allow_fast`, always through
    /// aws-sigv4 (the fast path's oracle in tests).
    pub(crate) fn sign_returning(
        &self,
        req: &mut RequestHeader,
        tls: bool,
        payload: Payload<'_>,
        time: SystemTime,
        allow_fast: bool,
    ) -> Result<String, SignError> {
        // One pass over the names first: most requests carry none, and each removal by name
        // parses it again.
        if req
            .headers
            .keys()
            .any(|k| CLIENT_SIGNING_HEADERS.contains(&k.as_str()))
        {
            for h in CLIENT_SIGNING_HEADERS {
                req.remove_header(h);
            }
        }
        let path_and_query =
            strip_presign_params(req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| SignError("no Host header".into()))?;
        if allow_fast && !self.sign_query {
            if let Some(added) = self.sign_fast(req, &path_and_query, &payload, time) {
                return apply_fast(req, added, &path_and_query);
            }
        }
        let url = format!("{}://{host}{path_and_query}", if tls { "https" } else { "http" });
        let body = match payload {
            Payload::Bytes(b) => SignableBody::Bytes(b),
            Payload::Unsigned => SignableBody::UnsignedPayload,
            Payload::Streaming => SignableBody::Precomputed(STREAMING_PAYLOAD.into()),
        };
        // Borrowed from the request, not copied: the borrow ends before the signature is put on.
        let headers = req
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(req.method.as_str(), url.as_str(), headers, body)
            .map_err(|e| SignError(e.to_string()))?;
        let (instructions, signature) = self.instructions(signable, time)?;
        apply(req, instructions, path_and_query)?;
        Ok(signature)
    }

    /// What signing adds to a request: headers, or query parameters.
    fn instructions(
        &self,
        signable: SignableRequest<'_>,
        time: SystemTime,
    ) -> Result<(SigningInstructions, String), SignError> {
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(self.settings())
            .build()
            .map_err(|e| SignError(e.to_string()))?
            .into();
        let (instructions, signature) = sign(signable, &params)
            .map_err(|e| SignError(e.to_string()))?
            .into_parts();
        Ok((instructions, signature))
    }
}

/// Puts the fast path's headers on `req` (the credential ones marked sensitive); returns the
/// signature.
fn apply_fast(
    req: &mut RequestHeader,
    added: Vec<(http::HeaderName, String)>,
    path_and_query: &str,
) -> Result<String, SignError> {
    let mut signature = String::new();
    for (name, value) in added {
        if name == http::header::AUTHORIZATION {
            signature = value.rsplit("Signature=").next().unwrap_or("").to_string();
        }
        let mut v = http::HeaderValue::try_from(value)
            .map_err(|_| SignError("bad header value".into()))?;
        v.set_sensitive(name == http::header::AUTHORIZATION || name == fast::X_AMZ_SECURITY_TOKEN);
        req.insert_header(name, v)
            .map_err(|e| SignError(e.to_string()))?;
    }
    // Already in origin form without presign parameters (the common case): nothing to parse.
    if req.uri != *path_and_query {
        let uri = path_and_query
            .parse::<http::Uri>()
            .map_err(|e| SignError(e.to_string()))?;
        req.set_uri(uri);
    }
    Ok(signature)
}

/// Puts the signature's headers (marked sensitive) or query parameters on `req`.
fn apply(
    req: &mut RequestHeader,
    instructions: SigningInstructions,
    mut path_and_query: String,
) -> Result<(), SignError> {
    let (headers, query) = instructions.into_parts();
    for h in headers {
        let mut v = http::HeaderValue::from_str(h.value())
            .map_err(|_| SignError("bad header value".into()))?;
        v.set_sensitive(h.sensitive() || h.name() == "authorization");
        req.insert_header(h.name(), v)
            .map_err(|e| SignError(e.to_string()))?;
    }
    for (k, v) in query {
        path_and_query.push(if path_and_query.contains('?') { '&' } else { '?' });
        path_and_query.push_str(k);
        path_and_query.push('=');
        path_and_query.push_str(&crate::scrub::percent_encode(&v));
    }
    let uri = path_and_query
        .parse::<http::Uri>()
        .map_err(|e| SignError(e.to_string()))?;
    req.set_uri(uri);
    Ok(())
}

fn invalid(key: &str, message: String) -> BuildError {
    BuildError::Invalid {
        key: key.into(),
        message,
    }
}

/// `service` and `region` are names, and UNSIGNED-PAYLOAD is for S3 only.
fn check_names(raw: &RawAwsSigv4) -> Result<(), BuildError> {
    if raw.unsigned_payload && raw.service != "s3" {
        return Err(invalid(
            "unsigned_payload",
            "only S3 accepts UNSIGNED-PAYLOAD".into(),
        ));
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name_ok(&raw.service) {
        let m = format!("`{}` is not a signing name (e.g. s3, execute-api)", raw.service);
        return Err(invalid("service", m));
    }
    if !name_ok(&raw.region) {
        let m = format!("`{}` is not a region (e.g. us-east-1)", raw.region);
        return Err(invalid("region", m));
    }
    Ok(())
}

/// The access key, secret key and session token: from the config, or without keys there,
/// from the standard AWS variables.
fn keys(
    raw: &RawAwsSigv4,
    ctx: &mut BuildCtx<'_>,
) -> Result<(Secret, Secret, Option<Secret>), BuildError> {
    let env_ref = |name: &str| format!("${{{name}}}");
    let ak = match &raw.access_key_id {
        Some(v) => ctx.secret("access_key_id", v)?,
        None => ctx.secret("access_key_id", &env_ref("AWS_ACCESS_KEY_ID"))?,
    };
    let sk = match (&raw.secret_access_key, &raw.access_key_id) {
        (Some(v), _) => ctx.secret("secret_access_key", v)?,
        (None, None) => ctx.secret("secret_access_key", &env_ref("AWS_SECRET_ACCESS_KEY"))?,
        (None, Some(_)) => {
            return Err(invalid(
                "secret_access_key",
                "required with access_key_id".into(),
            ))
        }
    };
    let token = match (&raw.session_token, &raw.access_key_id) {
        (Some(v), _) => Some(ctx.secret("session_token", v)?),
        (None, None) if (ctx.env)("AWS_SESSION_TOKEN").is_some_and(|t| !t.is_empty()) => {
            Some(ctx.secret("session_token", &env_ref("AWS_SESSION_TOKEN"))?)
        }
        _ => None,
    };
    Ok((ak, sk, token))
}

/// Removes any presign parameters the client sent (its own, throwaway signature).
fn strip_presign_params(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("").to_ascii_lowercase();
            !PRESIGN_PARAMS.contains(&key.as_str())
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// `type: aws_sigv4`: AWS Signature Version 4 on each request.
pub struct SigV4Kind;

impl Kind for SigV4Kind {
    const NAME: &'static str = "aws_sigv4";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::required("access_key_id"), super::TenantField::required("secret_access_key"), super::TenantField::optional("session_token")];
    type Raw = RawAwsSigv4;
    fn build(raw: &RawAwsSigv4, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Signed(Arc::new(AwsSigV4::build(raw, ctx)?)))
    }
}

pub mod chunked;
mod fast;

#[cfg(test)]
mod tests;
