//! The accept loop of the web side (issue 21), instead of `axum::serve`, which sets no timeout:
//! hyper's HTTP/1 connections with a header read timeout (a client that has not sent a whole
//! request header within it is disconnected: slowloris), a cap on connections in all (the next
//! ones wait in the kernel's queue) and per client address (the next ones are closed at once),
//! a stall timeout on writes (a client that stops reading an answer is disconnected, which
//! frees the query behind it), the client's address given to handlers as
//! [`axum::extract::ConnectInfo`], and an orderly stop.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::limits::{self, Limits};

/// Connections open per client address.
struct PerAddress {
    max: usize,
    trusted: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in the caps, given back when it closes.
struct Admitted {
    _global: OwnedSemaphorePermit,
    per: Arc<PerAddress>,
    key: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(k) = self.key
            && let Ok(mut open) = self.per.open.lock()
            && let Some(n) = open.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&k);
            }
        }
    }
}

impl PerAddress {
    /// A place for a connection from `peer`, or `None` when it already has its share.
    fn admit(self: &Arc<Self>, peer: IpAddr, global: OwnedSemaphorePermit) -> Option<Admitted> {
        let key = limits::client_key(peer);
        if self.trusted.iter().any(|t| limits::client_key(*t) == key) {
            return Some(Admitted {
                _global: global,
                per: self.clone(),
                key: None,
            });
        }
        let mut open = self.open.lock().ok()?;
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Admitted {
            _global: global,
            per: self.clone(),
            key: Some(key),
        })
    }
}

/// A TCP stream that holds its connection's place and fails a write that waited longer than
/// the stall timeout.
struct Guarded {
    tcp: TcpStream,
    _admitted: Admitted,
    stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// Serves `router` on `listener` until `stop` resolves, then lets the requests in progress
/// finish for `grace` at most.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    trusted: Vec<IpAddr>,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let per = Arc::new(PerAddress {
        max: limits.max_connections_per_address,
        trusted,
        open: Mutex::new(HashMap::new()),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut refused: u64 = 0;
    tokio::pin!(stop);
    loop {
        // A place first: at the cap, new connections wait in the kernel's queue.
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = global.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!("hub web: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = per.admit(peer.ip(), permit) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "hub web: {refused} connection(s) refused so far: more than {} at once from one address (latest {})",
                    per.max,
                    peer.ip()
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(Guarded {
            tcp,
            _admitted: admitted,
            stall: limits.stall_timeout,
            stalled: None,
        });
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(req).await }
            });
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("hub web: connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(
            "hub web: requests still in progress {} s after the stop; closing them",
            grace.as_secs()
        ),
    }
}

/// The client's address for a request: the socket peer, or what a trusted proxy says.
pub fn client_of(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted: &[IpAddr],
) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    limits::client_addr(peer, &forwarded, trusted)
}
