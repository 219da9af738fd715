//! Reading asciicast v2 files and playing them back in a terminal (`jitgate replay`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use super::RecordingError;
use super::manifest::{MANIFEST_FILE, SessionManifest};

/// The asciicast v2 header fields jitgate reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always 2.
    pub version: u8,
    /// Terminal columns.
    pub width: u16,
    /// Terminal rows.
    pub height: u16,
    /// Unix time the recording started.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Recorded environment (`TERM`, `SHELL`).
    #[serde(default)]
    pub env: BTreeMap<String, Option<String>>,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Idle gaps longer than this many seconds are shortened on playback.
    #[serde(default)]
    pub idle_time_limit: Option<f64>,
}

/// One event: seconds since start, code (`o`, `i`, `r`, `m`), data.
pub type Event = (f64, String, String);

/// Parse a whole cast file. A final line without a newline that does not parse (the gateway was
/// killed mid-write) is ignored; any other malformed line is an error naming it.
pub fn read_cast(path: &Path) -> Result<(Header, Vec<Event>), RecordingError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let mut lines = bytes.split_inclusive(|&b| b == b'\n').enumerate();
    let header = match lines.next() {
        Some((_, line)) => parse_header(path, line)?,
        None => return Err(format_error(path, 1, "the file is empty".into())),
    };
    let mut events = Vec::new();
    for (i, line) in lines {
        match parse_event(path, i + 1, line) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(_) if !line.ends_with(b"\n") => {}
            Err(e) => return Err(e),
        }
    }
    Ok((header, events))
}

/// Play the cast at `path` to `out`: `o` data with the recorded timing divided by `speed`, idle
/// gaps capped at `max_idle` seconds (default: the header's `idle_time_limit`), markers as
/// `\r\n[jitgate] <text>\r\n`. Input and resize events are not shown.
pub async fn replay(
    path: &Path,
    speed: f64,
    max_idle: Option<f64>,
    mut out: impl AsyncWrite + Unpin,
) -> Result<(), RecordingError> {
    if speed.is_nan() || speed <= 0.0 {
        return Err(RecordingError::Invalid(format!(
            "speed must be greater than 0, not {speed}"
        )));
    }
    if max_idle.is_some_and(|m| m.is_nan() || m < 0.0) {
        return Err(RecordingError::Invalid(
            "the idle limit must be 0 seconds or more".into(),
        ));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| read_error(path, e))?;
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut read_line = async |line: &mut Vec<u8>| {
        line.clear();
        reader
            .read_until(b'\n', line)
            .await
            .map_err(|e| read_error(path, e))
    };
    if read_line(&mut line).await? == 0 {
        return Err(format_error(path, 1, "the file is empty".into()));
    }
    let header = parse_header(path, &line)?;
    let max_idle = max_idle.or(header.idle_time_limit.filter(|m| *m >= 0.0));

    let out_error = |e| RecordingError::Output(Arc::new(e));
    let start = Instant::now();
    let (mut prev, mut clock) = (0.0f64, 0.0f64);
    let mut n = 1;
    while read_line(&mut line).await? > 0 {
        n += 1;
        let (t, code, data) = match parse_event(path, n, &line) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(_) if !line.ends_with(b"\n") => break,
            Err(e) => return Err(e),
        };
        let mut gap = (t - prev).max(0.0);
        prev = prev.max(t);
        if let Some(limit) = max_idle {
            gap = gap.min(limit);
        }
        clock += gap / speed;
        let due = Duration::try_from_secs_f64(clock)
            .ok()
            .and_then(|d| start.checked_add(d))
            .ok_or_else(|| format_error(path, n, format!("event time {t} is out of range")))?;
        if due > Instant::now() {
            out.flush().await.map_err(out_error)?;
            tokio::time::sleep_until(due).await;
        }
        match code.as_str() {
            "o" => out.write_all(data.as_bytes()).await.map_err(out_error)?,
            "m" => {
                let marker = format!("\r\n[jitgate] {data}\r\n");
                out.write_all(marker.as_bytes()).await.map_err(out_error)?;
            }
            _ => {}
        }
    }
    out.flush().await.map_err(out_error)
}

