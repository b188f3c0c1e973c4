//! The command-line parser: never panics on any line; where a line parses,
//! the command printed back parses to the same command; the keyword's case
//! changes nothing (`pop3_proto::testing::check_command_line`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::testing::{check_command_line, escape_bytes, parse_command};

fuzz_target!(|line: &[u8]| {
    if let Err(e) = check_command_line(line) {
        panic!("{e}");
    }
    // The printed form itself is a fixed point.
    if let Ok(printed) = parse_command(line) {
        assert_eq!(
            parse_command(&printed).as_deref(),
            Ok(printed.as_slice()),
            "printing is not stable for {}",
            escape_bytes(line)
        );
    }
});
