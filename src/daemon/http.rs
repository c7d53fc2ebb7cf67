//! The daemon's HTTP listener: an accept loop with a connection cap, hyper's HTTP/1 connections
//! with a header-read timeout, and an idle watchdog per connection; the [`api`](super::api)
//! router answers the requests.
//!
//! `axum::serve` bounds none of this: a client that opens connections and sends half a header
//! kept a file descriptor each for ever, until the daemon could not accept `/health` (issue 14,
//! finding 8). Here:
//! - at most `server.max_connections` are open (never more than the open-file limit allows).
//!   When that many are, a new connection takes the place of the one that has waited longest
//!   (over a second) for a request header; when none has, the new one is answered `503` with
//!   `Retry-After` and closed at once, without reading it. So connections that send nothing
//!   cannot lock out a client that does;
//! - a connection that has not sent a whole request header `server.header_read_timeout_seconds`
//!   after it opened, or after its previous answer, is closed (hyper's timer);
//! - a connection on which no byte moves for `server.idle_timeout_seconds` while no request is
//!   being worked on — a stalled upload, a client that stops reading its answer — is closed.
//!   A request whose body has arrived and that is being answered (a long query) is not idle;
//!   its handler has its own bound.
//!
//! Limits are read from the settings for each new connection, so they follow spec changes.
//! On shutdown the loop stops accepting, every connection finishes its current answer and
//! closes, and [`serve`] returns when all are closed.

use super::limits::{Host, Limits};
use super::Shared;
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Serves `app` on `listener` until `shared.shutdown` flips, then until every connection closed.
pub async fn serve(listener: TcpListener, app: Router, shared: Arc<Shared>) {
    let open = Arc::new(OpenConnections::default());
    let mut stop = shared.shutdown.subscribe();
    let mut last_warning = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or an aborted handshake: the pending
                // connection stays queued; back off instead of spinning on it.
                if warn_now(&mut last_warning) {
                    tracing::warn!(error = %e, "cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = Limits::new(&shared.instance().server, &Host::get());
        let Some(guard) = open.enter(limits.max_connections) else {
            if warn_now(&mut last_warning) {
                tracing::warn!(
                    open = limits.max_connections,
                    "connection limit reached (server.max_connections) with every connection \
                     busy: refusing new ones"
                );
            }
            refuse(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            app.clone(),
            limits,
            guard,
            shared.shutdown.subscribe(),
        ));
    }
    drop(listener);
    open.closed().await;
}

/// At most one warning every ten seconds, however hard a client pushes.
fn warn_now(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
        return false;
    }
    *last = Some(now);
    true
}

/// Answers 503 without reading the request, and closes. The few bytes fit any fresh socket's
/// send buffer, so this never waits for the client.
fn refuse(stream: TcpStream) {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        // The API's error body (docs/api.md); no request id, since no request was read.
        let body = serde_json::json!({"error": {
            "code": "too_many_connections",
            "message": "the daemon has as many connections open as it allows \
                        (server.max_connections); retry in a moment",
        }})
        .to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let _ = stream.try_write(answer);
}

/// A connection that has waited this long for a request header may be closed to make room.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// The open connections. When they are as many as allowed, a new one takes the place of the one
/// that has waited longest for a request header (at least [`EVICTABLE_AFTER`]): a client that
/// holds connections without sending requests cannot lock others out, while connections that
/// are receiving, being answered or sending are never cut for room.
#[derive(Default)]
struct OpenConnections {
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    changed: Notify,
}

impl OpenConnections {
    fn enter(self: &Arc<Self>, max: usize) -> Option<ConnectionGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max {
            let now = Instant::now();
            let (&id, victim) = open
                .iter()
                .filter(|(_, a)| a.phase() == WAITING)
                .map(|(id, a)| (id, a, now.saturating_duration_since(a.phase_since())))
                .filter(|(_, _, waited)| *waited >= EVICTABLE_AFTER)
                .max_by_key(|(_, _, waited)| *waited)
                .map(|(id, a, _)| (id, a))?;
            victim.evict.notify_one();
            open.remove(&id);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        open.insert(id, activity.clone());
        Some(ConnectionGuard {
            all: self.clone(),
            id,
            activity,
        })
    }

