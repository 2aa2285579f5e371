//! The receiver's HTTP side: accept loop, keep-alive connections, the callback route and
//! `/metrics`. A delivery is answered after its one inbox transaction commits, never after
//! anything slower (the lake is the flush's, in the background).
//!
//! Never logs a request URI (its `Sign`), a body, or a header.

use super::auth::{self, CallbackQuery};
use super::counters::{Counters, Outcome};
use super::delivery::{self, Parsed};
use super::inbox;
use crate::secret::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sqlx::PgPool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The answer the vendor documents for a callback (it ignores it for "after" callbacks).
pub const OK_BODY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// Bodies above this are refused (413): a delivery of hundreds of messages with their
/// readers is far below.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A refused body's rest is read and thrown away up to this much, so the sender reads its
/// 413 instead of a reset connection; a larger one has the connection closed on it.
const DRAIN_BYTES: usize = 32 << 20;

/// The Prometheus text format's content type (what `/metrics` of `schedule` answers too).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long requests in flight may finish after the receiver is told to stop.
const GRACE: Duration = Duration::from_secs(5);

/// What every request needs.
pub struct State {
    pub pool: PgPool,
    /// The callback URL's path (`/callback`).
    pub path: String,
    /// This receiver's app: the URL's `SdkAppid` must be it.
    pub sdkappid: u64,
    /// The webhook authentication token, when one is configured.
    pub token: Option<Secret>,
    pub counters: Arc<Counters>,
    /// Woken when `flush_rows` rows arrived since the last flush.
    pub wake: Arc<Notify>,
    pub flush_rows: u64,
}

type Body = Full<Bytes>;

/// Accepts connections until `stop` is cancelled, then lets requests in flight finish.
pub async fn run(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let closing = CancellationToken::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, state.clone(), closing.clone()));
                }
                Err(e) => {
                    tracing::warn!("listen: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    closing.cancel();
    let drained = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("listen: connections still open after {GRACE:?}: closed");
    }
    conns.shutdown().await;
}

/// One keep-alive connection; on shutdown the request in flight finishes.
async fn connection(stream: TcpStream, state: Arc<State>, closing: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("listen: connection ended: {e}");
    }
}

fn answer(status: StatusCode, content_type: &str, text: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(text.into()))
        .expect("a valid response")
}

/// A refusal: the status, a JSON body in the vendor's shape saying why.
fn refusal(state: &State, outcome: Outcome, status: StatusCode, why: &str) -> Response<Body> {
    state.counters.count(outcome, &why);
    let body =
        serde_json::json!({"ActionStatus": "FAIL", "ErrorInfo": why, "ErrorCode": status.as_u16()});
    answer(status, "application/json", body.to_string())
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == state.path {
        if req.method() != Method::POST {
            return answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "callbacks are POSTed\n",
            );
        }
        return callback(state, req).await;
    }
    if path == "/metrics" && req.method() == Method::GET {
        let backlog = tokio::time::timeout(Duration::from_secs(5), inbox::backlog(&state.pool));
        let backlog = backlog.await.ok().and_then(Result::ok);
        let text = state.counters.render(backlog);
        return answer(StatusCode::OK, TEXT_FORMAT, text);
    }
    answer(StatusCode::NOT_FOUND, "text/plain", "not found\n")
}

/// One delivery: the app and the token (before the body is read), the size, the body, the
/// inbox; OK once stored.
async fn callback(state: &State, req: Request<Incoming>) -> Response<Body> {
    let query = CallbackQuery::parse(req.uri().query());
    let now = chrono::Utc::now().timestamp();
    if let Err(refused) = auth::check(&query, state.sdkappid, state.token.as_ref(), now) {
        let outcome = match refused.kind() {
            "wrong_app" => Outcome::WrongApp,
            _ => Outcome::BadToken,
        };
        let status = StatusCode::from_u16(refused.status()).expect("a status");
        return refusal(state, outcome, status, &refused.to_string());
    }
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(status @ StatusCode::PAYLOAD_TOO_LARGE) => {
            let why = format!("the body is over {MAX_BODY_BYTES} bytes");
            return refusal(state, Outcome::TooLarge, status, &why);
        }
        Err(status) => {
            return refusal(
                state,
                Outcome::Malformed,
                status,
                "the body could not be read",
            )
        }
    };
    let delivery = match delivery::parse(&body, query.command.as_deref()) {
        Ok(Parsed::ReadReceipt(d)) => d,
        Ok(Parsed::Other(command)) => {
            state.counters.count(Outcome::Ignored, &command);
            return answer(StatusCode::OK, "application/json", OK_BODY);
        }
        Err(malformed) => {
            return refusal(
                state,
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                &malformed.to_string(),
            )
        }
    };
    store(state, &delivery).await
}

/// Appends a delivery to the inbox and answers OK once it committed (503 if it did not);
/// wakes the flush at its row threshold.
async fn store(state: &State, delivery: &delivery::Delivery) -> Response<Body> {
    match inbox::store(&state.pool, state.sdkappid, delivery).await {
        Ok(0) if !delivery.receipts.is_empty() => {
            state.counters.count(Outcome::Repeated, &"repeated");
        }
        Ok(new) => {
            state.counters.count(Outcome::Stored, &"stored");
            let since = state.counters.since_flush.fetch_add(new, Ordering::Relaxed) + new;
            if since >= state.flush_rows {
                state.wake.notify_one();
            }
        }
        Err(e) => {
            let why = format!("the inbox could not be written: {e}");
            return refusal(
                state,
                Outcome::Failed,
                StatusCode::SERVICE_UNAVAILABLE,
                &why,
            );
        }
    }
    answer(StatusCode::OK, "application/json", OK_BODY)
}

/// The body, at most [`MAX_BODY_BYTES`]; a larger one (announced or sent) is drained up to
/// [`DRAIN_BYTES`] and answered 413.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, StatusCode> {
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(&mut body).await;
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(StatusCode::BAD_REQUEST);
        };
        if let Ok(data) = frame.into_data() {
            kept.extend_from_slice(&data);
            if kept.len() > MAX_BODY_BYTES {
                drain(&mut body).await;
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
    }
    Ok(Bytes::from(kept))
}

/// Reads and discards the rest of a refused body, up to [`DRAIN_BYTES`] and 5 seconds.
async fn drain(body: &mut Incoming) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
}
