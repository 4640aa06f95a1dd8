//! Any text a variable can hold comes back from the shell as exactly that one word.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if text.contains('\0') {
        return;
    }
    let quoted = hyprbox_presets::shell_quote(text);
    assert_eq!(shlex::split(&quoted), Some(vec![text.to_string()]), "{quoted:?}");
});
