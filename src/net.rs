//! Why an HTTP request never got an answer, read from the error's source chain: the
//! connection was refused, the name did not resolve, the TLS handshake failed, or
//! something else. Shared by the two HTTP edges (InfluxDB in [`crate::store`], the
//! arng API in [`crate::probe::api`]) so that both word and classify a failure the
//! same way, and a check can tell "nothing listens there" (fix the URL now) from
//! "slow" (wait).

use std::error::Error;
use std::fmt;
use std::io;

/// What stopped a request before any HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Nothing listens on that host and port (TCP RST): a wrong URL, or the server
    /// is down.
    Refused,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Anything else (reset, unreachable network...).
    Other,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Refused => "connection refused",
            Transport::Dns => "DNS lookup failed",
            Transport::Tls => "TLS handshake failed",
            Transport::Other => "connection failed",
        })
    }
}

/// Classifies `e` and returns the innermost message of its chain, the one that
/// says why ("Connection refused (os error 111)"); the layers above it only repeat
/// the URL.
pub fn transport_failure(e: &(dyn Error + 'static)) -> (Transport, String) {
    let mut kind = Transport::Other;
    let mut message = e.to_string();
    let mut current: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionRefused {
                kind = Transport::Refused;
            }
        }
        // hyper's connector says "dns error"; getaddrinfo "failed to lookup address".
        let lower = text.to_ascii_lowercase();
        if kind == Transport::Other {
            if lower.starts_with("dns error") || lower.contains("lookup address") {
                kind = Transport::Dns;
            } else if lower.contains("certificate") || lower.contains("tls") {
                kind = Transport::Tls;
            }
        }
        message = text;
        current = err.source();
    }
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn reads_the_cause_from_the_chain() {
        let refused = Wrapper(
            "error sending request for url (http://127.0.0.1:9/)",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        let (kind, message) = transport_failure(&refused);
        assert_eq!(kind, Transport::Refused);
        assert_eq!(
            message,
            io::Error::from(io::ErrorKind::ConnectionRefused).to_string()
        );
        let dns = Wrapper(
            "dns error",
            io::Error::other("failed to lookup address information: Name or service not known"),
        );
        assert_eq!(transport_failure(&dns).0, Transport::Dns);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(transport_failure(&reset).0, Transport::Other);
        assert_eq!(Transport::Refused.to_string(), "connection refused");
    }

    #[tokio::test]
    async fn a_real_refused_connection_is_refused() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let e = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert_eq!(transport_failure(&e).0, Transport::Refused, "{e:?}");
        let e = reqwest::get("http://no-such-host.invalid/")
            .await
            .unwrap_err();
        assert_eq!(transport_failure(&e).0, Transport::Dns, "{e:?}");
    }
}
