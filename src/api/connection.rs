//! JSON bodies for the errors hyper answers by itself.
//!
//! hyper refuses some requests before any route or middleware sees them: a request
//! target longer than `http::Uri` can hold (65,534 bytes: 414), headers larger than
//! its read buffer (431), a request line or header it cannot parse (400). It answers
//! those with an empty body and closes the connection, so a client is told nothing
//! and the contract ("errors are JSON objects with an `error` message") breaks
//! (issue 15: a 100 KB path got an empty 414).
//!
//! [`JsonErrorsListener`] wraps each accepted connection in [`JsonErrorsIo`], which
//! recognises such an answer on its way out (a response head with one of those
//! statuses and `content-length: 0`: every answer of the router has a JSON body, see
//! `json_errors` in [`super`]) and writes the same head with a JSON body instead.
//! Everything else passes through untouched.
//!
//! It also closes the way a client can read: when the server ends a connection while
//! the client is still sending (a 413 decided from `Content-Length`, a 431 after
//! 400 KB of headers), closing at once resets the connection, and the client loses
//! the answer to "connection reset" (seen with a 70 KB `POST /alerts`). So a dropped
//! connection whose peer has not closed is read and discarded for a while first
//! ("lingering close", as Apache and nginx do), bounded by [`LINGER_BYTES`] and
//! [`LINGER_TIME`].
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes read and discarded from a closing connection.
pub const LINGER_BYTES: usize = 1024 * 1024;
/// Longest a closing connection is read from.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// What happens to a connection's stream once the server is done with it.
pub trait Linger: Unpin + Send + 'static {
    fn linger(self);
}

impl Linger for TcpStream {
    /// Reads and discards what the peer still sends, until it closes, up to
    /// [`LINGER_BYTES`] or [`LINGER_TIME`], on a task of its own.
    fn linger(self) {
        let mut probe = [0u8; 1];
        if matches!(self.try_read(&mut probe), Ok(0)) {
            return; // the peer closed first: nothing will be reset
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut stream = self;
            let mut buf = vec![0u8; 16 * 1024];
            let mut left = LINGER_BYTES;
            let until = tokio::time::Instant::now() + LINGER_TIME;
            while left > 0 {
                match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
        });
    }
}

impl Linger for tokio::io::DuplexStream {
    fn linger(self) {}
}

/// A TCP listener whose connections get JSON bodies on hyper's own error answers.
pub struct JsonErrorsListener(TcpListener);

impl JsonErrorsListener {
    pub fn new(listener: TcpListener) -> JsonErrorsListener {
        JsonErrorsListener(listener)
    }
}

impl Listener for JsonErrorsListener {
    type Io = JsonErrorsIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop: transient errors (EMFILE...) are retried there.
        let (io, addr) = Listener::accept(&mut self.0).await;
        (JsonErrorsIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's body-less error answers and lingers when it
/// closes (see the module doc).
pub struct JsonErrorsIo<T: Linger> {
    /// Always `Some` until dropped.
    inner: Option<T>,
    /// A rewritten answer still to be written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<T: Linger> JsonErrorsIo<T> {
    pub fn new(inner: T) -> JsonErrorsIo<T> {
        JsonErrorsIo {
            inner: Some(inner),
            pending: Vec::new(),
            written: 0,
        }
    }

    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(self.inner.as_mut().expect("used after drop"))
    }
}

impl<T: Linger> Drop for JsonErrorsIo<T> {
    fn drop(&mut self) {
        if let Some(io) = self.inner.take() {
            io.linger();
        }
    }
}

impl<T: AsyncWrite + Linger> JsonErrorsIo<T> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.inner.as_mut().expect("used after drop");
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Linger> AsyncRead for JsonErrorsIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Linger> AsyncWrite for JsonErrorsIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            self.pending = answer;
            self.written = 0;
            // Whatever is not written now is written by the next write, flush or
            // shutdown, which hyper always calls after an answer.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        self.io().poll_shutdown(cx)
    }

    // Vectored, as the socket is: hyper then writes a head and its body with one
    // `writev` instead of copying the body behind the head. Its own error answers
    // have no body, so their head is the only non-empty slice.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        ready!(self.poll_pending(cx))?;
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(T::is_write_vectored)
    }
}

/// The message of each status hyper answers by itself.
fn message(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "malformed HTTP request: the request line or a header cannot be parsed",
        414 => "request target too long: the path and query together must stay under 64 KiB",
        431 => "request headers too large",
        _ => return None,
    })
}

/// `head` (the bytes of one write) with a JSON body, when it is one of hyper's own
/// body-less error answers; `None` for anything else.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    // The status first: every answer of the router stops here, unscanned.
    let status: u16 = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let error = message(status)?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    let empty = headers.iter().any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("content-length") && v.trim() == "0"
        })
    });
    let typed = headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
    });
    if !empty || typed || end + 4 != buf.len() {
        return None;
    }
    let body = serde_json::json!({ "error": error }).to_string();
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        if !h.to_ascii_lowercase().starts_with("content-length:") {
            out += h;
            out += "\r\n";
        }
    }
    out += &format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn rewrites_only_hypers_own_error_answers() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 09:15:02 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(head.contains("date: Sat, 28 Nov 2026"), "{out}");
        assert!(head.contains("content-type: application/json"), "{out}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("too long"), "{v}");
        for status in ["400 Bad Request", "431 Request Header Fields Too Large"] {
            let h = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(rewrite(h.as_bytes()).is_some(), "{status}");
        }
        for other in [
            // The router's answers: JSON already, or not an error hyper makes.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\nmore",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"error\":\"HTTP/1.1 414 \"}",
            b"",
        ] {
            assert!(rewrite(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_rewritten_answer_reaches_the_peer_whole() {
        let (a, mut b) = tokio::io::duplex(16); // tiny: forces partial writes
        let mut io = JsonErrorsIo::new(a);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        });
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(io.write(head).await.unwrap(), head.len());
        io.flush().await.unwrap();
        io.write_all(b"after").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let seen = reader.await.unwrap();
        assert!(
            seen.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{seen}"
        );
        assert!(seen.ends_with("\"}after"), "{seen}");
    }

    #[tokio::test]
    async fn vectored_writes_are_rewritten_only_when_the_head_is_alone() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut io = JsonErrorsIo::new(a);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        });
        let error = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        let empty: &[u8] = b"";
        let n = io
            .write_vectored(&[io::IoSlice::new(empty), io::IoSlice::new(error)])
            .await
            .unwrap();
        assert_eq!(n, error.len());
        io.flush().await.unwrap();
        // A head with its body (what the router answers) passes through untouched;
        // DuplexStream writes one slice per call, so write what it took and go on.
        let answer = [&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"[..], b"{}"];
        let mut slices = answer.map(io::IoSlice::new);
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await.unwrap();
            io::IoSlice::advance_slices(&mut rest, n);
        }
        io.shutdown().await.unwrap();
        drop(io);
        let seen = reader.await.unwrap();
        let (rewritten, passed) = seen.split_once("HTTP/1.1 200 OK").unwrap();
        assert!(
            rewritten.contains("content-type: application/json"),
            "{seen}"
        );
        assert!(rewritten.contains("too long"), "{seen}");
        assert_eq!(passed, "\r\ncontent-length: 2\r\n\r\n{}");
    }
}
