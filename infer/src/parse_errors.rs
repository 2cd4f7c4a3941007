//! The platform's JSON error body on the answers the HTTP library writes by itself.
//!
//! hyper answers a request it cannot parse (400), a target that is too long (414) and headers
//! that are too large (431) before any route sees it, with an empty body. [`JsonParseErrors`]
//! wraps each connection (above TLS, so it sees the plain text) and swaps such an answer for
//! the same status with `{"error_code": "KILN.<status>", "error_msg": "..."}` and the security
//! headers every other answer carries. The routes' own 4xx answers always have a body, so an
//! empty-bodied 400/414/431 can only be hyper's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::errors::error_body;
use crate::observe::SECURITY_HEADERS;

/// A complete `HTTP/1.1` answer with status `status` and the JSON error body, closing the
/// connection.
pub fn json_answer(status: u16, reason: &str, msg: &str) -> Vec<u8> {
    let body = error_body(status, msg).to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in SECURITY_HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut answer = head.into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// The JSON answer standing in for hyper's own answer in `written`, if `written` is one.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let (status, reason, msg) = match rest.get(..3)? {
        b"400" => (
            400,
            "Bad Request",
            "the request is not valid HTTP/1.1: its method, target, version or a header line is malformed",
        ),
        b"414" => (414, "URI Too Long", "the request target is too long"),
        b"431" => (
            431,
            "Request Header Fields Too Large",
            "the request's headers are too large",
        ),
        _ => return None,
    };
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&written[..head_end]).ok()?.to_ascii_lowercase();
    let empty = head.contains("\r\ncontent-length: 0\r\n") && head_end == written.len();
    empty.then(|| json_answer(status, reason, msg))
}

/// Wraps an acceptor so that every connection it yields answers parse errors with JSON.
#[derive(Clone, Debug)]
pub struct JsonParseErrors<A> {
    inner: A,
}

impl<A> JsonParseErrors<A> {
    /// Wraps `inner` (the outermost acceptor: over TLS, not under it).
    pub fn new(inner: A) -> Self {
        Self { inner }
    }
}

impl<A, I, S> Accept<I, S> for JsonParseErrors<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Rewriting<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Rewriting::new(stream), service))
        })
    }
}

/// A connection whose writes pass through, except hyper's own empty-bodied error answers,
/// which leave as [`json_answer`]s.
pub struct Rewriting<T> {
    inner: T,
    /// A replacement answer still to be written, and how much of it has been.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> Rewriting<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Rewriting<T> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewriting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewriting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = replacement(buf) {
            this.pending = answer;
            // What does not go out now goes out on the flush or shutdown hyper does next.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// Not vectored, so that hyper hands over each answer's head in one buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        (head.to_string(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn a_json_answer_is_complete_and_carries_the_security_headers() {
        let (head, body) = split(&json_answer(503, "Service Unavailable", "busy"));
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert_eq!(body["error_code"], "KILN.503");
        assert_eq!(body["error_msg"], "busy");
    }

    #[test]
    fn only_empty_bodied_400_414_431_answers_are_replaced() {
        let hypers = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                      date: Mon, 07 Dec 2026 19:00:00 GMT\r\n\r\n";
        let (head, body) = split(&replacement(hypers.as_bytes()).unwrap());
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert_eq!(body["error_code"], "KILN.431");
        assert!(replacement(hypers.replace("431", "414").as_bytes()).is_some());
        assert!(replacement(hypers.replace("431", "400").as_bytes()).is_some());
        // The routes' own answers have bodies, other statuses pass, and so does a 400 head
        // whose body follows in the same write.
        let ours = "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n";
        assert!(replacement(ours.as_bytes()).is_none());
        assert!(replacement(hypers.replace("431", "404").as_bytes()).is_none());
        assert!(replacement(format!("{}{{}}", hypers.replace("431", "400")).as_bytes()).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn a_connection_writes_the_replacement_and_passes_the_rest() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = Rewriting::new(server);
        let writer = tokio::spawn(async move {
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            server
                .write_all(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            server.shutdown().await.unwrap();
        });
        let mut client = client;
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        writer.await.unwrap();
        let first = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert!(all.starts_with(first));
        let (head, body) = split(&all[first.len()..]);
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long"), "{head}");
        assert_eq!(body["error_code"], "KILN.414");
    }
}
