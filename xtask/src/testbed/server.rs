//! A static-file HTTP/1.1 server on 127.0.0.1 for a local mirror: `GET` and `HEAD`
//! of the files under one directory, single byte ranges (`Range: bytes=...`, for
//! resumed downloads), nothing else. A thread per connection; every request is
//! recorded so a caller can tell what was fetched. It stops when dropped.
//!
//! A QEMU guest on user-mode networking reaches it as 10.0.2.2:<port>.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    pub status: u16,
}

/// A running server. Dropping it stops it.
pub struct FileServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Served>>>,
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
                    let root = root.clone();
                    let log = log.clone();
                    std::thread::spawn(move || {
                        if let Some(served) = serve_connection(stream, &root) {
                            log.lock().expect("the request log lock").push(served);
                        }
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

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Served> {
        self.log.lock().expect("the request log lock").clone()
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
struct Request {
    method: String,
    target: String,
    range: Option<String>,
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
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
    Some(Request {
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

fn serve_connection(stream: TcpStream, root: &Path) -> Option<Served> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let request = read_request(&mut reader)?;
    let mut stream = stream;
    let status = respond(&mut stream, root, &request).unwrap_or(0);
    Some(Served {
        method: request.method,
        target: request.target,
        status,
    })
}

/// Writes the response; the status sent.
fn respond(stream: &mut TcpStream, root: &Path, request: &Request) -> std::io::Result<u16> {
    let simple = |stream: &mut TcpStream, status: u16, reason: &str, extra: &str| {
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).map(|()| status)
    };
    if request.method != "GET" && request.method != "HEAD" {
        return simple(stream, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
    }
    let Some(path) = resolve(root, &request.target) else {
        return simple(stream, 400, "Bad Request", "");
    };
    let Ok(mut file) = std::fs::File::open(&path) else {
        return simple(stream, 404, "Not Found", "");
    };
    let len = match file.metadata() {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        _ => return simple(stream, 404, "Not Found", ""),
    };
    let (status, reason, start, count, range_header) =
        match parse_range(request.range.as_deref(), len) {
            RangeRequest::Whole => (200, "OK", 0, len, String::new()),
            RangeRequest::Part { start, end } => (
                206,
                "Partial Content",
                start,
                end - start + 1,
                format!("Content-Range: bytes {start}-{end}/{len}\r\n"),
            ),
            RangeRequest::Unsatisfiable => {
                return simple(
                    stream,
                    416,
                    "Range Not Satisfiable",
                    &format!("Content-Range: bytes */{len}\r\n"),
                )
            }
        };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Accept-Ranges: bytes\r\n{range_header}Content-Length: {count}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    if request.method == "GET" {
        file.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut (&mut file).take(count), stream)?;
    }
    stream.flush()?;
    Ok(status)
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
            Request {
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

        // The log is written just after each response: wait for the last one.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server.requests().len() < 7 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 200, 206, 400, 404, 405, 416]);
    }
}
