//! Tests of the asciicast v2 recorder (and of replaying what it wrote).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use serde_json::Value;

use super::writer::BINARY_MARKER;
use super::*;
use crate::crypto::sha256_hex;
use crate::recording::{read_cast, replay};

fn opts(pty: bool, record_input: bool) -> CastOptions {
    CastOptions {
        width: 80,
        height: 24,
        term: pty.then(|| "xterm-256color".to_string()),
        title: "alice@dc-01 (reset-credential, INC-7)".into(),
        record_input,
        pty,
    }
}

fn new_cast(dir: &Path, pty: bool, record_input: bool) -> (PathBuf, CastRecorder) {
    let path = dir.join("0.cast");
    let rec = CastRecorder::start(&path, opts(pty, record_input)).unwrap();
    (path, rec)
}

/// Every line of a cast as JSON (the header first).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The events with `code`, as their data.
fn data_of(events: &[Value], code: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e[1] == code)
        .map(|e| e[2].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn header_and_events_have_the_v2_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    rec.output(Bytes::from_static(b"$ ")).await.unwrap();
    rec.input(Bytes::from_static(b"ls\r")).await.unwrap();
    rec.output(Bytes::from_static(b"ls\r\n\x1b[0mfile \"q\"\r\n"))
        .await
        .unwrap();
    rec.resize(100, 40).await.unwrap();
    rec.marker("grant expires in 60 s").await.unwrap();
    let summary = rec.finish().await.unwrap();

    let all = lines(&path);
    let header = &all[0];
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 80);
    assert_eq!(header["height"], 24);
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    assert_eq!(header["title"], "alice@dc-01 (reset-credential, INC-7)");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - header["timestamp"].as_i64().unwrap()).abs() < 60);

    let events = &all[1..];
    assert_eq!(summary.events, 5);
    let codes: Vec<_> = events.iter().map(|e| e[1].as_str().unwrap()).collect();
    assert_eq!(codes, ["o", "i", "o", "r", "m"]);
    let mut last = 0.0;
    for e in events {
        let e = e.as_array().unwrap();
        assert_eq!(e.len(), 3);
        let t = e[0].as_f64().unwrap();
        assert!(t >= last && t < 60.0, "{t}");
        last = t;
        assert!(e[2].is_string());
    }
    assert_eq!(events[2][2], "ls\r\n\u{1b}[0mfile \"q\"\r\n");
    assert_eq!(events[3][2], "100x40");
    assert_eq!(events[4][2], "grant expires in 60 s");
    // The raw escape byte is JSON-escaped, not written as is.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r"\u001b[0m"), "{text}");
    // read_cast parses what the recorder wrote.
    let (h, parsed) = read_cast(&path).unwrap();
    assert_eq!((h.version, h.width, h.height), (2, 80, 24));
    assert_eq!(parsed.len(), 5);
    assert_eq!(parsed[1].1, "i");
    assert_eq!(parsed[1].2, "ls\r");
}

#[tokio::test]
async fn summary_sha256_and_size_match_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    rec.output(Bytes::from_static(b"hello\r\n")).await.unwrap();
    rec.input(Bytes::from_static(b"exit\r")).await.unwrap();
    let summary = rec.finish().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(summary.file, "0.cast");
    assert_eq!(summary.sha256, sha256_hex(&bytes));
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.output_sha256, sha256_hex(b"hello\r\n"));
    assert_eq!(summary.output_bytes, 7);
    assert_eq!(summary.input_sha256, sha256_hex(b"exit\r"));
    assert_eq!(summary.input_bytes, 5);
    assert!(!summary.binary);
}

#[tokio::test]
async fn utf8_char_split_across_chunks_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Without a PTY: a split at a chunk end must not be taken for binary data either.
    let (path, rec) = new_cast(dir.path(), false, true);
    rec.output(Bytes::from_static(b"caf\xc3")).await.unwrap();
    rec.output(Bytes::from_static(b"\xa9 \xe2\x82"))
        .await
        .unwrap();
    rec.output(Bytes::from_static(b"\xac\n")).await.unwrap();
    let summary = rec.finish().await.unwrap();
    let out = data_of(&lines(&path)[1..], "o");
    assert_eq!(out, ["caf", "é ", "€\n"]);
    assert!(!summary.binary);
}

