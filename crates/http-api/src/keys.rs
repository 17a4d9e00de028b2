//! The key routes: `GET`, `PUT` and `DELETE /v1/buckets/{bucket}/keys/{key}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use quorumkv_coordinator::{
    BucketName, ContextKey, Key, LiveValue, QuorumSpec, ReadOptions, ReadOutcome, VersionVector,
    WriteOptions,
};
use serde::Serialize;

use crate::error::ApiError;
use crate::observe::{KeyOp, QuorumTimer};
use crate::params::{bucket_and_key, parse_query};
use crate::{AppState, CONTEXT_HEADER};

/// The content type of a value written without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const MAX_CONTENT_TYPE_LEN: usize = 256;
/// The query parameters of PUT and DELETE.
const WRITE_PARAMS: &[&str] = &["w", "pw", "sloppy", "timeout_ms"];

#[derive(Serialize)]
struct Siblings {
    siblings: Vec<SiblingBody>,
}

#[derive(Serialize)]
struct SiblingBody {
    value_base64: String,
    content_type: String,
}

/// `GET /v1/buckets/{bucket}/keys/{key}`.
pub async fn get_key(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let (bucket, key) = bucket_and_key(uri.path())?;
    let scope = TokenScope::of(&state, &bucket, &key);
    let query = parse_query(
        uri.query(),
        &["r", "pr", "sloppy", "read_repair", "local", "timeout_ms"],
    )?;
    let options = ReadOptions {
        r: query.r,
        pr: query.pr,
        sloppy: query.sloppy,
        read_repair: query.read_repair,
        timeout: state.timeout(query.timeout)?,
    };
    let outcome = if query.local == Some(true) {
        if !matches!(query.r, None | Some(QuorumSpec::Count(1) | QuorumSpec::One)) {
            return Err(ApiError::bad_request(
                "invalid_quorum",
                "local=true reads this node's copy only: r must be absent or 1",
            ));
        }
        state.coordinator.get_local(&bucket, &key).await?
    } else {
        let _timer = QuorumTimer::read(&state, &bucket, query.r);
        state.coordinator.get(&bucket, &key, options).await?
    };
    match outcome {
        ReadOutcome::NotFound { context } => {
            let error = ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no live value for this key",
            );
            Err(match context {
                Some(context) => error.with_context(scope.encode(&context)),
                None => error,
            })
        }
        ReadOutcome::Found {
            mut values,
            context,
        } if values.len() == 1 => {
            let value = values.remove(0);
            let mut response = value.bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&value.content_type)
                    .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE)),
            );
            scope.insert(headers, &context);
            confine(headers);
            Ok(response)
        }
        ReadOutcome::Found { values, context } => {
            let body = Siblings {
                siblings: values
                    .into_iter()
                    .map(|v| SiblingBody {
                        value_base64: STANDARD.encode(&v.bytes),
                        content_type: v.content_type,
                    })
                    .collect(),
            };
            let mut response = (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response();
            scope.insert(response.headers_mut(), &context);
            confine(response.headers_mut());
            Ok(response)
        }
    }
}

/// A value is whatever a client stored, with the content type it chose: a browser opening
/// it must neither guess another type (`nosniff`) nor run it in the node's origin, where a
/// stored `text/html` page could use the node's routes (a sandbox: no scripts, an opaque
/// origin).
fn confine(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
}

/// `PUT /v1/buckets/{bucket}/keys/{key}`.
pub async fn put_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    ValueBody(body): ValueBody,
) -> Result<Response, ApiError> {
    let (bucket, key) = bucket_and_key(uri.path())?;
    let query = parse_query(uri.query(), WRITE_PARAMS)?;
    let scope = TokenScope::of(&state, &bucket, &key);
    let context = scope.context_from(&headers)?.unwrap_or_default();
    let content_type = content_type_from(&headers)?;
    let bytes = body.map_err(|rejection| body_error(&rejection, state.max_value_bytes))?;
    if bytes.len() > state.max_value_bytes {
        return Err(too_large(state.max_value_bytes));
    }
    let options = WriteOptions {
        w: query.w,
        pw: query.pw,
        sloppy: query.sloppy,
        timeout: state.timeout(query.timeout)?,
    };
    let value = LiveValue {
        content_type,
        bytes,
    };
    let _timer = QuorumTimer::write(&state, KeyOp::Put, &bucket, options.w);
    let context = state
        .coordinator
        .put(&bucket, &key, context, value, options)
        .await?;
    Ok(no_content(&scope, &context))
}

