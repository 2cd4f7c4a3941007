//! A closed-loop HTTP/1.1 load generator: `concurrency` clients each posting one multipart
//! upload at a time over a keep-alive connection for a fixed window, recording every latency
//! and checking each answer's status against the one the upload expects (200 for a good
//! image, 400 for a hostile one).
//!
//! Like wrk or h2load, it sends requests serialised once up front and reads each answer only
//! as far as its status line, headers and `Content-Length` bytes: it shares the cores with
//! the server it measures, so every microsecond it spends is one the server loses. (A
//! reqwest client spent 29–57 µs of CPU per request here at concurrency 16, this one 12–17.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cpu::CpuPerRequest;

/// What one load level measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests that failed or answered another status than their upload expects.
    pub errors: usize,
    /// Hostile uploads refused with the status they expect (not counted in the latencies).
    #[serde(default)]
    pub refused_as_expected: usize,
    /// Requests sent.
    pub requests: usize,
    /// Share of requests the server itself handled within 20 ms (kiln-serve's histogram).
    pub server_share_under_20ms: Option<f64>,
    /// Where the CPU went, per request (kiln-serve only; absent in older results).
    #[serde(default)]
    pub cpu_per_request: Option<CpuPerRequest>,
}

/// One file to post and the status its answer must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file's bytes.
    pub file: Vec<u8>,
    /// The answer's expected status: 200 for an image the model answers, 4xx for one the
    /// server must refuse.
    pub expect: u16,
}

impl Upload {
    /// An image the server must answer with 200.
    pub fn good(file: Vec<u8>) -> Self {
        Self { file, expect: 200 }
    }
}

/// The multipart boundary of the pre-built request bodies.
pub const BOUNDARY: &str = "kiln-bench-boundary-7d1f3a";

