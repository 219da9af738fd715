//! The asciicast v2 reader: `recording::replay::read_cast` (`jitgate replay`, evidence export)
//! and the streaming player `recording::replay::replay`, on the input written as a `.cast` file.
//!
//! Besides "never panics": an accepted file has a version-2 header and finite, non-negative
//! event times; and the two readers agree: the player accepts exactly the files the reader
//! accepts (with the same error otherwise) and, with idle gaps capped at 0 s, writes exactly the
//! `o` data and `m` markers the reader returned, in order.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn cast_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| jitgate_fuzz::scratch_dir("cast-read").join("0.cast"))
}

fuzz_target!(|data: &[u8]| {
    let path = cast_path();
    std::fs::write(path, data).expect("write the cast file");
    let read = jitgate::recording::replay::read_cast(path);
    let mut played = Vec::new();
    let replayed = jitgate_fuzz::runtime().block_on(jitgate::recording::replay::replay(
        path,
        1.0,
        Some(0.0),
        &mut played,
    ));
    if jitgate_fuzz::debug() {
        eprintln!(
            "read_cast: {:?}\nreplay: {replayed:?}",
            read.as_ref().map(|(h, e)| (h, e.len()))
        );
    }
    match (&read, &replayed) {
        (Ok((header, events)), Ok(())) => {
            assert_eq!(header.version, 2);
            let mut want = Vec::new();
            for (t, code, text) in events {
                assert!(t.is_finite() && *t >= 0.0, "event time {t}");
                match code.as_str() {
                    "o" => want.extend_from_slice(text.as_bytes()),
                    "m" => want.extend_from_slice(format!("\r\n[jitgate] {text}\r\n").as_bytes()),
                    _ => {}
                }
            }
            assert!(
                played == want,
                "replay wrote something other than the file's o/m events"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "the readers disagree on why"),
        (a, b) => panic!(
            "read_cast and replay disagree: read_cast {:?}, replay {:?}",
            a.as_ref().map(|(_, e)| e.len()),
            b
        ),
    }
});