/// `DELETE /v1/buckets/{bucket}/keys/{key}`.
pub async fn delete_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (bucket, key) = bucket_and_key(uri.path())?;
    let query = parse_query(uri.query(), WRITE_PARAMS)?;
    let scope = TokenScope::of(&state, &bucket, &key);
    let context = scope.context_from(&headers)?;
    let options = WriteOptions {
        w: query.w,
        pw: query.pw,
        sloppy: query.sloppy,
        timeout: state.timeout(query.timeout)?,
    };
    let _timer = QuorumTimer::write(&state, KeyOp::Delete, &bucket, options.w);
    let context = state
        .coordinator
        .delete(&bucket, &key, context, options)
        .await?;
    Ok(no_content(&scope, &context))
}

/// Any method on `/v1/buckets/{bucket}/keys/` (an empty key).
pub async fn empty_key() -> ApiError {
    ApiError::bad_request("invalid_key", "keys may not be empty")
}

fn no_content(scope: &TokenScope<'_>, context: &VersionVector) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    scope.insert(response.headers_mut(), context);
    response
}

/// Where a causal context token is good: the key it is issued for, under the cluster's
/// signing key (see `quorumkv_coordinator::context`).
struct TokenScope<'a> {
    signer: Arc<ContextKey>,
    bucket: &'a BucketName,
    key: &'a Key,
}

impl<'a> TokenScope<'a> {
    fn of(state: &'a AppState, bucket: &'a BucketName, key: &'a Key) -> Self {
        Self {
            signer: state.context_key.get(),
            bucket,
            key,
        }
    }

    fn encode(&self, context: &VersionVector) -> String {
        self.signer
            .encode(self.bucket.as_bytes(), self.key.as_bytes(), context)
    }

    fn insert(&self, headers: &mut HeaderMap, context: &VersionVector) {
        if let Ok(value) = HeaderValue::from_str(&self.encode(context)) {
            headers.insert(CONTEXT_HEADER, value);
        }
    }

    /// The request's context, if it sent one; a token not issued for this key is refused.
    fn context_from(&self, headers: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
        let mut values = headers.get_all(CONTEXT_HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_context",
                "X-Causal-Context is given more than once",
            ));
        }
        let token = value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_context", "X-Causal-Context is not ASCII")
        })?;
        let clock = self
            .signer
            .decode(self.bucket.as_bytes(), self.key.as_bytes(), token)?;
        Ok(Some(clock))
    }
}

fn content_type_from(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONTENT_TYPE_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_content_type",
                format!(
                    "Content-Type must be 1 to {MAX_CONTENT_TYPE_LEN} visible ASCII characters"
                ),
            )
        })?;
    Ok(text.to_string())
}

/// The body of a PUT. A value whose declared `Content-Length` is over the limit is
/// refused with 413 `value_too_large` without being stored. A body without a length is
/// counted as it streams in ([`axum::extract::DefaultBodyLimit`]), and how reading it went
/// is left to the handler, which checks the rest of the request first.
///
/// Many clients (Python's `http.client`, most simple ones) send the whole body before they
/// read an answer: had the node answered and closed at once, their writes would meet a
/// reset connection and they would never see the 413. So an over-limit body of up to
/// [`DRAIN_LIMIT`] bytes is read and discarded first, as nginx does, giving up after
/// two seconds without a byte; a client that sent `Expect: 100-continue` waits for the
/// answer instead, and gets it at once, as does a body past the drain limit.
pub struct ValueBody(Result<Bytes, BytesRejection>);

/// The largest over-limit body read (and discarded) before the 413 is answered.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// How long the drain waits for more of the body before it answers anyway.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

impl FromRequest<AppState> for ValueBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.max_value_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = declared.filter(|length| *length > limit as u64) {
            let waits_for_an_answer = request
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !waits_for_an_answer && length <= DRAIN_LIMIT {
                drain(request.into_body(), length).await;
            }
            return Err(too_large(limit));
        }
        Ok(Self(Bytes::from_request(request, state).await))
    }
}

/// Reads and drops up to `length` bytes of `body`, until it ends, fails, or sends nothing
/// for [`DRAIN_IDLE`].
async fn drain(body: axum::body::Body, length: u64) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut read = 0u64;
    while read < length {
        match tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            _ => return,
        }
    }
}

fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!("values are at most {limit} bytes"),
    )
}
