//! The one static-file HTTP/1.1 server of the test bed, on 127.0.0.1: `GET` and
//! `HEAD` of the files under one directory and single byte ranges (`Range: bytes=...`,
//! for resumed downloads), nothing else. Every request is logged, and a caller can
//! switch on faults per path (a dropped connection, a truncated body, an error
//! status, no Range support) to see how a client copes. Used by `rehearse`, the
//! benchmarks and the integration tests alike; it stops when dropped.
//!
//! A QEMU guest on user-mode networking reaches it as 10.0.2.2:<port>.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path as sent, without the query, e.g. `/stable/amd64-usr/current/version.txt`.
    pub path: String,
    /// The `Range` header, if the client sent one.
    pub range: Option<String>,
    pub status: u16,
}

/// A misbehaviour for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    /// Send this many body bytes, then close the connection.
    DropAfter(u64),
    /// Never send the file's bytes from this offset on (every answer stops there).
    TruncateAt(u64),
    /// Answer with this status and an empty body.
    Status(u16),
    /// Answer with this redirect status and `Location`.
    Redirect(u16, String),
    /// Send this many body bytes, then nothing more while keeping the connection
    /// open (until the client hangs up, or a minute passes).
    StallAfter(u64),
    /// No `Content-Length`: the file's bytes over and over, until the client hangs up.
    Endless,
}

#[derive(Debug)]
struct PathFault {
    path: String,
    fault: Fault,
    /// How many more requests it applies to; `None`: all of them.
    remaining: Option<usize>,
}

/// What the connection threads share: the log and the switches.
#[derive(Debug, Default)]
struct State {
    requests: Vec<Request>,
    ignore_range: bool,
    faults: Vec<PathFault>,
}

impl State {
    /// The fault for the next request of `path`, used up by this call.
    fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let entry = self
            .faults
            .iter_mut()
            .find(|f| f.path == path && f.remaining != Some(0))?;
        if let Some(n) = entry.remaining.as_mut() {
            *n -= 1;
        }
        Some(entry.fault.clone())
    }
}

/// A running server. Dropping it stops it.
pub struct FileServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    accept_loop: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `root` on 127.0.0.1 and a free port.
    pub fn start(root: &Path) -> anyhow::Result<FileServer> {
        let root = root
            .canonicalize()
            .with_context(|| format!("opening {}", root.display()))?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a port on 127.0.0.1")?;
        let address = listener.local_addr().context("reading the bound address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let accept_loop = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let root = root.clone();
                    let state = state.clone();
                    std::thread::spawn(move || serve_connection(stream, &root, &state));
                }
            })
        };
        Ok(FileServer {
            address,
            stop,
            state,
            accept_loop: Some(accept_loop),
        })
    }

    /// `http://127.0.0.1:<port>`, the base URL on this host.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://10.0.2.2:<port>`, the base URL as a QEMU guest on user-mode
    /// networking sees it (QEMU's address for the host's loopback).
    pub fn url_for_guest(&self) -> String {
        format!("http://10.0.2.2:{}", self.address.port())
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the server state lock")
    }

    /// Every request answered so far, in order. A request is logged before its
    /// answer is sent, so a client that has its answer finds it here.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// The requests whose path ends with `suffix`.
    pub fn requests_for(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Answer every request with the whole file and 200, as servers without
    /// Range support do.
    pub fn ignore_range(&self, ignore: bool) {
        self.state().ignore_range = ignore;
    }

    /// The next `times` requests of `path` close the connection after `bytes` body
    /// bytes, although the headers announce more.
    pub fn drop_connection(&self, path: &str, bytes: u64, times: usize) {
        self.add_fault(path, Fault::DropAfter(bytes), Some(times));
    }

    /// Every request of `path` stops sending at file offset `offset` and closes the
    /// connection, although the headers announce more.
    pub fn truncate_body(&self, path: &str, offset: u64) {
        self.add_fault(path, Fault::TruncateAt(offset), None);
    }

    /// The next `times` requests of `path` are answered with `status`.
    pub fn fail_with_status(&self, path: &str, status: u16, times: usize) {
        self.add_fault(path, Fault::Status(status), Some(times));
    }

    /// The next `times` requests of `path` are redirected with `status` to `location`.
    pub fn redirect(&self, path: &str, status: u16, location: &str, times: usize) {
        self.add_fault(
            path,
            Fault::Redirect(status, location.to_owned()),
            Some(times),
        );
    }

    /// Every request of `path` gets `bytes` body bytes, then silence on an open
    /// connection: a stalled transfer.
    pub fn stall_after(&self, path: &str, bytes: u64) {
        self.add_fault(path, Fault::StallAfter(bytes), None);
    }

    /// Every request of `path` gets an endless body without a `Content-Length`.
    pub fn endless_body(&self, path: &str) {
        self.add_fault(path, Fault::Endless, None);
    }

    fn add_fault(&self, path: &str, fault: Fault, remaining: Option<usize>) {
        self.state().faults.push(PathFault {
            path: path.to_owned(),
            fault,
            remaining,
        });
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(accept_loop) = self.accept_loop.take() {
            let _ = accept_loop.join();
        }
    }
}

