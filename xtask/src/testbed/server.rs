//! The test bed's loopback server: the one static-file server (`net::file_server`)
//! on a directory, with fault modes switched on per path (a dropped connection, a
//! truncated body, an error status, a redirect, a stall, an endless body, no Range
//! support) to see how a client copes. Used by `rehearse`, the benchmarks and the
//! integration tests alike; it stops when dropped.

use std::path::Path;
use std::sync::{Arc, Mutex};

pub use crate::net::file_server::Request;
use crate::net::file_server::{self, Alteration, Alterations, Files};

#[derive(Debug)]
struct PathFault {
    path: String,
    fault: Alteration,
    /// How many more requests it applies to; `None`: all of them.
    remaining: Option<usize>,
}

/// The switches, shared with the server's connection threads.
#[derive(Debug, Default)]
struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    ignore_range: bool,
    faults: Vec<PathFault>,
}

impl Alterations for Faults {
    /// The fault for the next request of `path`, used up by this call.
    fn for_request(&self, path: &str) -> Option<Alteration> {
        let mut state = self.state.lock().expect("the fault lock");
        let entry = state
            .faults
            .iter_mut()
            .find(|f| f.path == path && f.remaining != Some(0))?;
        if let Some(n) = entry.remaining.as_mut() {
            *n -= 1;
        }
        Some(entry.fault.clone())
    }

    fn ignore_range(&self) -> bool {
        self.state.lock().expect("the fault lock").ignore_range
    }
}

/// A running server with its fault switches. Dropping it stops it; everything
/// else (URLs, the request log) is the file server's.
pub struct FileServer {
    server: file_server::FileServer,
    faults: Arc<Faults>,
}

impl std::ops::Deref for FileServer {
    type Target = file_server::FileServer;

    fn deref(&self) -> &file_server::FileServer {
        &self.server
    }
}

impl FileServer {
    /// Serves `root` on 127.0.0.1 and a free port.
    pub fn start(root: &Path) -> anyhow::Result<FileServer> {
        let faults = Arc::new(Faults::default());
        let server = file_server::FileServer::start_altered(
            Files::Directory(root.to_owned()),
            faults.clone(),
        )?;
        Ok(FileServer { server, faults })
    }

    /// Answer every request with the whole file and 200, as servers without
    /// Range support do.
    pub fn ignore_range(&self, ignore: bool) {
        self.faults
            .state
            .lock()
            .expect("the fault lock")
            .ignore_range = ignore;
    }

    /// The next `times` requests of `path` close the connection after `bytes` body
    /// bytes, although the headers announce more.
    pub fn drop_connection(&self, path: &str, bytes: u64, times: usize) {
        self.add_fault(path, Alteration::DropAfter(bytes), Some(times));
    }

    /// Every request of `path` stops sending at file offset `offset` and closes the
    /// connection, although the headers announce more.
    pub fn truncate_body(&self, path: &str, offset: u64) {
        self.add_fault(path, Alteration::TruncateAt(offset), None);
    }

    /// The next `times` requests of `path` are answered with `status`.
    pub fn fail_with_status(&self, path: &str, status: u16, times: usize) {
        self.add_fault(path, Alteration::Status(status), Some(times));
    }

    /// The next `times` requests of `path` are redirected with `status` to `location`.
    pub fn redirect(&self, path: &str, status: u16, location: &str, times: usize) {
        self.add_fault(
            path,
            Alteration::Redirect(status, location.to_owned()),
            Some(times),
        );
    }

    /// Every request of `path` gets `bytes` body bytes, then silence on an open
    /// connection: a stalled transfer.
    pub fn stall_after(&self, path: &str, bytes: u64) {
        self.add_fault(path, Alteration::StallAfter(bytes), None);
    }

    /// Every request of `path` gets an endless body without a `Content-Length`.
    pub fn endless_body(&self, path: &str) {
        self.add_fault(path, Alteration::Endless, None);
    }

    fn add_fault(&self, path: &str, fault: Alteration, remaining: Option<usize>) {
        self.faults
            .state
            .lock()
            .expect("the fault lock")
            .faults
            .push(PathFault {
                path: path.to_owned(),
                fault,
                remaining,
            });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn get(server: &FileServer, request: &str) -> String {
        let mut stream = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
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
