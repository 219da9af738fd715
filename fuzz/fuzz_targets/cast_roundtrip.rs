//! The asciicast writer and reader together: what `CastRecorder` writes, `read_cast` reads back.
//!
//! Input: one flags byte (bit 0: the channel has a PTY, bit 1: record input), then operations
//! `[op, len, len bytes]`: op % 5 = 0 output, 1 input, 2 resize (first 4 bytes: cols, rows),
//! 3 marker, 4 title (and `TERM`, after a NUL). Besides "never panics", the file reads back with
//! the header it was given, every event in time order, and, unless the channel went binary
//! (no PTY), the `o` text equals the output bytes decoded as lossy UTF-8 however they were
//! chunked (likewise `i` when input is recorded), markers and resizes come back in order (a
//! binary channel: no text event after its marker), and the summary's sizes and digests are
//! those of the raw data and of the file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use jitgate::recording::cast::{CastOptions, CastRecorder};
use libfuzzer_sys::fuzz_target;

const BINARY_MARKER: &str = "binary stream: recording size and SHA-256 only";

enum Op {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u16, u16),
    Marker(String),
}

fn cast_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| jitgate_fuzz::scratch_dir("cast-roundtrip").join("1.cast"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut opts = CastOptions {
        pty: flags & 1 != 0,
        record_input: flags & 2 != 0,
        title: "fuzz".into(),
        ..CastOptions::default()
    };
    let mut ops = Vec::new();
    while rest.len() >= 2 {
        let (op, len) = (rest[0] % 5, rest[1] as usize);
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + body.len()..];
        match op {
            0 => ops.push(Op::Output(body.to_vec())),
            1 => ops.push(Op::Input(body.to_vec())),
            2 if body.len() >= 4 => ops.push(Op::Resize(
                u16::from_le_bytes([body[0], body[1]]),
                u16::from_le_bytes([body[2], body[3]]),
            )),
            3 => ops.push(Op::Marker(String::from_utf8_lossy(body).into_owned())),
            4 => {
                let text = String::from_utf8_lossy(body);
                let (title, term) = text.split_once('\0').unwrap_or((&text, ""));
                opts.title = title.to_string();
                opts.term = (!term.is_empty()).then(|| term.to_string());
            }
            _ => {}
        }
    }
    let path = cast_path();
    let file = std::fs::File::create(path).expect("create the cast file");
    let summary = jitgate_fuzz::runtime().block_on(async {
        let rec = CastRecorder::start_with_file(file, "1.cast", opts.clone()).expect("start");
        for op in &ops {
            let r = match op {
                Op::Output(d) => rec.output(Bytes::from(d.clone())).await,
                Op::Input(d) => rec.input(Bytes::from(d.clone())).await,
                Op::Resize(c, r) => rec.resize(*c, *r).await,
                Op::Marker(m) => rec.marker(m).await,
            };
            r.expect("recording into a healthy file does not fail");
        }
        rec.finish().await.expect("finish")
    });

    let bytes = std::fs::read(path).expect("read back");
    assert_eq!(
        summary.bytes,
        bytes.len() as u64,
        "summary size is the file's"
    );
    assert_eq!(summary.sha256, hex::encode(jitgate::crypto::sha256(&bytes)));
    let (header, events) = jitgate::recording::replay::read_cast(path)
        .unwrap_or_else(|e| panic!("the writer wrote a file the reader refuses: {e}"));
    assert_eq!(header.version, 2);
    assert_eq!((header.width, header.height), (opts.width, opts.height));
    assert_eq!(header.title.as_deref(), Some(opts.title.as_str()));
    assert_eq!(header.env.get("TERM").cloned().flatten(), opts.term);
    assert_eq!(summary.events, events.len() as u64);
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0),
        "event times go backwards"
    );

    let raw = |want_input: bool| -> Vec<u8> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Output(d) if !want_input => Some(d.as_slice()),
                Op::Input(d) if want_input => Some(d.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    };
    let (out_raw, in_raw) = (raw(false), raw(true));
    assert_eq!(summary.output_bytes, out_raw.len() as u64);
    assert_eq!(summary.input_bytes, in_raw.len() as u64);
    assert_eq!(
        summary.output_sha256,
        hex::encode(jitgate::crypto::sha256(&out_raw))
    );
    assert_eq!(
        summary.input_sha256,
        hex::encode(jitgate::crypto::sha256(&in_raw))
    );

    let text_of = |code: &str| -> String {
        events
            .iter()
            .filter(|e| e.1 == code)
            .map(|e| e.2.as_str())
            .collect()
    };
    if summary.binary {
        assert!(!opts.pty, "a PTY channel never goes binary");
        let at = events
            .iter()
            .position(|e| e.1 == "m" && e.2 == BINARY_MARKER)
            .expect("a binary channel says so in a marker");
        assert!(
            events[at..].iter().all(|e| e.1 != "o" && e.1 != "i"),
            "text events after the switch to size-and-hash only"
        );
        return;
    }
    assert_eq!(
        text_of("o"),
        String::from_utf8_lossy(&out_raw),
        "output text"
    );
    if opts.record_input {
        assert_eq!(text_of("i"), String::from_utf8_lossy(&in_raw), "input text");
    } else {
        assert!(
            events.iter().all(|e| e.1 != "i"),
            "input was not to be recorded"
        );
    }
    let markers: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "m")
        .map(|e| e.2.as_str())
        .collect();
    let want: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Marker(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(markers, want, "markers");
    let resizes: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "r")
        .map(|e| e.2.as_str())
        .collect();
    let want: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Resize(c, r) => Some(format!("{c}x{r}")),
            _ => None,
        })
        .collect();
    assert_eq!(resizes, want, "resizes");
});