/// A parsed request line and the headers this server reads.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    method: String,
    target: String,
    range: Option<String>,
}

fn read_request(reader: &mut impl BufRead) -> Option<RequestHead> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut range = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.trim().eq_ignore_ascii_case("range") {
                        range = Some(value.trim().to_owned());
                    }
                }
            }
        }
    }
    Some(RequestHead {
        method,
        target,
        range,
    })
}

/// The file a request target names under `root`: percent-decoded, query dropped,
/// and only plain components (no `..`, no absolute paths).
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    let mut file = root.to_path_buf();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(file)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No range, or one this server does not do (several ranges): the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Outside the file.
    Unsatisfiable,
}

fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => last
            .parse::<u64>()
            .ok()
            .map(|n| (len.saturating_sub(n), len.saturating_sub(1), n > 0)),
        // bytes=N-: from N to the end.
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|start| (start, len.saturating_sub(1), true)),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(start), Ok(end)) if start <= end => {
                Some((start, end.min(len.saturating_sub(1)), true))
            }
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Whole,
        Some((start, end, nonempty)) if nonempty && start < len && start <= end => {
            RangeRequest::Part { start, end }
        }
        Some(_) => RangeRequest::Unsatisfiable,
    }
}

/// How one request is answered, decided before anything is sent.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A status with an empty body and these extra header lines.
    Empty {
        status: u16,
        reason: &'static str,
        headers: String,
    },
    /// Bytes `start..end` of the file (all of it for 200).
    Body {
        status: u16,
        start: u64,
        end: u64,
        len: u64,
    },
}

impl Answer {
    fn empty(status: u16, reason: &'static str) -> Answer {
        Answer::Empty {
            status,
            reason,
            headers: String::new(),
        }
    }

    fn status(&self) -> u16 {
        match self {
            Answer::Empty { status, .. } | Answer::Body { status, .. } => *status,
        }
    }
}

/// The answer to `request` for a file of `len` bytes (`None`: no such file),
/// given the path's fault and whether ranges are ignored.
fn decide(
    request: &RequestHead,
    len: Option<u64>,
    fault: Option<&Fault>,
    ignore_range: bool,
) -> Answer {
    match fault {
        Some(Fault::Status(status)) => return Answer::empty(*status, "Injected Fault"),
        Some(Fault::Redirect(status, location)) => {
            return Answer::Empty {
                status: *status,
                reason: "Injected Redirect",
                headers: format!("Location: {location}\r\n"),
            }
        }
        _ => {}
    }
    if request.method != "GET" && request.method != "HEAD" {
        return Answer::Empty {
            status: 405,
            reason: "Method Not Allowed",
            headers: "Allow: GET, HEAD\r\n".to_owned(),
        };
    }
    let Some(len) = len else {
        return Answer::empty(404, "Not Found");
    };
    let range = if ignore_range {
        None
    } else {
        request.range.as_deref()
    };
    match parse_range(range, len) {
        RangeRequest::Whole => Answer::Body {
            status: 200,
            start: 0,
            end: len,
            len,
        },
        RangeRequest::Part { start, end } => Answer::Body {
            status: 206,
            start,
            end: end + 1,
            len,
        },
        RangeRequest::Unsatisfiable => Answer::Empty {
            status: 416,
            reason: "Range Not Satisfiable",
            headers: format!("Content-Range: bytes */{len}\r\n"),
        },
    }
}

