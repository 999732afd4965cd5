//! The one static-file HTTP/1.1 server, read-only and bound to 127.0.0.1: `GET` and
//! `HEAD` of the files it was given (a directory, or an exact map of URL paths to
//! files) and single byte ranges (`Range: bytes=...`, for resumed downloads),
//! nothing else. Every request is logged with its User-Agent before it is answered.
//! A caller may alter answers per request through [`Alterations`] (the test bed's
//! fault modes); the build serves its verified artifacts with none. It stops when
//! dropped.
//!
//! A QEMU guest on user-mode networking reaches it as 10.0.2.2:<port>.

use std::collections::BTreeMap;
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
    /// The `User-Agent` header, if the client sent one: who asked (the xtask, curl, Ansible).
    pub user_agent: Option<String>,
    pub status: u16,
}

/// What the server hands out.
#[derive(Clone, Debug)]
pub enum Files {
    /// Every file below this directory.
    Directory(PathBuf),
    /// Exactly these files, by URL path without the leading `/`.
    Map(BTreeMap<String, PathBuf>),
}

/// A change to how one request is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alteration {
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

/// Decides, per request, whether and how an answer is altered.
pub trait Alterations: Send + Sync {
    /// The alteration for this request of `path` (as sent, without the query).
    fn for_request(&self, path: &str) -> Option<Alteration>;
    /// Whether `Range` headers are ignored (the whole file, 200), as some servers do.
    fn ignore_range(&self) -> bool;
}

/// No alteration at all.
struct Plain;

impl Alterations for Plain {
    fn for_request(&self, _: &str) -> Option<Alteration> {
        None
    }
    fn ignore_range(&self) -> bool {
        false
    }
}

/// A running server. Dropping it stops it.
pub struct FileServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    accept_loop: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `files` as they are, on 127.0.0.1 and a free port.
    pub fn start(files: Files) -> anyhow::Result<FileServer> {
        FileServer::start_altered(files, Arc::new(Plain))
    }

    /// Serves `files` with answers altered by `alterations`.
    pub fn start_altered(
        files: Files,
        alterations: Arc<dyn Alterations>,
    ) -> anyhow::Result<FileServer> {
        let files = match files {
            Files::Directory(root) => Files::Directory(
                root.canonicalize()
                    .with_context(|| format!("opening {}", root.display()))?,
            ),
            map => map,
        };
        let files = Arc::new(files);
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a port on 127.0.0.1")?;
        let address = listener.local_addr().context("reading the bound address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let accept_loop = {
            let stop = stop.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let files = files.clone();
                    let log = log.clone();
                    let alterations = alterations.clone();
                    std::thread::spawn(move || {
                        serve_connection(stream, &files, &log, alterations.as_ref())
                    });
                }
            })
        };
        Ok(FileServer {
            address,
            stop,
            log,
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

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.log.lock().expect("the server log lock")
    }

    /// Every request answered so far, in order. A request is logged before its
    /// answer is sent, so a client that has its answer finds it here.
    pub fn requests(&self) -> Vec<Request> {
        self.log().clone()
    }

    /// The requests whose path ends with `suffix`.
    pub fn requests_for(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.log().clear();
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
    user_agent: Option<String>,
}

fn read_request(reader: &mut impl BufRead) -> Option<RequestHead> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut range = None;
    let mut user_agent = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    let name = name.trim();
                    if name.eq_ignore_ascii_case("range") {
                        range = Some(value.trim().to_owned());
                    } else if name.eq_ignore_ascii_case("user-agent") {
                        user_agent = Some(value.trim().to_owned());
                    }
                }
            }
        }
    }
    Some(RequestHead {
        method,
        target,
        range,
        user_agent,
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
    fault: Option<&Alteration>,
    ignore_range: bool,
) -> Answer {
    match fault {
        Some(Alteration::Status(status)) => return Answer::empty(*status, "Injected Fault"),
        Some(Alteration::Redirect(status, location)) => {
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

fn serve_connection(
    mut stream: TcpStream,
    files: &Files,
    log: &Mutex<Vec<Request>>,
    alterations: &dyn Alterations,
) {
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
    let resolved = match files {
        Files::Directory(root) => resolve(root, &request.target),
        Files::Map(map) => lookup(map, &request.target),
    };
    let file = resolved.as_ref().and_then(|p| std::fs::File::open(p).ok());
    let len = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let fault = alterations.for_request(&path);
    let ignore_range = alterations.ignore_range();
    let answer = match resolved {
        None => Answer::empty(400, "Bad Request"),
        Some(_) => decide(&request, len, fault.as_ref(), ignore_range),
    };
    log.lock().expect("the server log lock").push(Request {
        method: request.method.clone(),
        path,
        range: request.range.clone(),
        user_agent: request.user_agent.clone(),
        status: answer.status(),
    });
    let body = file.filter(|_| request.method == "GET");
    let _ = respond(&mut stream, answer, body, fault, ignore_range);
    let _ = stream.shutdown(Shutdown::Both);
}

/// The file a request target names in `map`: percent-decoded, query dropped, and
/// only an exact key (a path not in the map is a missing file, not a bad request).
fn lookup(map: &BTreeMap<String, PathBuf>, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    Some(
        map.get(decoded.trim_start_matches('/'))
            .cloned()
            .unwrap_or_default(),
    )
}

/// Sends `answer`, with the bytes of `body` if it has one; a fault may cut the
/// body short.
fn respond(
    stream: &mut TcpStream,
    answer: Answer,
    body: Option<std::fs::File>,
    fault: Option<Alteration>,
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
        Some(Alteration::Endless) => String::new(),
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
        Some(Alteration::DropAfter(bytes)) | Some(Alteration::StallAfter(bytes)) => {
            (start + bytes).min(end)
        }
        Some(Alteration::TruncateAt(offset)) => (*offset).clamp(start, end),
        _ => end,
    };
    loop {
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut (&mut file).take(send_until - start), stream)?;
        if fault != Some(Alteration::Endless) {
            break;
        }
    }
    stream.flush()?;
    if let Some(Alteration::StallAfter(_)) = fault {
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
                range: Some("bytes=1-2".to_owned()),
                user_agent: None,
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
        let server = FileServer::start(Files::Directory(dir.path().to_owned())).unwrap();
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
    fn serves_exactly_a_map_and_logs_the_user_agent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubeadm");
        std::fs::write(&file, "bin").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        let map = BTreeMap::from([("dl.k8s.io/release/kubeadm".to_owned(), file)]);
        let server = FileServer::start(Files::Map(map)).unwrap();
        let got = get(
            &server,
            "GET /dl.k8s.io/release/kubeadm HTTP/1.1\r\nUser-Agent: curl/7.88.1\r\n\r\n",
        );
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\nbin"),
            "{got}"
        );
        assert!(get(&server, "GET /secret HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(&server, "GET /dl.k8s.io HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let log = server.requests();
        assert_eq!(log[0].user_agent.as_deref(), Some("curl/7.88.1"));
        assert_eq!(log[1].user_agent, None);
    }
}
