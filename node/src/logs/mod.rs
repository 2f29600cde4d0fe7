//! Container logs on disk in the CRI format kubelets use: one line per output line,
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>` (P marks a line cut at the size limit and continued).
//! Files are rotated at a size limit, keeping one older file.

pub mod log_server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Removes the files of every run before the previous one: as the kubelet, the agent keeps the current and the
/// previous container's logs only. `current` is `<dir>/<n>.log`; older runs' files are `<m>.log`, `<m>.log.1`
/// and `<m>.done` for m < n - 1.
fn prune_older_runs(current: &Path) {
    let run = |path: &Path| -> Option<u64> {
        let name = path.file_name()?.to_str()?;
        name.split('.').next()?.parse().ok()
    };
    let (Some(n), Some(dir)) = (run(current), current.parent()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if run(&entry.path()).is_some_and(|m| m + 1 < n) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Largest log file before it is rotated to `<name>.1`.
pub const MAX_LOG_BYTES: u64 = 10 << 20;
/// Longest line kept whole; longer output is split into partial (`P`) lines.
const MAX_LINE: usize = 16 << 10;

struct LogFile {
    path: PathBuf,
    /// Open from the first output on: a container that writes nothing (an idle HTTP pod) holds no descriptor,
    /// so ten thousand of them fit a node's open-files limit.
    file: Option<std::fs::File>,
    /// Whether the file exists: a first run's file (and its container's directory) is made at its first
    /// output, so that a pod that prints nothing costs no inodes (making directories is most of a pod
    /// start's work for the filesystem).
    created: bool,
    written: u64,
    stdout_partial: Vec<u8>,
    stderr_partial: Vec<u8>,
}

impl LogFile {
    fn append(&mut self, stream: &str, text: &[u8], complete: bool) -> std::io::Result<()> {
        let now = jiff::Timestamp::now();
        let mut line = format!("{now} {stream} {} ", if complete { 'F' } else { 'P' }).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        self.make()?;
        if self.written + line.len() as u64 > MAX_LOG_BYTES {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self
                .file
                .insert(std::fs::OpenOptions::new().append(true).open(&self.path)?),
        };
        file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Makes the (empty) file and its directory if they are not there yet.
    fn make(&mut self) -> std::io::Result<()> {
        if !self.created {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&self.path)?;
            self.created = true;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut older = self.path.clone().into_os_string();
        older.push(".1");
        std::fs::rename(&self.path, older)?;
        self.file = Some(std::fs::File::create(&self.path)?);
        self.written = 0;
        Ok(())
    }

    fn write(&mut self, stream: &'static str, bytes: &[u8]) -> std::io::Result<()> {
        let mut pending = std::mem::take(if stream == "stdout" {
            &mut self.stdout_partial
        } else {
            &mut self.stderr_partial
        });
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = pending[start..start + end].to_vec();
            self.append(stream, &line, true)?;
            start += end + 1;
        }
        let mut rest = pending.split_off(start);
        while rest.len() > MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.append(stream, &rest, false)?;
            rest = tail;
        }
        *(if stream == "stdout" {
            &mut self.stdout_partial
        } else {
            &mut self.stderr_partial
        }) = rest;
        Ok(())
    }

    fn flush_partial(&mut self) -> std::io::Result<()> {
        for stream in ["stdout", "stderr"] {
            let rest = std::mem::take(if stream == "stdout" {
                &mut self.stdout_partial
            } else {
                &mut self.stderr_partial
            });
            if !rest.is_empty() {
                self.append(stream, &rest, true)?;
            }
        }
        self.file.as_mut().map_or(Ok(()), std::io::Write::flush)
    }
}

/// How many output chunks an attached client may fall behind before it misses some.
const ATTACH_BACKLOG: usize = 1024;

/// One chunk of a guest's output, as attached clients receive it.
pub type Chunk = (Stream, bytes::Bytes);

/// One container run's log file, shared by its stdout and stderr, and its live output for attached clients.
#[derive(Clone)]
pub struct ContainerLog {
    file: Arc<Mutex<LogFile>>,
    /// Made when a client first attaches: its backlog is most of an idle pod's memory otherwise.
    live: Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<Chunk>>>,
}

impl ContainerLog {
    /// Creates (truncating) the log file at `path`; with `at_first_output`, the file is made when the run first
    /// writes (or ends), and a file left at `path` by an earlier agent is removed now. Only a container's first
    /// run may wait: the log server takes the newest file for the current run, which a later run without output
    /// would not have replaced.
    pub fn create(path: &Path, at_first_output: bool) -> std::io::Result<Self> {
        let mut log = LogFile {
            path: path.to_path_buf(),
            file: None,
            created: false,
            written: 0,
            stdout_partial: Vec::new(),
            stderr_partial: Vec::new(),
        };
        if at_first_output {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            log.make()?;
        }
        prune_older_runs(path);
        Ok(Self {
            file: Arc::new(Mutex::new(log)),
            live: Arc::default(),
        })
    }

    /// The writer for one of the two streams.
    pub fn stream(&self, stream: Stream) -> crate::runtime::Output {
        Arc::new(LogStream {
            log: self.clone(),
            stream,
        })
    }

    /// The output written from now on (`kubectl attach`): a client that falls behind by more than
    /// [`ATTACH_BACKLOG`] chunks misses the oldest.
    pub fn follow(&self) -> tokio::sync::broadcast::Receiver<Chunk> {
        self.live
            .get_or_init(|| tokio::sync::broadcast::channel(ATTACH_BACKLOG).0)
            .subscribe()
    }

    /// Writes out an unfinished last line and marks the run as ended, so followers stop.
    pub fn finish(&self) {
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        let marked = file
            .make()
            .and_then(|()| file.flush_partial())
            .and_then(|()| std::fs::write(crate::logs::log_server::done_marker(&file.path), b""));
        if let Err(error) = marked {
            tracing::warn!(%error, "cannot finish a container log");
        }
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A guest's stdout or stderr, written into its container log and passed to attached clients.
#[derive(Clone)]
struct LogStream {
    log: ContainerLog,
    stream: Stream,
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = match self.log.file.lock() {
            Ok(mut file) => file.write(self.stream.name(), buf).map(|()| buf.len()),
            Err(_) => Err(std::io::Error::other("log file lock poisoned")),
        };
        if let Some(live) = self.log.live.get()
            && result.is_ok()
            && live.receiver_count() > 0
        {
            // No one attached is not an error.
            let _ = live.send((self.stream, bytes::Bytes::copy_from_slice(buf)));
        }
        Poll::Ready(result)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written.
    pub time: jiff::Timestamp,
    /// The text, without the newline.
    pub text: String,
    /// Whether the line continues in the next entry.
    pub partial: bool,
}

/// Parses a CRI log file's lines (unparsable lines are skipped).
pub fn parse(contents: &str) -> Vec<LogLine> {
    contents
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let time = parts.next()?.parse().ok()?;
            let _stream = parts.next()?;
            let partial = parts.next()? == "P";
            Some(LogLine {
                time,
                text: parts.next().unwrap_or_default().to_owned(),
                partial,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_run_makes_its_file_at_its_first_output_or_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = dir.path().join("quiet/0.log");
        // A file an earlier agent left for the same run is not taken for this run's output.
        std::fs::create_dir_all(dir.path().join("quiet")).unwrap();
        std::fs::write(&quiet, "2026-12-06T10:00:00Z stdout F old\n").unwrap();
        let log = ContainerLog::create(&quiet, true).unwrap();
        assert!(!quiet.exists());
        log.finish();
        assert_eq!(std::fs::read_to_string(&quiet).unwrap(), "");
        assert!(crate::logs::log_server::done_marker(&quiet).exists());

        let talking = dir.path().join("talking/0.log");
        let log = ContainerLog::create(&talking, true).unwrap();
        assert!(!dir.path().join("talking").exists());
        let mut out = Box::into_pin(log.stream(Stream::Stdout).async_stream());
        futures::executor::block_on(async {
            use tokio::io::AsyncWriteExt;
            out.write_all(b"hi\n").await.unwrap();
        });
        let lines: Vec<String> = parse(&std::fs::read_to_string(&talking).unwrap())
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(lines, ["hi"]);
    }

    #[test]
    fn lines_from_both_streams_are_framed_and_parsed_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let log = ContainerLog::create(&path, false).unwrap();
        let mut live = log.follow();
        let (mut out, mut err) = (
            Box::into_pin(log.stream(Stream::Stdout).async_stream()),
            Box::into_pin(log.stream(Stream::Stderr).async_stream()),
        );
        futures::executor::block_on(async {
            use tokio::io::AsyncWriteExt;
            out.write_all(b"hello\nwor").await.unwrap();
            err.write_all(b"oops\n").await.unwrap();
            out.write_all(b"ld\nunfinished").await.unwrap();
        });
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = parse(&text).into_iter().map(|l| l.text).collect();
        assert_eq!(lines, ["hello", "oops", "world", "unfinished"]);
        assert!(text.lines().nth(1).unwrap().contains(" stderr F oops"));
        // Attached clients get the output as written, each chunk with its stream.
        let chunks: Vec<Chunk> = std::iter::from_fn(|| live.try_recv().ok()).collect();
        assert_eq!(
            chunks,
            [
                (Stream::Stdout, bytes::Bytes::from_static(b"hello\nwor")),
                (Stream::Stderr, bytes::Bytes::from_static(b"oops\n")),
                (Stream::Stdout, bytes::Bytes::from_static(b"ld\nunfinished")),
            ]
        );
    }

    #[test]
    fn only_the_current_and_previous_runs_logs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let run = |n: u32| dir.path().join(format!("c/{n}.log"));
        for n in 0..4 {
            let log = ContainerLog::create(&run(n), false).unwrap();
            log.finish();
        }
        std::fs::write(dir.path().join("c/1.log.1"), "rotated").unwrap();
        ContainerLog::create(&run(4), false).unwrap().finish();
        let mut kept: Vec<String> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        assert_eq!(kept, ["3.done", "3.log", "4.done", "4.log"]);
    }
}