#[tokio::test]
async fn invalid_utf8_on_a_pty_is_replaced_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    rec.output(Bytes::from_static(b"a\xffb\0c")).await.unwrap();
    let summary = rec.finish().await.unwrap();
    assert_eq!(data_of(&lines(&path)[1..], "o"), ["a\u{fffd}b\0c"]);
    assert!(!summary.binary);
}

#[tokio::test]
async fn input_is_counted_but_not_written_when_record_input_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, false);
    rec.input(Bytes::from_static(b"secret-password\r"))
        .await
        .unwrap();
    rec.output(Bytes::from_static(b"\r\nok\r\n")).await.unwrap();
    let summary = rec.finish().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret-password"), "{text}");
    let all = lines(&path);
    assert!(data_of(&all[1..], "i").is_empty());
    assert_eq!(data_of(&all[1..], "o"), ["\r\nok\r\n"]);
    assert_eq!(summary.input_bytes, 16);
    assert_eq!(summary.input_sha256, sha256_hex(b"secret-password\r"));
    assert_eq!(summary.events, 1);
}

static ZEROS: [u8; 32 * 1024] = [0; 32 * 1024];

#[tokio::test]
async fn fifty_mb_of_zero_bytes_without_pty_make_a_small_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), false, true);
    rec.output(Bytes::from_static(b"starting transfer\n"))
        .await
        .unwrap();
    let mut expected = digest::Context::new(&digest::SHA256);
    expected.update(b"starting transfer\n");
    let chunks = 50 * 1024 * 1024 / ZEROS.len();
    for _ in 0..chunks {
        expected.update(&ZEROS);
        rec.output(Bytes::from_static(&ZEROS)).await.unwrap();
    }
    let summary = rec.finish().await.unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 100 * 1024, "cast is {size} bytes");
    assert_eq!(summary.bytes, size);
    assert_eq!(summary.output_bytes, 18 + 50 * 1024 * 1024);
    assert_eq!(
        summary.output_sha256,
        hex::encode(expected.finish().as_ref())
    );
    assert!(summary.binary);
    let all = lines(&path);
    assert_eq!(data_of(&all[1..], "o"), ["starting transfer\n"]);
    assert_eq!(data_of(&all[1..], "m"), [BINARY_MARKER]);
}

#[tokio::test]
async fn binary_input_without_pty_is_hashed_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), false, true);
    // A tar header: NUL padding and invalid UTF-8.
    let tar: &'static [u8] = b"file.txt\0\0\0\0\x80\x81\xfe\xff";
    rec.input(Bytes::from_static(tar)).await.unwrap();
    rec.output(Bytes::from_static(b"done\n")).await.unwrap();
    let summary = rec.finish().await.unwrap();
    assert!(summary.binary);
    assert_eq!(summary.input_sha256, sha256_hex(tar));
    assert_eq!(summary.output_bytes, 5);
    let all = lines(&path);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1][1], "m");
}

#[tokio::test]
async fn text_without_pty_stops_after_one_mib_but_a_pty_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let line = Bytes::from(vec![b'x'; 16 * 1024]);
    let (path, rec) = new_cast(dir.path(), false, true);
    for _ in 0..128 {
        rec.output(line.clone()).await.unwrap();
    }
    let summary = rec.finish().await.unwrap();
    assert!(summary.binary);
    assert_eq!(summary.output_bytes, 2 * 1024 * 1024);
    let written: usize = data_of(&lines(&path)[1..], "o")
        .iter()
        .map(String::len)
        .sum();
    assert_eq!(written, 1024 * 1024);

    let pty_dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(pty_dir.path(), true, true);
    for _ in 0..8 {
        rec.output(Bytes::from_static(&ZEROS)).await.unwrap();
    }
    let summary = rec.finish().await.unwrap();
    assert!(!summary.binary);
    let written: usize = data_of(&lines(&path)[1..], "o")
        .iter()
        .map(String::len)
        .sum();
    assert_eq!(written, 8 * ZEROS.len());
}

