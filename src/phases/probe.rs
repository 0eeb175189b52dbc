//! The health check's HTTP: one plain `GET`, and a loop that retries it until the answer
//! is right.
//!
//! Probes go to the proxy on a loopback port with the site's `Host` header, or straight to
//! a release, so plain HTTP/1.1 over a [`TcpStream`] is all they need: no TLS, no
//! redirects, no connection reuse. The client is written here rather than pulled in (an
//! HTTP crate brings a dozen more for features a probe never uses); it reads the status
//! line, the headers, and the start of the body (`Content-Length`, chunked, or up to the
//! end), never more than 64 KiB of it.
//!
//! This module only asks; what a healthy answer is, the caller says.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Stopped, Watch};

/// The most body bytes read.
const MAX_BODY: usize = 64 * 1024;

/// The most bytes of status line and headers read.
const MAX_HEAD: usize = 64 * 1024;

/// The most characters of [`Response::first_line`].
const MAX_FIRST_LINE: usize = 200;

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers as they came, names as the server spelled them.
    pub headers: Vec<(String, String)>,
    /// The body's first line, trimmed, at most 200 characters (invalid UTF-8 replaced).
    pub first_line: String,
}

impl Response {
    /// The value of the first header named `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One `GET`: where it goes and what it says.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// An `http://HOST[:PORT][/PATH]` URL.
    pub url: &'a str,
    /// The `Host` header to send instead of the URL's (`site.localhost` through the
    /// proxy).
    pub host: Option<&'a str>,
    /// More headers to send.
    pub headers: &'a [(&'a str, &'a str)],
    /// How long the whole exchange may take, connecting included.
    pub timeout: Duration,
}

/// Sends `GET url` and reads the answer; see [`Request`] for the arguments.
///
/// # Errors
///
/// What went wrong, as a phrase: a URL that is not `http://`, a name that does not
/// resolve, a refused connection, a timeout, an answer that is not HTTP/1.x.
pub fn get(url: &str, host: Option<&str>, headers: &[(&str, &str)], timeout: Duration) -> Result<Response, String> {
    Request { url, host, headers, timeout }.get()
}

/// Why [`until`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    /// The watch said stop.
    #[error("stopped: {0}")]
    Stopped(String),
    /// The deadline passed; the last try got this answer, which did not satisfy.
    #[error("the last answer was status {}", .0.status)]
    Answer(Response),
    /// The deadline passed; the last try got no answer, for this reason.
    #[error("{0}")]
    NoAnswer(String),
}

impl From<Stopped> for Unmet {
    fn from(s: Stopped) -> Self {
        Unmet::Stopped(s.0)
    }
}

impl Request<'_> {
    /// Sends the request and reads the answer.
    ///
    /// # Errors
    ///
    /// As [`get`].
    pub fn get(&self) -> Result<Response, String> {
        let deadline = Instant::now() + self.timeout;
        let target = Target::parse(self.url)?;
        let host = self.host.unwrap_or(&target.authority);
        let breaks = |t: &str| t.contains(['\r', '\n']);
        if breaks(host) || self.headers.iter().any(|(n, v)| breaks(n) || breaks(v) || n.contains(':')) {
            return Err("a header name or value holds a line break or a colon".to_owned());
        }
        let mut request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", target.path);
        for (name, value) in self.headers {
            if name.eq_ignore_ascii_case("host") {
                continue;
            }
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("User-Agent: trueup\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        let stream = connect(&target, deadline)?;
        let fail = |e: io::Error| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                format!("`{}` did not answer within {}", self.url, super::human(self.timeout))
            } else {
                format!("`{}`: {e}", self.url)
            }
        };
        let mut conn = Conn { reader: BufReader::new(stream), deadline };
        conn.reader.get_mut().write_all(request.as_bytes()).map_err(fail)?;
        conn.read_response().map_err(|e| match e {
            Bad::Io(e) => fail(e),
            Bad::Http(why) => format!("`{}` answered with {why}", self.url),
        })
    }
}

/// Sends `request` until `ok` holds for the answer or `within` has passed, waiting 100 ms
/// after the first try and twice as long after each next one, up to 2 s. The watch is
/// ticked between tries and while waiting, at least once a second; a try itself takes up
/// to `request.timeout`.
///
/// # Errors
///
/// [`Unmet::Stopped`] when the watch says so; otherwise, once `within` has passed,
/// [`Unmet::Answer`] with the last answer or [`Unmet::NoAnswer`] with the last error.
pub fn until(
    request: &Request<'_>,
    within: Duration,
    mut ok: impl FnMut(&Response) -> bool,
    watch: &mut dyn Watch,
) -> Result<Response, Unmet> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(100);
    // The last answer that came, kept: a last try cut short by the deadline says less.
    let mut answered = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = Request { timeout: request.timeout.min(left.max(Duration::from_millis(1))), ..*request }.get();
        match last {
            Ok(response) if ok(&response) => return Ok(response),
            Ok(response) => answered = Some(response),
            Err(e) if Instant::now() >= deadline => {
                return Err(answered.map_or(Unmet::NoAnswer(e), Unmet::Answer));
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Unmet::Answer(answered.expect("the last try answered")));
        }
        watch.tick()?;
        let mut sleep = pause.min(deadline.saturating_duration_since(Instant::now()));
        while !sleep.is_zero() {
            let step = sleep.min(Duration::from_millis(500));
            std::thread::sleep(step);
            sleep -= step;
            watch.tick()?;
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// An `http://` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host` or `host:port`, as the URL wrote it: the default `Host` header.
    authority: String,
    /// The host to connect to, without IPv6 brackets.
    host: String,
    port: u16,
    /// The path and query, at least `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("`{url}` is not a URL trueup can probe: {why}");
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(bad("only `http://` is supported"));
        };
        let (authority, path) = rest.find(['/', '?']).map_or((rest, "/"), |i| rest.split_at(i));
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.is_empty() || authority.contains('@') || path.contains(|c: char| c.is_whitespace()) {
            return Err(bad("no host, a user, or a space in it"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad("a port that is not a number"))?,
        };
        Ok(Target { authority: authority.to_owned(), host: host.to_owned(), port, path })
    }
}

