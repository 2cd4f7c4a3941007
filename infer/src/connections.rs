//! A cap on open connections: past it, a new connection is answered `503` with the JSON error
//! body and closed at once, so that clients holding connections open cannot use up the
//! process's file descriptors and lock everyone else out.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::parse_errors::json_answer;

/// What a connection over the cap reads before it is closed.
fn refusal() -> Vec<u8> {
    json_answer(503, "Service Unavailable", "too many open connections; retry later")
}

/// Accepts TCP connections up to a cap (with `TCP_NODELAY`, so small answers go out at once
/// instead of waiting on delayed ACKs).
#[derive(Clone)]
pub struct CappedAcceptor {
    live: Arc<AtomicUsize>,
    cap: usize,
    /// Whether a refusal may be written as plain HTTP (not on a TLS port).
    plain: bool,
    gauge: IntGauge,
    refused: IntCounter,
    refusal: Arc<[u8]>,
}

impl CappedAcceptor {
    /// At most `cap` connections at once; `plain` when the port speaks HTTP without TLS.
    pub fn new(cap: usize, plain: bool, gauge: IntGauge, refused: IntCounter) -> Self {
        Self {
            live: Arc::default(),
            cap: cap.max(1),
            plain,
            gauge,
            refused,
            refusal: refusal().into(),
        }
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

impl<S> Accept<TcpStream, S> for CappedAcceptor {
    type Stream = Counted<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let claimed = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1));
        if claimed.is_err() {
            self.refused.inc();
            if self.plain {
                // Best effort: a fresh socket's send buffer takes these few bytes at once.
                let _ = stream.try_write(&self.refusal);
            }
            return std::future::ready(Err(io::Error::other("connection cap reached")));
        }
        self.gauge.inc();
        let counted = Counted {
            inner: stream,
            live: self.live.clone(),
            gauge: self.gauge.clone(),
        };
        std::future::ready(counted.inner.set_nodelay(true).map(|()| (counted, service)))
    }
}

/// A connection that counts itself open until dropped.
pub struct Counted<T> {
    inner: T,
    live: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The default cap: the process's file-descriptor limit less a margin for the model, the
/// listener, logs and TLS files, and at most 10,000.
pub fn default_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else of ours.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as u64
    } else {
        1024
    };
    soft.saturating_sub(64).clamp(16, 10_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_cap_are_answered_503_and_closed() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gauge = IntGauge::new("c", "c").unwrap();
        let refused = IntCounter::new("r", "r").unwrap();
        let acceptor = CappedAcceptor::new(2, true, gauge.clone(), refused.clone());
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (server_side, _) = listener.accept().await.unwrap();
            held.push(acceptor.accept(server_side, ()).await);
        }
        assert!(held[0].is_ok() && held[1].is_ok());
        assert!(held[2].is_err());
        assert_eq!((acceptor.live(), gauge.get(), refused.get()), (2, 2, 1));
        let mut answer = Vec::new();
        clients[2].read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // A closed connection frees its place.
        drop(held.remove(0));
        assert_eq!((acceptor.live(), gauge.get()), (1, 1));
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (server_side, _) = listener.accept().await.unwrap();
        assert!(acceptor.accept(server_side, ()).await.is_ok());
    }
}
