//! The `/metrics` endpoint (the Prometheus exporter convention): `GET /metrics` answers with
//! what a scrape function renders, in the text format; `GET /` says where the metrics are;
//! anything else is 404 (405 for another method).
//!
//! It serves while `schedule` runs (and during a `run` given `--metrics-listen`). The address
//! is bound before any other work, so a taken port is a configuration error (exit 2) rather
//! than a daemon without metrics. The scrape function is the caller's: another command can
//! serve its own series the same way. Request URIs are never logged.

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the metrics for one scrape, or says why it cannot (answered 503: Prometheus then
/// records the target as down).
pub type Scrape = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// The content type of the text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one scrape may take before it is answered 503.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address cannot be listened on: a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("EXPORT_METRICS_LISTEN / --metrics-listen {addr}: cannot listen there: {source} (another process has the port, or the address is not this host's)")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A bound address, ready to serve.
pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    /// Binds `addr`; a refusal names the address and the setting (exit 2).
    pub async fn bind(addr: SocketAddr) -> Result<Endpoint, ListenError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError { addr, source })?;
        Ok(Endpoint { listener })
    }

    /// The address it listens on (a port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `stop` is cancelled; the task ends with it.
    pub fn serve(self, scrape: Scrape, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let addr = self.local_addr();
        tracing::info!("serving metrics at http://{addr}/metrics");
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(connection(stream, scrape.clone(), stop.clone()));
                        }
                        Err(e) => {
                            tracing::warn!("metrics endpoint: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        })
    }
}

/// One keep-alive connection, closed when the endpoint stops.
async fn connection(stream: tokio::net::TcpStream, scrape: Scrape, stop: CancellationToken) {
    let service = service_fn(move |req| answer(req, scrape.clone()));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    scrape: Scrape,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let plain = |status: StatusCode, text: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text)))
            .expect("a valid response")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics\n".into(),
        ));
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => {
            return Ok(plain(
                StatusCode::OK,
                "receipt-exporter: the metrics are at /metrics\n".into(),
            ))
        }
        _ => {
            return Ok(plain(
                StatusCode::NOT_FOUND,
                "not found: the metrics are at /metrics\n".into(),
            ))
        }
    }
    let rendered = tokio::time::timeout(SCRAPE_TIMEOUT, scrape()).await;
    Ok(match rendered {
        Ok(Ok(text)) => Response::builder()
            .header("content-type", TEXT_FORMAT)
            .body(Full::new(Bytes::from(text)))
            .expect("a valid response"),
        Ok(Err(why)) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the metrics took longer than {} s to read\n",
                SCRAPE_TIMEOUT.as_secs()
            ),
        ),
    })
}
