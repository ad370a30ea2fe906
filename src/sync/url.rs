//! Where a peer is: `tcp://host:port`, `tls://host:port`,
//! `ws://host:port/path` or `wss://host:port/path` ([`PeerUrl`]). A bare
//! `host:port` is TCP, as before URLs.
//!
//! Invariants: a parsed URL always has a host and a port (`ws` and `wss`
//! default to 80 and 443); only WebSocket URLs have a path, and theirs
//! starts with `/`; `url.to_string().parse()` gives `url` back (a bare
//! `host:port` displays as `tcp://host:port`). The parser accepts no user
//! info, fragment or whitespace, so what is printed is what is dialled.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// How a connection to a peer is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// Raw TCP: meldb frames on the socket.
    Tcp,
    /// TLS over TCP, frames inside.
    Tls,
    /// WebSocket over TCP, one binary message per frame.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Scheme {
    /// The scheme's word in a URL (`tcp`, `tls`, `ws`, `wss`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// Whether TLS carries it (`tls`, `wss`).
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// Whether WebSocket carries it (`ws`, `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    fn from_word(word: &str) -> Option<Scheme> {
        Some(match word {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        })
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Ws => Some(80),
            Scheme::Wss => Some(443),
            Scheme::Tcp | Scheme::Tls => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's address with its transport, parsed from `tcp://`, `tls://`,
/// `ws://`, `wss://` or a bare `host:port`.
///
/// ```
/// use meldb::sync::{PeerUrl, Scheme};
/// let url: PeerUrl = "wss://relay.example/sync".parse()?;
/// assert_eq!((url.scheme(), url.host(), url.port(), url.path()), (Scheme::Wss, "relay.example", 443, "/sync"));
/// assert_eq!("127.0.0.1:7420".parse::<PeerUrl>()?.to_string(), "tcp://127.0.0.1:7420");
/// # Ok::<(), meldb::sync::UrlError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

/// Why a peer URL was refused, with the URL.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UrlError {
    /// A scheme other than the four.
    #[error("{url:?}: unknown scheme {scheme:?} (use tcp://, tls://, ws:// or wss://, or HOST:PORT for TCP)")]
    UnknownScheme {
        /// The URL.
        url: String,
        /// What stood before `://`.
        scheme: String,
    },
    /// No host before the port.
    #[error("{url:?}: no host (write HOST:PORT, e.g. relay.example:7420)")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// A host with characters no host name or address has.
    #[error("{url:?}: {host:?} is not a host name or IP address")]
    BadHost {
        /// The URL.
        url: String,
        /// The host part.
        host: String,
    },
    /// No port where the scheme has no default.
    #[error("{url:?}: no port (write HOST:PORT, e.g. relay.example:7420)")]
    NoPort {
        /// The URL.
        url: String,
    },
    /// A port that is not a number from 0 to 65535.
    #[error("{url:?}: port {port:?} is not a number from 0 to 65535")]
    BadPort {
        /// The URL.
        url: String,
        /// The port part.
        port: String,
    },
    /// A path on a URL whose transport has none.
    #[error("{url:?}: a {scheme}:// URL has no path (only ws:// and wss:// do)")]
    PathNotAllowed {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: Scheme,
    },
    /// A path with characters a request line cannot carry.
    #[error("{url:?}: path {path:?} may hold no spaces, control characters, non-ASCII or '#'")]
    BadPath {
        /// The URL.
        url: String,
        /// The path.
        path: String,
    },
}

impl PeerUrl {
    /// A URL from its parts; `path` is ignored for TCP and TLS and becomes
    /// `/` when empty for WebSocket.
    pub fn new(
        scheme: Scheme,
        host: impl Into<String>,
        port: u16,
        path: impl Into<String>,
    ) -> Result<PeerUrl, UrlError> {
        let path = path.into();
        let host = host.into();
        let shown = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let url = format!("{scheme}://{shown}{path}");
        check_host(&url, &host)?;
        let path = if scheme.is_websocket() {
            check_path(&url, if path.is_empty() { "/" } else { &path })?
        } else {
            String::new()
        };
        Ok(PeerUrl {
            scheme,
            host,
            port,
            path,
        })
    }

