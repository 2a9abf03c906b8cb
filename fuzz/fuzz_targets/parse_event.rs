//! `event::parse_event` on any body: the first line is the `X-GitHub-Event` name, the rest the
//! payload. It must never panic; whatever it accepts must carry valid typed values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let event = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or(&[]);
    if let Ok(ev) = stagebot::event::parse_event(&event, payload) {
        // Accessors on a parsed event must not panic either.
        let _ = ev.repo();
        let _ = ev.installation_id();
        let _ = format!("{ev:?}");
    }
});