#[tokio::test]
async fn event_time_is_taken_when_the_data_is_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rec.output(Bytes::from_static(b"a")).await.unwrap();
    // Block the only runtime thread: the writer task cannot run until both chunks are queued,
    // yet each keeps the time it was handed over at.
    std::thread::sleep(Duration::from_millis(300));
    rec.output(Bytes::from_static(b"b")).await.unwrap();
    rec.finish().await.unwrap();
    let (_, events) = read_cast(&path).unwrap();
    let times: Vec<f64> = events.iter().map(|e| e.0).collect();
    assert!((0.2..0.35).contains(&times[0]), "{times:?}");
    assert!((0.5..0.65).contains(&times[1]), "{times:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().nth(1).unwrap();
    // Microsecond precision, as asciinema writes it.
    assert!(
        first.starts_with("[0.2") && first.find(',') == Some(9),
        "{first}"
    );
}

#[tokio::test]
async fn pending_data_reaches_the_file_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    rec.output(Bytes::from_static(b"first\r\n")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rec.output(Bytes::from_static(b"second\r\n")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Not finished: a gateway killed now leaves whole lines up to the last flush.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let all = lines(&path);
    assert_eq!(data_of(&all[1..], "o"), ["first\r\n", "second\r\n"]);
    rec.finish().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_still_flushes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    let clone = rec.clone();
    rec.output(Bytes::from_static(b"bye\r\n")).await.unwrap();
    drop(rec);
    drop(clone);
    for _ in 0..100 {
        if std::fs::read_to_string(&path).unwrap().contains("bye") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("recording was not flushed after its handles were dropped");
}

#[tokio::test]
async fn start_fails_clearly_when_the_directory_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("0.cast");
    let err = CastRecorder::start(&path, opts(true, true)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("recording failed: cannot create"), "{msg}");
    assert!(msg.contains("missing/0.cast"), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
}

#[tokio::test]
async fn start_never_overwrites_an_existing_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.cast");
    std::fs::write(&path, "evidence").unwrap();
    let err = CastRecorder::start(&path, opts(true, true)).unwrap_err();
    assert!(err.to_string().contains("File exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "evidence");
}

#[tokio::test]
async fn a_full_disk_fails_the_recording_promptly_and_every_call_after() {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let rec = CastRecorder::start_with_file(file, "0.cast", opts(true, true)).unwrap();
    let watcher = tokio::spawn(rec.failed());
    let err = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("failure reported within 5 s")
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.starts_with("recording failed: cannot write 0.cast"),
        "{msg}"
    );
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(rec.error().is_some());
    let next = rec.output(Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(next.to_string(), msg);
    assert!(rec.marker("m").await.is_err());
    assert_eq!(rec.finish().await.unwrap_err().to_string(), msg);
}

#[tokio::test]
async fn a_finished_recording_refuses_more_data() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = new_cast(dir.path(), true, true);
    let other = rec.clone();
    rec.finish().await.unwrap();
    let err = other.output(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(matches!(err, RecordingError::Finished { .. }), "{err}");
    // `failed` never resolves for a recording that ended normally.
    let pending = tokio::time::timeout(Duration::from_millis(50), other.failed()).await;
    assert!(pending.is_err());
}

#[tokio::test]
async fn replay_at_speed_1000_reproduces_the_output_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rec) = new_cast(dir.path(), true, true);
    let chunks: [&'static [u8]; 5] = [
        b"$ ",
        b"printf 'caf\\xc3\\xa9'\r\n",
        b"caf\xc3",
        b"\xa9\r\n\x1b[1;32m$\x1b[0m ",
        b"exit\r\nlogout\r\n",
    ];
    for chunk in chunks {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rec.output(Bytes::from_static(chunk)).await.unwrap();
        rec.input(Bytes::from_static(b"k")).await.unwrap();
        rec.resize(120, 30).await.unwrap();
    }
    rec.finish().await.unwrap();

    let recorded: Vec<u8> = chunks.concat();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    replay(&path, 1000.0, None, &mut out).await.unwrap();
    assert_eq!(out, recorded);
    // Half a second of recorded time plays in about half a millisecond.
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}
