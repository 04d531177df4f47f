//! Characters of recorded text shown as visible escapes (`\x1b`,
//! `\u{202e}`): every control but newline and tab, C1 controls, characters
//! that reorder text (bidirectional overrides) or hide it (zero-width).
//! Used by every view of a record ([`super::terminal_safe::SafeText`]) and
//! for the payloads of string sequences ([`super::string_sequences`]).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown as an escape rather than sent to the terminal.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        // Bidirectional embeddings, overrides and isolates; line and
        // paragraph separators.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
        // Zero-width characters that hide text in plain sight.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{feff}')
}

/// `text` with every unsafe character as a visible escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

pub(super) fn push_escaped(out: &mut String, c: char) {
    if !unsafe_char(c) {
        out.push(c);
        return;
    }
    match c {
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}