fn serve_connection(mut stream: TcpStream, root: &Path, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
    let Some(request) = stream
        .try_clone()
        .ok()
        .and_then(|s| read_request(&mut BufReader::new(s)))
    else {
        return;
    };
    let path = request
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let resolved = resolve(root, &request.target);
    let file = resolved.as_ref().and_then(|p| std::fs::File::open(p).ok());
    let len = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let (answer, fault, ignore_range) = {
        let mut state = state.lock().expect("the server state lock");
        let fault = state.take_fault(&path);
        let answer = match resolved {
            None => Answer::empty(400, "Bad Request"),
            Some(_) => decide(&request, len, fault.as_ref(), state.ignore_range),
        };
        state.requests.push(Request {
            method: request.method.clone(),
            path,
            range: request.range.clone(),
            status: answer.status(),
        });
        (answer, fault, state.ignore_range)
    };
    let body = file.filter(|_| request.method == "GET");
    let _ = respond(&mut stream, answer, body, fault, ignore_range);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Sends `answer`, with the bytes of `body` if it has one; a fault may cut the
/// body short.
fn respond(
    stream: &mut TcpStream,
    answer: Answer,
    body: Option<std::fs::File>,
    fault: Option<Fault>,
    ignore_range: bool,
) -> std::io::Result<()> {
    let (status, start, end, len) = match answer {
        Answer::Empty {
            status,
            reason,
            headers,
        } => {
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return stream.write_all(head.as_bytes());
        }
        Answer::Body {
            status,
            start,
            end,
            len,
        } => (status, start, end, len),
    };
    let (reason, range_header) = if status == 206 {
        let last = end - 1;
        (
            "Partial Content",
            format!("Content-Range: bytes {start}-{last}/{len}\r\n"),
        )
    } else {
        ("OK", String::new())
    };
    let accept = if ignore_range { "none" } else { "bytes" };
    let length = match fault {
        Some(Fault::Endless) => String::new(),
        _ => format!("Content-Length: {}\r\n", end - start),
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Accept-Ranges: {accept}\r\n{range_header}{length}Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let Some(mut file) = body else {
        return stream.flush();
    };
    let send_until = match &fault {
        Some(Fault::DropAfter(bytes)) | Some(Fault::StallAfter(bytes)) => (start + bytes).min(end),
        Some(Fault::TruncateAt(offset)) => (*offset).clamp(start, end),
        _ => end,
    };
    loop {
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut (&mut file).take(send_until - start), stream)?;
        if fault != Some(Fault::Endless) {
            break;
        }
    }
    stream.flush()?;
    if let Some(Fault::StallAfter(_)) = fault {
        wait_for_hang_up(stream);
    }
    Ok(())
}

/// Keeps a connection open without sending, until the client closes it (or a
/// minute passes, so no thread outlives a test for long).
fn wait_for_hang_up(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let mut byte = [0u8; 1];
    while std::time::Instant::now() < until {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Part { start: 0, end: 4 }
        );
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part { start: 5, end: 9 });
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part { start: 7, end: 9 });
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Part { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
    }

    #[test]
    fn resolves_only_paths_below_the_root() {
        let root = Path::new("/srv/mirror");
        assert_eq!(
            resolve(root, "/a/b%20c.txt?x=1"),
            Some(root.join("a/b c.txt"))
        );
        assert_eq!(resolve(root, "/a/./b"), Some(root.join("a/b")));
        assert_eq!(resolve(root, "/a/../../etc/passwd"), None);
        assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(resolve(root, "/a%zz"), None);
    }

    #[test]
    fn reads_the_range_header() {
        let text = "GET /x HTTP/1.1\r\nHost: h\r\nrange: bytes=1-2\r\n\r\n";
        let request = read_request(&mut std::io::Cursor::new(text)).unwrap();
        assert_eq!(
            request,
            RequestHead {
                method: "GET".to_owned(),
                target: "/x".to_owned(),
                range: Some("bytes=1-2".to_owned())
            }
        );
    }

    fn get(server: &FileServer, request: &str) -> String {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// The I/O half over a real loopback socket.
    #[test]
    fn serves_files_and_ranges_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file.txt"), "0123456789").unwrap();
        let server = FileServer::start(dir.path()).unwrap();
        assert!(server.url().starts_with("http://127.0.0.1:"));

        let whole = get(&server, "GET /sub/file.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(whole.starts_with("HTTP/1.1 200 OK\r\n"), "{whole}");
        assert!(whole.contains("Content-Length: 10\r\n") && whole.ends_with("\r\n\r\n0123456789"));
        let part = get(
            &server,
            "GET /sub/file.txt HTTP/1.1\r\nRange: bytes=7-\r\n\r\n",
        );
        assert!(
            part.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{part}"
        );
        assert!(part.contains("Content-Range: bytes 7-9/10\r\n") && part.ends_with("\r\n\r\n789"));
        let head = get(&server, "HEAD /sub/file.txt HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 10\r\n") && head.ends_with("\r\n\r\n"));
        assert!(get(&server, "GET /sub HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(&server, "GET /../etc/passwd HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(get(&server, "PUT /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let unsatisfiable = get(
            &server,
            "GET /sub/file.txt HTTP/1.1\r\nRange: bytes=10-\r\n\r\n",
        );
        assert!(unsatisfiable.starts_with("HTTP/1.1 416"), "{unsatisfiable}");

        let mut statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 200, 206, 400, 404, 405, 416]);
    }

    #[test]
    fn suffix_ranges_and_faults_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "0123456789").unwrap();
        let server = FileServer::start(dir.path()).unwrap();
        let ranged = |range: &str| {
            get(
                &server,
                &format!("GET /f HTTP/1.1\r\nRange: {range}\r\n\r\n"),
            )
        };

        let suffix = ranged("bytes=-3");
        assert!(suffix.starts_with("HTTP/1.1 206 "), "{suffix}");
        assert!(
            suffix.contains("Content-Range: bytes 7-9/10\r\n") && suffix.ends_with("\r\n\r\n789")
        );
        assert!(ranged("bytes=-0").starts_with("HTTP/1.1 416 "));

        server.fail_with_status("/f", 503, 2);
        assert!(ranged("bytes=0-").starts_with("HTTP/1.1 503 "));
        assert!(ranged("bytes=0-").starts_with("HTTP/1.1 503 "));
        assert!(ranged("bytes=0-").starts_with("HTTP/1.1 206 "));

        server.ignore_range(true);
        let whole = ranged("bytes=5-");
        assert!(whole.starts_with("HTTP/1.1 200 ") && whole.contains("Accept-Ranges: none\r\n"));
        assert!(whole.ends_with("\r\n\r\n0123456789"), "{whole}");
        server.ignore_range(false);

        server.drop_connection("/f", 4, 1);
        let dropped = ranged("bytes=2-");
        assert!(dropped.contains("Content-Length: 8\r\n") && dropped.ends_with("\r\n\r\n2345"));
        assert!(
            ranged("bytes=2-").ends_with("\r\n\r\n23456789"),
            "used up after one"
        );

        server.truncate_body("/f", 6);
        assert!(ranged("bytes=2-").ends_with("\r\n\r\n2345"));
        assert!(get(&server, "GET /f?x=1 HTTP/1.1\r\n\r\n").ends_with("\r\n\r\n012345"));

        let log = server.requests_for("/f");
        assert_eq!(log.len(), 10);
        assert_eq!(log[0].range.as_deref(), Some("bytes=-3"));
        assert_eq!(
            log.iter().map(|r| r.status).collect::<Vec<_>>(),
            [206, 416, 503, 503, 206, 200, 206, 206, 206, 200]
        );
        server.clear_requests();
        assert_eq!(server.requests(), []);
    }
}
