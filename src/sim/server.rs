//! The HTTP side of the simulator: accept loop, keep-alive connections, routing, the common
//! envelope, latency and injected faults.
//!
//! Never logs a request URI: the UserSig travels in its query string.

use crate::sim::api::{self, ApiError, Fields};
use crate::sim::query::{self, Expected};
use crate::sim::traffic::{Endpoint, FaultStats};
use crate::sim::{Faults, Shared};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long open connections may finish their requests after a shutdown.
const GRACE: Duration = Duration::from_secs(1);

/// Request bodies above this are refused (60003): a batch of thousands of seqs is far below.
const MAX_BODY_BYTES: usize = 1 << 20;

const BAD_GATEWAY_HTML: &str =
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>stgw</center>\r\n</body>\r\n</html>\r\n";

type Body = Full<Bytes>;

/// The service's error: hyper closes the connection without an answer, which is exactly the
/// "dropped connection" fault.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose (fault injection)")]
pub(crate) struct Dropped;

/// Accepts connections until `stop` fires (or its sender is dropped), then drains.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let (close, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, shared.clone(), closing.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: give connections time to close.
                    tracing::warn!("simulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = close.send(true);
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    tracing::debug!("simulator stopped");
}

/// Advances the step every `every` until stopped.
pub(crate) async fn tick(every: Duration, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = interval.tick() => { shared.advance(1); }
        }
    }
}

/// Serves one keep-alive connection; on shutdown lets the request in flight finish.
async fn connection(stream: TcpStream, shared: Arc<Shared>, mut closing: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("simulator connection ended: {e}");
    }
}

/// Routes one request.
async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/sim/") {
        return Ok(control(&shared, req, rest).await);
    }
    let Some(rest) = path.strip_prefix("/v4/") else {
        return Ok(plain_json(
            StatusCode::NOT_FOUND,
            json!({"error": "not found"}),
        ));
    };
    let Some(command) = rest.strip_prefix("group_open_http_svc/") else {
        return Ok(envelope(
            &shared,
            Err(ApiError::new(60009, "bad resource URL")),
        ));
    };
    let Some(endpoint) = Endpoint::from_command(command) else {
        return Ok(envelope(
            &shared,
            Err(ApiError::new(10003, "invalid command word")),
        ));
    };
    api_call(shared, req, endpoint).await
}

/// One call of a documented API: the way there, limit, faults, checks, answer, the way back.
///
/// (Over 60 lines: the stages of one simulated call in the order a real server takes them, each able to end it.)
async fn api_call(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Result<Response<Body>, Dropped> {
    let config = &shared.config;
    let (half, half_jitter) = (config.latency / 2, config.latency_jitter / 2);
    // The way there: the call counts when it arrives, not when it was sent.
    tokio::time::sleep(latency(half, half_jitter, rand::random())).await;
    let admitted = shared
        .traffic
        .lock()
        .expect("traffic lock")
        .arrive(endpoint, Instant::now());
    let mut delay = latency(half, half_jitter, rand::random());
    let fault = if admitted {
        roll(&config.faults, rand::random())
    } else {
        None
    };
    if let Some(fault) = fault {
        shared
            .traffic
            .lock()
            .expect("traffic lock")
            .fault(endpoint, fault.counter());
        tracing::debug!(endpoint = endpoint.command(), ?fault, "injecting a fault");
    }
    match fault {
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Http502) => {
            tokio::time::sleep(delay).await;
            return Ok(bad_gateway());
        }
        Some(Fault::Slow) => delay += config.faults.slow_delay,
        Some(Fault::Internal) | None => {}
    }
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await;
    let mut subject = String::new();
    let outcome = if !admitted {
        Err(ApiError::new(60007, "REST API call frequency exceeded"))
    } else if fault == Some(Fault::Internal) {
        Err(ApiError::new(10002, "internal server error, please retry"))
    } else if method != Method::POST {
        Err(ApiError::new(60002, "only POST is supported"))
    } else {
        let expected = Expected {
            sdkappid: config.sdkappid,
            key: &config.key,
            admin: &config.identifier,
        };
        match body {
            Err(_) => Err(ApiError::new(60003, "the request body could not be read")),
            Ok(body) => query::check(query.as_deref(), &expected, unix_now())
                .and_then(|()| answer(&shared, endpoint, &body.to_bytes(), &mut subject)),
        }
    };
    let code = outcome.as_ref().err().map_or(0, |e| e.code);
    shared
        .traffic
        .lock()
        .expect("traffic lock")
        .answered(endpoint, code);
    tracing::debug!(endpoint = endpoint.command(), group = %subject, code, "answered");
    tokio::time::sleep(delay).await;
    Ok(envelope(&shared, outcome))
}

fn answer(
    shared: &Shared,
    endpoint: Endpoint,
    body: &[u8],
    subject: &mut String,
) -> Result<Fields, ApiError> {
    match endpoint {
        Endpoint::GroupMsgReceipt => api::group_msg_receipt(shared, body, subject),
        Endpoint::GroupInfo => api::group_info(shared, body, subject),
        Endpoint::GroupMsgReceiptDetail => crate::sim::details::group_msg_receipt_detail(
            shared,
            body,
            subject,
            shared.config.read_page_max,
        ),
    }
}

