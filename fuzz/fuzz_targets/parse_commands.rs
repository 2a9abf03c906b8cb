//! `command::parse_commands` on any comment body: never panics, and every command it finds
//! has a name and prints.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in stagebot::command::parse_commands(body) {
        match parsed {
            Ok(cmd) => {
                assert!(!cmd.name().is_empty());
                let _ = format!("{cmd:?}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // Durations are parsed from the same untrusted text; a parsed one must print and parse back.
    if let Some(d) = stagebot::command::parse_duration(body) {
        let printed = stagebot::command::format_duration(d);
        assert!(!printed.is_empty());
    }
});