/// One multipart/form-data body carrying `file` as field `field`, built once so that the
/// load generator spends its CPU on sending, not on encoding.
pub fn multipart_body(field: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"digit.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Where a plain `http://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// The request target, e.g. `/`.
    path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`; port 80 when none is given.
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: the load generator speaks plain http:// only"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = if path.is_empty() { "/" } else { path };
        Ok(Self {
            authority,
            path: path.to_string(),
        })
    }
}

/// A whole `POST` request, head and multipart body, carrying `file` as field `field`.
fn post_request(target: &Target, field: &str, file: &[u8]) -> Vec<u8> {
    let body = multipart_body(field, file);
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// The parts of an answer the load generator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// HTTP status code.
    status: u16,
    /// Whether the connection may carry the next request.
    keep_alive: bool,
}

/// The head of an answer at the start of `buf`: the answer, the head's length and the body's
/// (`None`: until the connection closes). `Ok(None)` while the head is incomplete. A chunked
/// body is an error: its end is not read here, and reading a kept-open connection to its
/// close would wait for ever.
fn parse_head(buf: &[u8]) -> Result<Option<(Answer, usize, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).map_err(|e| format!("bad answer: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|te| te != "identity") {
        return Err("a chunked answer (the load generator reads Content-Length bodies)".into());
    }
    let body_len = match header("content-length") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| format!("bad Content-Length {v:?}"))?),
        None => None,
    };
    let connection = header("connection");
    let keep_alive = body_len.is_some()
        && match response.version {
            Some(1) => connection.as_deref() != Some("close"),
            _ => connection.as_deref() == Some("keep-alive"),
        };
    let status = response.code.ok_or("answer without a status")?;
    Ok(Some((Answer { status, keep_alive }, head_len, body_len)))
}

/// Sends `request` on `stream` and reads the whole answer into `buf`.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<Answer, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    buf.clear();
    let (answer, head_len, body_len) = loop {
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed before the answer's head".into());
        }
        if let Some(head) = parse_head(buf)? {
            break head;
        }
    };
    match body_len {
        Some(n) => {
            while buf.len() < head_len + n {
                if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed inside the answer's body".into());
                }
            }
        }
        None => while stream.read_buf(buf).await.map_err(|e| e.to_string())? > 0 {},
    }
    Ok(answer)
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latencies of the 200 answers, ms.
    latencies: Vec<f64>,
    /// Requests that failed or got another status than expected.
    errors: usize,
    /// Hostile uploads refused with their expected status.
    refused: usize,
}

/// One client: posts `requests` (each with its expected status) in turn, from `first` on,
/// until `window` has passed since `started`.
async fn client(
    authority: String,
    requests: Arc<Vec<(Vec<u8>, u16)>>,
    first: usize,
    step: usize,
    started: Instant,
    window: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut connection: Option<TcpStream> = None;
    let mut i = first;
    while started.elapsed() < window {
        let t = Instant::now();
        let stream = match connection.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(&authority).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    connection.insert(s)
                }
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        let (request, expect) = &requests[i % requests.len()];
        i += step;
        match exchange(stream, request, &mut buf).await {
            Ok(answer) => {
                match (answer.status == *expect, answer.status == 200) {
                    (true, true) => tally.latencies.push(t.elapsed().as_secs_f64() * 1e3),
                    (true, false) => tally.refused += 1,
                    (false, _) => tally.errors += 1,
                }
                if !answer.keep_alive {
                    connection = None;
                }
            }
            Err(_) => {
                tally.errors += 1;
                connection = None;
            }
        }
    }
    tally
}

/// Drives the plain-HTTP `url` with `concurrency` clients for `window`, each posting one of
/// `uploads` in turn as multipart field `field`.
pub async fn drive(
    url: &str,
    field: &str,
    uploads: &[Upload],
    concurrency: usize,
    window: Duration,
) -> Result<LoadResult, String> {
    let target = Target::parse(url)?;
    let requests: Arc<Vec<(Vec<u8>, u16)>> = Arc::new(
        uploads
            .iter()
            .map(|u| (post_request(&target, field, &u.file), u.expect))
            .collect(),
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let task = client(
                target.authority.clone(),
                requests.clone(),
                worker,
                concurrency,
                started,
                window,
            );
            tokio::spawn(task)
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut errors, mut refused) = (0, 0);
    for t in tasks {
        let tally = t.await.map_err(|e| format!("a load client failed: {e}"))?;
        latencies.extend(tally.latencies);
        errors += tally.errors;
        refused += tally.refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    Ok(LoadResult {
        concurrency,
        requests_per_second: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        errors,
        refused_as_expected: refused,
        requests: latencies.len() + errors + refused,
        server_share_under_20ms: None,
        cpu_per_request: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn targets_name_the_address_and_the_request_path() {
        let t = Target::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("127.0.0.1:8081", "/"));
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("example.com:80", "/"));
        let t = Target::parse("http://h:1/predict?detail=1").unwrap();
        assert_eq!(t.path, "/predict?detail=1");
        assert!(Target::parse("https://h/").unwrap_err().contains("plain http"));
        assert!(Target::parse("http:///x").unwrap_err().contains("no host"));
    }

    #[test]
    fn answer_heads_give_status_body_length_and_whether_the_connection_stays() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n";
        let whole = [&head[..], b"[{\"image\": 7}]"].concat();
        let (answer, head_len, body) = parse_head(&whole).unwrap().unwrap();
        assert_eq!(
            answer,
            Answer {
                status: 200,
                keep_alive: true
            }
        );
        assert_eq!((head_len, body), (head.len(), Some(15)));

        let close = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n";
        assert_eq!(
            parse_head(close).unwrap().unwrap().0,
            Answer {
                status: 429,
                keep_alive: false
            }
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n";
        assert!(!parse_head(old).unwrap().unwrap().0.keep_alive);
        let old_kept = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n";
        assert!(parse_head(old_kept).unwrap().unwrap().0.keep_alive);
        // No length: the body runs to the end of the connection.
        let (answer, _, body) = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((answer.keep_alive, body), (false, None));

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).unwrap_err().contains("chunked"));

        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    /// What the test server saw and answered.
    #[derive(Default)]
    struct Served {
        connections: AtomicUsize,
        ok: AtomicUsize,
        failed: AtomicUsize,
    }

    /// Answers each request on `conn` with 200 if its multipart file is `good`, 400 if it is
    /// `fail`, after checking that the whole body arrived; closes the connection after every third.
    async fn serve_connection(mut conn: TcpStream, served: Arc<Served>) {
        let mut buf = Vec::new();
        for n in 1.. {
            let (head_len, body_len) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut request = httparse::Request::new(&mut headers);
                if let Ok(httparse::Status::Complete(len)) = request.parse(&buf) {
                    let length = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"));
                    let length = std::str::from_utf8(length.unwrap().value).unwrap().parse::<usize>();
                    assert_eq!(request.path, Some("/predict"));
                    break (len, length.unwrap());
                }
                if conn.read_buf(&mut buf).await.unwrap() == 0 {
                    return;
                }
            };
            while buf.len() < head_len + body_len {
                assert!(conn.read_buf(&mut buf).await.unwrap() > 0, "the body was cut short");
            }
            let body: Vec<u8> = buf.drain(..head_len + body_len).skip(head_len).collect();
            let good = body == multipart_body("image", b"good");
            assert!(
                good || body == multipart_body("image", b"fail"),
                "a body arrived changed"
            );
            let (status, counter) = if good { (200, &served.ok) } else { (400, &served.failed) };
            let close = if n % 3 == 0 { "Connection: close\r\n" } else { "" };
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{close}\r\nok");
            conn.write_all(answer.as_bytes()).await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            if !close.is_empty() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn every_answer_is_counted_across_kept_and_reopened_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/predict", listener.local_addr().unwrap());
        let served = Arc::new(Served::default());
        let server = served.clone();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                server.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(conn, server.clone()));
            }
        });
        // "fail" is answered 400: an error where 200 is expected, as expected where 400 is.
        let uploads = [
            Upload::good(b"good".to_vec()),
            Upload::good(b"fail".to_vec()),
            Upload {
                file: b"fail".to_vec(),
                expect: 400,
            },
            Upload::good(b"good".to_vec()),
        ];
        let r = drive(&url, "image", &uploads, 3, Duration::from_millis(300))
            .await
            .unwrap();
        let (ok, failed) = (served.ok.load(Ordering::SeqCst), served.failed.load(Ordering::SeqCst));
        assert!(ok > 10 && failed > 10, "{ok} ok, {failed} failed");
        assert_eq!(r.requests, ok + failed);
        assert_eq!(r.errors + r.refused_as_expected, failed);
        // Three clients stepping by three through four uploads meet each one equally often.
        assert!(r.errors.abs_diff(r.refused_as_expected) <= 3, "{r:?}");
        assert!(r.errors > 3 && r.refused_as_expected > 3, "{r:?}");
        assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
        // Every third answer closed its connection, so the clients had to reconnect.
        assert!(served.connections.load(Ordering::SeqCst) >= r.requests / 3);
    }
}
