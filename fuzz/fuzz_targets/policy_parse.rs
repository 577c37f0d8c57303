//! The policy parser on arbitrary text: never a panic, and an error names a line of the
//! text (1 to the number of lines, a last line without its newline included).
#![no_main]

use airlock::fuzzing::policy_error_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some((line, message)) = policy_error_line(text) {
        let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
        assert!((1..=lines).contains(&line), "line {line} of {lines}: {message}");
        assert!(!message.is_empty());
    }
});
