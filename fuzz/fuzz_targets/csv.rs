//! An audit CSV cell of any text: one quoted field that reads back as the text (with `'` in
//! front when a spreadsheet would take it for a formula).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let cell = hyprbox_server::auth::audit::csv_cell(text);
    let inner = cell
        .strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .expect("a quoted field");
    assert!(
        !inner.replace("\"\"", "").contains('"'),
        "an unescaped quote in {cell:?}"
    );
    let read_back = inner.replace("\"\"", "\"");
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let expected = if formula {
        format!("'{text}")
    } else {
        text.to_string()
    };
    assert_eq!(read_back, expected);
});