/// The `/sim/*` control endpoints.
async fn control(shared: &Shared, req: Request<Incoming>, rest: &str) -> Response<Body> {
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return plain_json(StatusCode::BAD_REQUEST, json!({"error": "unreadable body"})),
    };
    let number = |field: &str, default: u64| -> Option<u64> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Some(default);
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        match v.get(field) {
            None => Some(default),
            Some(n) => n.as_u64(),
        }
    };
    let bad = |what: &str| plain_json(StatusCode::BAD_REQUEST, json!({ "error": what }));
    match (method, rest) {
        (Method::GET, "stats") => plain_json(StatusCode::OK, json!(shared.stats())),
        (Method::GET, "groups") => plain_json(StatusCode::OK, json!(shared.groups())),
        (Method::POST, "advance") => match number("steps", 1) {
            Some(n) => plain_json(StatusCode::OK, json!({ "step": shared.advance(n) })),
            None => bad("expected {\"steps\": N}"),
        },
        (Method::POST, path) if path.starts_with("groups/") && path.ends_with("/messages") => {
            let raw = &path["groups/".len()..path.len() - "/messages".len()];
            let id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            let Some(n) = number("count", 1) else {
                return bad("expected {\"count\": N}");
            };
            match shared.add_messages(&id, n) {
                Some(next) => plain_json(
                    StatusCode::OK,
                    json!({ "group_id": id, "next_msg_seq": next }),
                ),
                None => plain_json(
                    StatusCode::NOT_FOUND,
                    json!({ "error": "no such group", "group_id": id }),
                ),
            }
        }
        _ => plain_json(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// The common envelope around an outcome, HTTP 200 as the API always answers.
fn envelope(shared: &Shared, outcome: Result<Fields, ApiError>) -> Response<Body> {
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("Id-{:016x}-O-Seq-{n}", rand::random::<u64>());
    let (mut fields, code, info) = match outcome {
        Ok(fields) => (fields, 0, String::new()),
        Err(e) => (Fields::new(), e.code, e.info),
    };
    fields.insert(
        "ActionStatus".into(),
        if code == 0 { "OK" } else { "FAIL" }.into(),
    );
    fields.insert("ErrorCode".into(), code.into());
    fields.insert("ErrorInfo".into(), info.into());
    fields.insert("RequestId".into(), request_id.into());
    plain_json(StatusCode::OK, Value::Object(fields))
}

fn plain_json(status: StatusCode, value: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a static status and header make a valid response")
}

fn bad_gateway() -> Response<Body> {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .header("content-type", "text/html")
        .body(Full::new(Bytes::from_static(BAD_GATEWAY_HTML.as_bytes())))
        .expect("a static status and header make a valid response")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A fault to inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Drop,
    Http502,
    Internal,
    Slow,
}

impl Fault {
    fn counter(self) -> impl FnOnce(&mut FaultStats) -> &mut u64 {
        move |f: &mut FaultStats| match self {
            Fault::Drop => &mut f.dropped,
            Fault::Http502 => &mut f.http_502,
            Fault::Internal => &mut f.internal_10002,
            Fault::Slow => &mut f.slow,
        }
    }
}

/// Which fault (if any) a uniform draw `r` in [0, 1) picks: the rates are consecutive bands,
/// so each kind happens with exactly its own rate.
fn roll(faults: &Faults, r: f64) -> Option<Fault> {
    let bands = [
        (faults.drop_connection, Fault::Drop),
        (faults.http_502, Fault::Http502),
        (faults.internal_10002, Fault::Internal),
        (faults.slow, Fault::Slow),
    ];
    let mut edge = 0.0;
    for (rate, fault) in bands {
        edge += rate;
        if r < edge {
            return Some(fault);
        }
    }
    None
}

/// A delay uniform in `mean ± jitter` for a draw `r` in [0, 1), never below zero.
fn latency(mean: Duration, jitter: Duration, r: f64) -> Duration {
    let secs = mean.as_secs_f64() + jitter.as_secs_f64() * (2.0 * r - 1.0);
    Duration::from_secs_f64(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_bands() {
        let faults = Faults {
            drop_connection: 0.1,
            http_502: 0.2,
            internal_10002: 0.3,
            slow: 0.1,
            ..Faults::default()
        };
        assert_eq!(roll(&faults, 0.0), Some(Fault::Drop));
        assert_eq!(roll(&faults, 0.099), Some(Fault::Drop));
        assert_eq!(roll(&faults, 0.1), Some(Fault::Http502));
        assert_eq!(roll(&faults, 0.35), Some(Fault::Internal));
        assert_eq!(roll(&faults, 0.65), Some(Fault::Slow));
        assert_eq!(roll(&faults, 0.75), None);
        assert_eq!(roll(&Faults::default(), 0.0), None);
        let always = Faults {
            slow: 1.0,
            ..Faults::default()
        };
        assert_eq!(roll(&always, 0.999_999), Some(Fault::Slow));
    }

    #[test]
    fn latency_range() {
        let ms = Duration::from_millis;
        assert_eq!(latency(ms(100), ms(20), 0.0), ms(80));
        assert_eq!(latency(ms(100), ms(20), 0.5), ms(100));
        assert!(latency(ms(100), ms(20), 0.999) <= ms(120));
        assert_eq!(latency(ms(10), ms(50), 0.0), Duration::ZERO);
        assert_eq!(latency(Duration::ZERO, Duration::ZERO, 0.7), Duration::ZERO);
    }
}
