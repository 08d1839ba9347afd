//! The inactivity watchdog of a connection: a socket whose pending reads and writes fail
//! with `TimedOut` when no byte moved in either direction for the I/O timeout.
//!
//! hyper keeps a read pending while a handler runs, to notice a client that went away
//! (which cancels the handler). That read must not time out: a long-poll or a scrub
//! pass may take longer than the timeout with nothing to say. So reads are timed only
//! while no handler runs (between requests, and while a response streams out) or while
//! the handler waits for request-body bytes; writes are always timed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What the handlers of one connection are doing, shared with its watchdog.
#[derive(Default)]
pub(super) struct Activity {
    /// Handlers running (HTTP/1.1: zero or one).
    handlers: AtomicUsize,
    /// The running handler is waiting for request-body bytes.
    body_wait: AtomicBool,
    /// The running request's body was read to its end (or had none).
    body_done: AtomicBool,
}

impl Activity {
    /// Whether a pending socket read is one the client owes us (a head or body bytes),
    /// as opposed to hyper watching for a hang-up while a handler works.
    fn read_is_owed(&self) -> bool {
        self.handlers.load(Ordering::Acquire) == 0 || self.body_wait.load(Ordering::Acquire)
    }

    /// Whether the last request's body was read to its end. When it was not (a handler
    /// answered before reading, e.g. a refusal), the connection must close after the
    /// answer: the client may not have sent the body at all (it waited for
    /// `100 Continue`, got a final answer instead, and skipped it), so whatever comes next
    /// on the connection cannot be told apart from the rest of that body.
    pub(super) fn body_read(&self) -> bool {
        self.body_done.load(Ordering::Acquire)
    }
}

/// A handler running on the connection, from its request head to its response head.
pub(super) struct Busy(Arc<Activity>);

impl Busy {
    pub(super) fn enter(activity: &Arc<Activity>) -> Self {
        activity.body_wait.store(false, Ordering::Release);
        activity.body_done.store(false, Ordering::Release);
        activity.handlers.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.body_wait.store(false, Ordering::Release);
        self.0.handlers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request body that tells the watchdog when its handler waits for bytes.
pub(super) struct WatchedBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl WatchedBody {
    pub(super) fn new(inner: Incoming, activity: &Arc<Activity>) -> Self {
        if inner.is_end_stream() {
            activity.body_done.store(true, Ordering::Release);
        }
        Self {
            inner,
            activity: activity.clone(),
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let out = Pin::new(&mut self.inner).poll_frame(cx);
        self.activity
            .body_wait
            .store(out.is_pending(), Ordering::Release);
        if matches!(out, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.body_done.store(true, Ordering::Release);
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.activity.body_wait.store(false, Ordering::Release);
    }
}

/// A socket whose pending reads and writes fail with `TimedOut` when nothing moved in
/// either direction for `timeout`.
pub(super) struct Watchdog {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    /// Counts this connection once when its deadline passes.
    timed_out: Option<Counter>,
    activity: Arc<Activity>,
}

impl Watchdog {
    pub(super) fn new(
        inner: TcpStream,
        timeout: Duration,
        timed_out: Counter,
        activity: Arc<Activity>,
    ) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            timed_out: Some(timed_out),
            activity,
        }
    }

    /// Bytes moved: the next wait starts a fresh deadline. (A flush with nothing to
    /// flush is no progress: hyper flushes on every wake-up, and counting that would let a
    /// stalled body live forever.)
    fn moved(&mut self, bytes: usize) {
        if bytes > 0 {
            self.armed = false;
        }
    }

    /// Called when an operation is pending: fails it once the deadline passes.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if let Some(counter) = self.timed_out.take() {
                    counter.inc();
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no progress on the connection within the I/O timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watchdog {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if !self.activity.read_is_owed() => {
                // Not timed; a later owed read starts a fresh deadline.
                self.armed = false;
                Poll::Pending
            }
            Poll::Pending => self.waiting(cx),
            ready => {
                let after = buf.filled().len();
                self.moved(after - before);
                ready
            }
        }
    }
}

impl AsyncWrite for Watchdog {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(Ok(n)) => {
                self.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(Ok(n)) => {
                self.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }
}
