//! The generic ticket webhook: a correctly signed, fresh delivery of the input as its body, through
//! `ticket::webhook::verify_and_parse` (the body parser behind it is private). Checks, besides
//! "never panics", that only the body can make it fail, that the update it yields says what the
//! body says (ticket, open/closed, title cut to 200 characters, only configured assignees), and
//! that the same delivery with one byte changed is refused for its signature. See
//! `jitgate_fuzz::webhook`.
#![no_main]

use jitgate::ticket::webhook::Provider;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitgate_fuzz::webhook::check(Provider::Generic, data));
