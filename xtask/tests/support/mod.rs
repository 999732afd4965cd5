//! Helpers shared by the integration tests: the path of the real xtask binary and a
//! loopback HTTP server that serves files from a directory the test fills, with
//! faults a test can switch on (no Range support, a dropped connection, a truncated
//! body, 5xx answers) and a log of the requests it answered.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The xtask binary cargo built for this test run.
pub fn xtask() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// The repository root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query, e.g. `/stable/amd64-usr/current/version.txt`.
    pub path: String,
    /// The `Range` header, if the client sent one.
    pub range: Option<String>,
    pub status: u16,
}

/// A misbehaviour for one path.
#[derive(Clone, Debug)]
enum Fault {
    /// Send this many body bytes, then close the connection.
    DropAfter(u64),
    /// Never send the file's bytes from this offset on (every answer stops there).
    TruncateAt(u64),
    /// Answer with this status and an empty body.
    Status(u16),
}

#[derive(Debug)]
struct PathFault {
    path: String,
    fault: Fault,
    /// How many more requests it applies to; `None`: all of them.
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Request>,
    ignore_range: bool,
    faults: Vec<PathFault>,
}

impl State {
    /// The fault for the next request of `path`, used up by this call.
    fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|f| f.path == path && f.remaining != Some(0))?;
        let entry = &mut self.faults[index];
        if let Some(n) = entry.remaining.as_mut() {
            *n -= 1;
        }
        Some(entry.fault.clone())
    }
}

/// A static-file HTTP/1.1 server on 127.0.0.1 and a free port. It serves `GET` and
/// `HEAD` for files under `root` (with `Range: bytes=N-` / `bytes=N-M` support) and
/// answers 404 for anything else. It stops when dropped.
pub struct FileServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<State>>,
}

impl FileServer {
    pub fn start(root: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let root = root.to_path_buf();
        let stop_flag = stop.clone();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let root = root.clone();
                    let state = shared.clone();
                    std::thread::spawn(move || serve(stream, &root, &state));
                }
            }
        });
        FileServer {
            port,
            stop,
            thread: Some(thread),
            state,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests whose path ends with `suffix`.
    pub fn requests_for(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Answer every request with the whole file and 200, as servers without
    /// Range support do.
    pub fn ignore_range(&self, ignore: bool) {
        self.state.lock().unwrap().ignore_range = ignore;
    }

    /// The next `times` GETs of `path` close the connection after `bytes` body
    /// bytes, although the headers announce more.
    pub fn drop_connection(&self, path: &str, bytes: u64, times: usize) {
        self.add_fault(path, Fault::DropAfter(bytes), Some(times));
    }

    /// Every GET of `path` stops sending at file offset `offset` and closes the
    /// connection, although the headers announce more.
    pub fn truncate_body(&self, path: &str, offset: u64) {
        self.add_fault(path, Fault::TruncateAt(offset), None);
    }

    /// The next `times` requests of `path` are answered with `status`.
    pub fn fail_with_status(&self, path: &str, status: u16, times: usize) {
        self.add_fault(path, Fault::Status(status), Some(times));
    }

    fn add_fault(&self, path: &str, fault: Fault, remaining: Option<usize>) {
        self.state.lock().unwrap().faults.push(PathFault {
            path: path.to_owned(),
            fault,
            remaining,
        });
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `bytes=N-` or `bytes=N-M` against a file of `len` bytes: the inclusive range.
/// `Err(())`: unsatisfiable.
fn parse_range(header: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    if start >= len {
        return Some(Err(()));
    }
    let end = match end.trim() {
        "" => len - 1,
        e => e.parse::<u64>().ok()?.min(len - 1),
    };
    (end >= start).then_some(Ok((start, end)))
}

fn serve(mut stream: TcpStream, root: &Path, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range_header = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.trim().eq_ignore_ascii_case("range") {
                        range_header = Some(value.trim().to_owned());
                    }
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/");
    let path = path.split('?').next().unwrap_or("").to_owned();
    let relative = path.trim_start_matches('/');
    let file = root.join(relative);
    let exists = !relative.split('/').any(|c| c == "..") && file.is_file();

    let (fault, ignore_range) = {
        let mut state = state.lock().unwrap();
        (state.take_fault(&path), state.ignore_range)
    };
    let log = |status: u16| {
        state.lock().unwrap().requests.push(Request {
            method: method.clone(),
            path: path.clone(),
            range: range_header.clone(),
            status,
        });
    };

    if let Some(Fault::Status(status)) = fault {
        log(status);
        let _ = write!(
            stream,
            "HTTP/1.1 {status} Injected Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let opened = if exists { File::open(&file).ok() } else { None };
    let Some(mut data) = opened else {
        log(404);
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = data.metadata().map(|m| m.len()).unwrap_or(0);
    let range = match (&range_header, ignore_range) {
        (Some(header), false) if len > 0 => parse_range(header, len),
        _ => None,
    };
    let (status, start, end) = match range {
        Some(Ok((start, end))) => (206, start, end + 1),
        Some(Err(())) => {
            log(416);
            let _ = write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        None => (200, 0, len),
    };
    log(status);
    let mut head = if status == 206 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\n",
            end - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_owned()
    };
    head += &format!(
        "Content-Length: {}\r\nAccept-Ranges: {}\r\nConnection: close\r\n\r\n",
        end - start,
        if ignore_range { "none" } else { "bytes" }
    );
    if stream.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    let send_until = match fault {
        Some(Fault::DropAfter(bytes)) => (start + bytes).min(end),
        Some(Fault::TruncateAt(offset)) => offset.clamp(start, end),
        _ => end,
    };
    if data.seek(SeekFrom::Start(start)).is_ok() {
        let _ = std::io::copy(&mut (&mut data).take(send_until - start), &mut stream);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}
