//! Connection limits: a cap on open connections and timeouts for connections that do
//! not send requests, so that half-open or slow clients cannot pile up.
//!
//! [`LimitAcceptor`] wraps the server's acceptor (plain TCP or TLS). It refuses a
//! connection beyond `http.max_connections` by closing it at once, and wraps each
//! accepted one: the stream sees the bytes (after TLS), the service sees requests
//! start and finish. From both it enforces, for HTTP/1 and HTTP/2 alike:
//! - `http.idle_timeout`: a connection with no request in flight and no bytes in
//!   either direction for this long is closed (never-used, half-open and idle
//!   keep-alive connections);
//! - `http.read_header_timeout`: once the first byte of an HTTP/1 request arrives,
//!   its head must be complete within this (slowloris).
//!
//! A request in flight is never timed out here: queries have their own timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits, from `http:` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Connection figures for `/metrics`.
#[derive(Clone)]
struct ConnMetrics {
    open: IntGauge,
    refused: IntCounter,
    timed_out: IntCounter,
}

impl ConnMetrics {
    fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let m = ConnMetrics {
            open: IntGauge::new("closedloop_http_connections", "Open HTTP connections.")?,
            refused: IntCounter::new(
                "closedloop_http_connections_refused_total",
                "Connections closed at once because http.max_connections were open.",
            )?,
            timed_out: IntCounter::new(
                "closedloop_http_connections_timed_out_total",
                "Connections closed by http.idle_timeout or http.read_header_timeout.",
            )?,
        };
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.timed_out.clone()))?;
        Ok(m)
    }
}

/// Accepts connections through `inner` (e.g. TLS) within the limits.
#[derive(Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    metrics: ConnMetrics,
}

impl<A> LimitAcceptor<A> {
    pub fn new(
        inner: A,
        limits: ConnectionLimits,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(LimitAcceptor {
            inner,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            metrics: ConnMetrics::new(registry)?,
        })
    }
}

impl<A, I, S> axum_server::accept::Accept<I, S> for LimitAcceptor<A>
where
    A: axum_server::accept::Accept<I, S> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
    A::Future: Send + 'static,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = Tracked<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let acceptor = self.clone();
        Box::pin(async move {
            let Ok(slot) = acceptor.slots.clone().try_acquire_owned() else {
                acceptor.metrics.refused.inc();
                return Err(io::Error::other("connection limit reached"));
            };
            let (stream, service) = acceptor.inner.accept(stream, service).await?;
            let conn = Arc::new(Conn {
                limits: acceptor.limits,
                state: Mutex::new(State {
                    in_flight: 0,
                    last_activity: Instant::now(),
                    head_started: None,
                    http2: None,
                    preface_matched: 0,
                }),
            });
            acceptor.metrics.open.inc();
            let stream = Guarded {
                inner: stream,
                conn: conn.clone(),
                timer: Box::pin(tokio::time::sleep(acceptor.limits.idle_timeout)),
                _slot: slot,
                metrics: acceptor.metrics.clone(),
            };
            Ok((
                stream,
                Tracked {
                    inner: service,
                    conn,
                },
            ))
        })
    }
}

/// One connection's state, shared by its stream and its service.
struct Conn {
    limits: ConnectionLimits,
    state: Mutex<State>,
}

struct State {
    /// Requests dispatched and not yet answered.
    in_flight: usize,
    /// When bytes last moved, or the last request was answered.
    last_activity: Instant,
    /// When the first byte of an HTTP/1 request head arrived, until it is dispatched.
    head_started: Option<Instant>,
    /// Whether the client speaks HTTP/2, once its first bytes tell.
    http2: Option<bool>,
    /// How many bytes of the HTTP/2 preface the first bytes matched so far.
    preface_matched: usize,
}

/// The HTTP/2 connection preface every HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl Conn {
    fn bytes_read(&self, bytes: &[u8]) {
        let mut s = self.state.lock();
        let now = Instant::now();
        if s.http2.is_none() {
            let at = s.preface_matched;
            let n = bytes.len().min(H2_PREFACE.len() - at);
            if bytes[..n] != H2_PREFACE[at..at + n] {
                s.http2 = Some(false);
            } else if at + n == H2_PREFACE.len() {
                s.http2 = Some(true);
            }
            s.preface_matched = at + n;
        }
        // HTTP/2 frames arrive between requests (pings, window updates): only an
        // HTTP/1 head is timed.
        if s.http2 == Some(true) {
            s.head_started = None;
        } else if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(now);
        }
        s.last_activity = now;
    }

    fn bytes_written(&self) {
        self.state.lock().last_activity = Instant::now();
    }

    /// When the connection must be closed if no byte arrives before; `None` while a
    /// request is in flight.
    fn deadline(&self) -> Option<Instant> {
        let s = self.state.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_started {
            Some(t) => t + self.limits.read_header_timeout,
            None => s.last_activity + self.limits.idle_timeout,
        })
    }

    fn request_started(&self) {
        let mut s = self.state.lock();
        s.in_flight += 1;
        s.head_started = None;
    }

    fn request_finished(&self) {
        let mut s = self.state.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.last_activity = Instant::now();
    }
}

/// A connection's stream: passes bytes through and closes the connection when a
/// timeout runs out while waiting to read.
pub struct Guarded<I> {
    inner: I,
    conn: Arc<Conn>,
    timer: Pin<Box<Sleep>>,
    /// The connection's place under `http.max_connections`, given back on drop.
    _slot: OwnedSemaphorePermit,
    metrics: ConnMetrics,
}

impl<I> Drop for Guarded<I> {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.bytes_read(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.conn.deadline() else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.metrics.timed_out.inc();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection idle or request head too slow",
                        )))
                    }
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.bytes_written();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.bytes_written();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection's service: tells the connection when requests start and finish.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

/// Marks a request finished when dropped (answered, failed or abandoned).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

impl<S, R> tower_service::Service<R> for Tracked<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.conn.request_started();
        let in_flight = InFlight(self.conn.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let _in_flight = in_flight;
            answer.await
        })
    }
}