    async fn closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.open.lock().map_or(0, |o| o.len()) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection, counted until dropped.
struct ConnectionGuard {
    all: Arc<OpenConnections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.all.open.lock() {
            open.remove(&self.id);
        }
        self.all.changed.notify_waiters();
    }
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    open: ConnectionGuard,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = open.activity.clone();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Tracked {
        app: TowerToHyperService::new(app),
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let check_at = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection closed");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                // Finishes the answer in progress, then closes; an idle connection closes now.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = activity.evict.notified() => {
                tracing::debug!("closing a connection that sent no request, to make room");
                return;
            }
            _ = tokio::time::sleep_until(check_at.into()) => {
                if activity.is_idle(limits.idle_timeout) {
                    tracing::debug!(idle = ?limits.idle_timeout, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// Where a connection is. Waiting for a request header: hyper's header timeout applies, and the
/// connection may be evicted for room.
const WAITING: u8 = 0;
/// A request's body is arriving (or was never read): bytes must keep moving.
const RECEIVING: u8 = 1;
/// The body is in and the request is being answered: the handler's own limits apply.
const ANSWERING: u8 = 2;
/// The answer's body is being sent: bytes must keep moving.
const SENDING: u8 = 3;

/// When a connection last moved a byte, and where it is.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last byte read or written.
    last: AtomicU64,
    phase: AtomicU8,
    /// Milliseconds after `started` when `phase` last changed.
    phase_since: AtomicU64,
    /// Told to close to make room for a new connection.
    evict: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            phase: AtomicU8::new(WAITING),
            phase_since: AtomicU64::new(0),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    fn phase_since(&self) -> Instant {
        self.started + Duration::from_millis(self.phase_since.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: u8) {
        self.phase_since.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    /// Moves from `from` to `to`, if the connection is still in `from`.
    fn advance(&self, from: u8, to: u8) {
        if self
            .phase
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.phase_since.store(self.now_ms(), Ordering::Release);
        }
    }

    fn is_idle(&self, timeout: Duration) -> bool {
        self.phase() != ANSWERING && self.last().elapsed() >= timeout
    }

    /// When to look again: `timeout` after the last byte (rechecked, since bytes may move and
    /// answers start meanwhile).
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        (self.last() + timeout).max(Instant::now() + Duration::from_millis(10))
    }
}

/// The socket, noting every byte read or written in [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router as a hyper service that records each request's phase in [`Activity`].
struct Tracked {
    app: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

type Answer = Pin<
    Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let activity = self.activity.clone();
        activity.set_phase(RECEIVING);
        let req = req.map(|inner| {
            axum::body::Body::new(PhaseBody {
                inner,
                activity: activity.clone(),
                from: RECEIVING,
                to: ANSWERING,
            })
        });
        let answer = hyper::service::Service::call(&self.app, req);
        Box::pin(async move {
            let response = answer.await?;
            activity.set_phase(SENDING);
            Ok(response.map(|inner| {
                axum::body::Body::new(PhaseBody {
                    inner,
                    activity,
                    from: SENDING,
                    to: WAITING,
                })
            }))
        })
    }
}

/// A request or answer body that moves [`Activity`] on (`from` → `to`) once it has all passed,
/// or is dropped.
struct PhaseBody<B> {
    inner: B,
    activity: Arc<Activity>,
    from: u8,
    to: u8,
}

impl<B: Body + Unpin> Body for PhaseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.advance(self.from, self.to);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for PhaseBody<B> {
    fn drop(&mut self) {
        self.activity.advance(self.from, self.to);
    }
}