/// The cast files of a session directory, in the order to play them: the manifest's order when
/// `session.json` is readable, otherwise every `*.cast` file by channel number.
pub fn session_casts(dir: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    if dir.join(MANIFEST_FILE).exists() {
        let m = SessionManifest::read(dir).map_err(|e| read_error(&dir.join(MANIFEST_FILE), e))?;
        return Ok(m
            .files
            .iter()
            .filter(|f| f.name.ends_with(".cast") && !f.name.contains('/'))
            .map(|f| dir.join(&f.name))
            .collect());
    }
    let mut casts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cast"))
        .collect();
    let channel = |p: &PathBuf| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        (stem.parse::<u64>().unwrap_or(u64::MAX), stem.to_string())
    };
    casts.sort_by_key(channel);
    Ok(casts)
}

fn parse_header(path: &Path, line: &[u8]) -> Result<Header, RecordingError> {
    let header: Header = serde_json::from_slice(line)
        .map_err(|e| format_error(path, 1, format!("bad header: {e}")))?;
    if header.version != 2 {
        return Err(format_error(
            path,
            1,
            format!(
                "asciicast version {} is not supported; jitgate reads version 2",
                header.version
            ),
        ));
    }
    Ok(header)
}

/// Parse one event line; blank lines give `None`.
fn parse_event(path: &Path, n: usize, line: &[u8]) -> Result<Option<Event>, RecordingError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let event: Event = serde_json::from_slice(line)
        .map_err(|e| format_error(path, n, format!("expected [time, code, data]: {e}")))?;
    if !event.0.is_finite() || event.0 < 0.0 {
        return Err(format_error(path, n, format!("bad event time {}", event.0)));
    }
    Ok(Some(event))
}

fn read_error(path: &Path, e: std::io::Error) -> RecordingError {
    RecordingError::Read {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

fn format_error(path: &Path, line: usize, reason: String) -> RecordingError {
    RecordingError::Format {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cast(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("0.cast");
        let header = r#"{"version": 2, "width": 80, "height": 24, "timestamp": 1700000000, "env": {"TERM": "xterm", "SHELL": null}}"#;
        std::fs::write(&path, format!("{header}\n{body}")).unwrap();
        path
    }

    #[test]
    fn read_cast_tolerates_only_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_cast(
            dir.path(),
            "[0.5, \"o\", \"a\"]\n\n[1.0, \"m\", \"x\"]\n[1.2, \"o\", \"b",
        );
        let (header, events) = read_cast(&path).unwrap();
        assert_eq!(header.env["TERM"].as_deref(), Some("xterm"));
        assert_eq!(
            events,
            [(0.5, "o".into(), "a".into()), (1.0, "m".into(), "x".into())]
        );

        let path = write_cast(dir.path(), "[0.5, \"o\", \"a\"\n[1.0, \"o\", \"b\"]\n");
        let err = read_cast(&path).unwrap_err().to_string();
        assert!(err.contains("line 2 is not valid asciicast v2"), "{err}");

        std::fs::write(
            &path,
            "{\"version\": 3, \"term\": {\"cols\": 80, \"rows\": 24}}\n",
        )
        .unwrap();
        let err = read_cast(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad header") || err.contains("version"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn replay_honours_timing_speed_and_idle_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_cast(
            dir.path(),
            "[1.0, \"o\", \"a\"]\n[1.0, \"i\", \"typed\"]\n[101.0, \"o\", \"b\"]\n[102.0, \"m\", \"bye\"]\n",
        );
        let start = Instant::now();
        let mut out = Vec::new();
        replay(&path, 50.0, Some(10.0), &mut out).await.unwrap();
        // 1 s + min(100 s, 10 s) + 1 s of recorded time, at 50 times the speed: 0.24 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(240), "{took:?}");
        assert!(took < Duration::from_millis(1200), "{took:?}");
        assert_eq!(out, b"ab\r\n[jitgate] bye\r\n");

        let err = replay(&path, 0.0, None, Vec::new()).await.unwrap_err();
        assert!(
            err.to_string().contains("speed must be greater than 0"),
            "{err}"
        );
    }

    #[test]
    fn session_casts_orders_by_channel_without_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10.cast", "2.cast", "http.jsonl", "0.cast"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<_> = session_casts(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["0.cast", "2.cast", "10.cast"]);
    }
}