    /// The transport.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name or IP address (without brackets), also the name a
    /// TLS certificate must be valid for.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WebSocket path (`/` at least); empty for TCP and TLS.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port` (IPv6 hosts in brackets), what a socket connects to.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same URL with another port (the one a listener on port 0 got).
    pub fn with_port(&self, port: u16) -> PeerUrl {
        PeerUrl {
            port,
            ..self.clone()
        }
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

impl FromStr for PeerUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<PeerUrl, UrlError> {
        let (scheme, rest) = match url.split_once("://") {
            Some((word, rest)) => {
                let scheme = Scheme::from_word(word).ok_or_else(|| UrlError::UnknownScheme {
                    url: url.to_string(),
                    scheme: word.to_string(),
                })?;
                (scheme, rest)
            }
            None => (Scheme::Tcp, url),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && !scheme.is_websocket() {
            return Err(UrlError::PathNotAllowed {
                url: url.to_string(),
                scheme,
            });
        }
        let (host, port) = split_authority(url, authority)?;
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| UrlError::BadPort {
                url: url.to_string(),
                port: p.to_string(),
            })?,
            None => scheme.default_port().ok_or_else(|| UrlError::NoPort {
                url: url.to_string(),
            })?,
        };
        check_host(url, host)?;
        let path = if scheme.is_websocket() {
            check_path(url, if path.is_empty() { "/" } else { path })?
        } else {
            String::new()
        };
        Ok(PeerUrl {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }
}

/// Splits `host:port` or `[v6]:port`; the port is `None` when absent.
fn split_authority<'a>(
    url: &str,
    authority: &'a str,
) -> Result<(&'a str, Option<&'a str>), UrlError> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| UrlError::BadHost {
            url: url.to_string(),
            host: authority.to_string(),
        })?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(UrlError::BadHost {
                    url: url.to_string(),
                    host: authority.to_string(),
                }),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn check_host(url: &str, host: &str) -> Result<(), UrlError> {
    if host.is_empty() {
        return Err(UrlError::NoHost {
            url: url.to_string(),
        });
    }
    let v6 = host.contains(':');
    let ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || (v6 && c == ':'));
    if ok {
        Ok(())
    } else {
        Err(UrlError::BadHost {
            url: url.to_string(),
            host: host.to_string(),
        })
    }
}

fn check_path(url: &str, path: &str) -> Result<String, UrlError> {
    if path.starts_with('/') && path.chars().all(|c| c.is_ascii_graphic() && c != '#') {
        Ok(path.to_string())
    } else {
        Err(UrlError::BadPath {
            url: url.to_string(),
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<PeerUrl, UrlError> {
        s.parse()
    }

    #[test]
    fn each_scheme_and_the_bare_form() -> Result<(), UrlError> {
        let bare = parse("127.0.0.1:7420")?;
        assert_eq!(
            (bare.scheme(), bare.host(), bare.port()),
            (Scheme::Tcp, "127.0.0.1", 7420)
        );
        assert_eq!(bare.to_string(), "tcp://127.0.0.1:7420");
        assert_eq!(parse("tcp://127.0.0.1:7420")?, bare);
        let tls = parse("tls://relay.example:7443")?;
        assert_eq!((tls.scheme(), tls.path()), (Scheme::Tls, ""));
        assert_eq!(tls.authority(), "relay.example:7443");
        let ws = parse("ws://localhost:8080")?;
        assert_eq!((ws.port(), ws.path()), (8080, "/"));
        let wss = parse("wss://relay.example/sync/v1?team=a")?;
        assert_eq!((wss.port(), wss.path()), (443, "/sync/v1?team=a"));
        let v6 = parse("tls://[::1]:7443")?;
        assert_eq!(
            (v6.host(), v6.authority()),
            ("::1", "[::1]:7443".to_string())
        );
        assert_eq!(v6.to_string(), "tls://[::1]:7443");
        Ok(())
    }

    #[test]
    fn clear_errors_name_the_url_and_the_part() {
        let cases = [
            ("http://relay:80", "unknown scheme \"http\""),
            ("tls://relay.example", "no port"),
            ("relay.example", "no port"),
            (":7420", "no host"),
            ("tcp://relay:99999", "port \"99999\""),
            ("tcp://relay:x", "port \"x\""),
            ("tcp://relay:7420/path", "has no path"),
            ("ws://user@relay:80/", "not a host name"),
            ("ws://relay:80/a b", "path \"/a b\""),
            ("ws://relay:80/#frag", "'#'"),
            ("tls://[::1", "not a host name"),
        ];
        for (url, needle) in cases {
            let err = parse(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
        }
    }

    fn any_url() -> impl Strategy<Value = PeerUrl> {
        let host = prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,8}){0,2}",
            "(25[0-5]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|1[0-9]{2}|[1-9]?[0-9])){3}",
            "[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}",
        ];
        let scheme = prop_oneof![
            Just(Scheme::Tcp),
            Just(Scheme::Tls),
            Just(Scheme::Ws),
            Just(Scheme::Wss)
        ];
        (
            scheme,
            host,
            any::<u16>(),
            "(/[A-Za-z0-9._~%!$&'()*+,;=:@?-]{0,8}){0,3}",
        )
            .prop_filter_map("valid parts", |(scheme, host, port, path)| {
                PeerUrl::new(scheme, host, port, path).ok()
            })
    }

    proptest! {
        #[test]
        fn parse_after_display_is_the_identity(url in any_url()) {
            let shown = url.to_string();
            prop_assert_eq!(parse(&shown), Ok(url.clone()), "{}", shown);
        }

        #[test]
        fn any_string_parses_or_errs_without_panicking(s in "\\PC{0,40}") {
            if let Ok(url) = parse(&s) {
                prop_assert_eq!(parse(&url.to_string()), Ok(url));
            }
        }
    }
}