/// Connects to the first address of `target` that answers before `deadline`.
fn connect(target: &Target, deadline: Instant) -> Result<TcpStream, String> {
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("`{}` does not resolve: {e}", target.host))?;
    let mut last = format!("`{}` has no address", target.host);
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("could not connect to `{addr}` in time"));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("could not connect to `{addr}`: {e}"),
        }
    }
    Err(last)
}

/// Why an answer could not be read.
enum Bad {
    Io(io::Error),
    Http(String),
}

impl From<io::Error> for Bad {
    fn from(e: io::Error) -> Self {
        Bad::Io(e)
    }
}

/// A connection, read with the time left before its deadline.
struct Conn {
    reader: BufReader<TcpStream>,
    deadline: Instant,
}

impl Conn {
    /// Sets the socket's read timeout to the time left; none left is a timeout.
    fn arm(&mut self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.reader.get_ref().set_read_timeout(Some(left))
    }

    /// One line without its `\r\n`, at most `budget` bytes, or `None` at the end.
    fn line(&mut self, budget: &mut usize) -> Result<Option<String>, Bad> {
        let mut line = Vec::new();
        loop {
            self.arm()?;
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if available.is_empty() {
                return Ok(if line.is_empty() { None } else { Some(String::from_utf8_lossy(&line).into_owned()) });
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if take > *budget {
                return Err(Bad::Http("a head past 64 KiB".to_owned()));
            }
            *budget -= take;
            line.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if done {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    /// Up to `n` bytes of the body (fewer at its end).
    fn bytes(&mut self, n: usize, into: &mut Vec<u8>) -> Result<(), Bad> {
        let start = into.len();
        while into.len() - start < n {
            self.arm()?;
            let mut chunk = vec![0u8; (n - (into.len() - start)).min(16 * 1024)];
            match self.reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(got) => into.extend_from_slice(&chunk[..got]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_response(&mut self) -> Result<Response, Bad> {
        let mut budget = MAX_HEAD;
        // Informational answers (`100 Continue`) come before the real one.
        let (status, headers) = loop {
            let (status, headers) = self.head(&mut budget)?;
            if !(100..200).contains(&status) || status == 101 {
                break (status, headers);
            }
        };
        let response = Response { status, headers, first_line: String::new() };
        let body = if status == 204 || status == 304 { Vec::new() } else { self.body(&response)? };
        let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
        let first_line = String::from_utf8_lossy(first).trim().chars().take(MAX_FIRST_LINE).collect();
        Ok(Response { first_line, ..response })
    }

    fn head(&mut self, budget: &mut usize) -> Result<(u16, Vec<(String, String)>), Bad> {
        let status_line = self.line(budget)?.ok_or_else(|| Bad::Http("nothing".to_owned()))?;
        let mut parts = status_line.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let status = match code.parse::<u16>() {
            Ok(s) if version.starts_with("HTTP/1.") && (100..1000).contains(&s) => s,
            _ => return Err(Bad::Http(format!("`{}`, not an HTTP/1.x status line", status_line.escape_debug()))),
        };
        let mut headers = Vec::new();
        loop {
            let line = self.line(budget)?.ok_or_else(|| Bad::Http("headers cut short".to_owned()))?;
            if line.is_empty() {
                return Ok((status, headers));
            }
            let (name, value) = line.split_once(':').ok_or_else(|| Bad::Http(format!("a bad header `{line}`")))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }

    /// The start of the body: enough for its first line, never past [`MAX_BODY`].
    fn body(&mut self, response: &Response) -> Result<Vec<u8>, Bad> {
        let chunked =
            response.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            let mut budget = MAX_HEAD;
            while body.len() < MAX_BODY && !body.contains(&b'\n') {
                let size = self.line(&mut budget)?.ok_or_else(|| Bad::Http("a chunked body cut short".to_owned()))?;
                let size = size.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| Bad::Http(format!("a bad chunk size `{}`", size.escape_debug())))?;
                if size == 0 {
                    break;
                }
                let want = size.min(MAX_BODY - body.len());
                self.bytes(want, &mut body)?;
                if want < size {
                    break;
                }
                self.line(&mut budget)?;
            }
            return Ok(body);
        }
        let length = response.header("content-length").and_then(|l| l.parse::<usize>().ok());
        let limit = length.unwrap_or(MAX_BODY).min(MAX_BODY);
        // Read in steps and stop at the first newline: the rest is not needed.
        while body.len() < limit && !body.contains(&b'\n') {
            let before = body.len();
            self.bytes((limit - body.len()).min(4096), &mut body).or_else(|e| match e {
                // A server that neither closes nor says a length: keep what came.
                Bad::Io(e) if !body.is_empty() && is_timeout(&e) => Ok(()),
                e => Err(e),
            })?;
            if body.len() == before {
                break;
            }
        }
        Ok(body)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let t = Target::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1", 8080, "/health?x=1")
        );
        let t = Target::parse("http://site.localhost").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("site.localhost", 80, "/"));
        let t = Target::parse("http://[::1]:81?q").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 81, "/?q"));
        assert!(Target::parse("https://x/").unwrap_err().contains("only `http://`"));
        assert!(Target::parse("http://x:y/").is_err());
        assert!(Target::parse("http:///").is_err());
    }
}
