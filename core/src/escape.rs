//! Characters of recorded text shown as visible escapes (`\x1b`,
//! `\u{202e}`): every control but newline and tab, C1 controls, characters
//! that reorder text (bidirectional overrides) or hide it (zero-width).
//! Used by every view of a record (the review code's `terminal_safe`), for
//! the payloads of string sequences, and for config text quoted in errors.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal or browser draws as nothing, or that reorder the
/// text around them: bidirectional embeddings, overrides, isolates and
/// marks; zero-width spaces, joiners and the invisible operators; the byte
/// order mark. A view shows them as escapes; a search reads through them.
pub fn hidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2060}'..='\u{2064}'
            | '\u{061c}'
            | '\u{feff}'
    )
}

/// Whether `c` is shown as an escape rather than sent to the terminal.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        // Line and paragraph separators.
        || matches!(c, '\u{2028}' | '\u{2029}')
        || hidden_char(c)
}

/// What a reader sees of `text` and what it is made of, for a search: the
/// hidden characters dropped, and a right-to-left override's text (up to
/// its pop or the end) reversed, as it is drawn.
pub fn as_drawn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut reversed: Option<Vec<char>> = None;
    for c in text.chars() {
        match c {
            '\u{202e}' => {
                if let Some(r) = reversed.take() {
                    out.extend(r.iter().rev());
                }
                reversed = Some(Vec::new());
            }
            '\u{202c}' | '\u{2069}' => {
                if let Some(r) = reversed.take() {
                    out.extend(r.iter().rev());
                }
            }
            c if hidden_char(c) => {}
            c => match reversed.as_mut() {
                Some(r) => r.push(c),
                None => out.push(c),
            },
        }
    }
    if let Some(r) = reversed {
        out.extend(r.iter().rev());
    }
    out
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

/// Pushes `c` onto `out`, as a visible escape if it is unsafe.
pub fn push_escaped(out: &mut String, c: char) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_read_through_and_overrides_drawn_reversed() {
        assert_eq!(as_drawn("Q\u{200b}ZV\u{2060}28K"), "QZV28K");
        assert_eq!(as_drawn("a \u{202e}K92VZQ\u{202c} b"), "a QZV29K b");
        assert_eq!(as_drawn("\u{202e}cba"), "abc");
        assert_eq!(escape("Q\u{2060}Z"), "Q\\u{2060}Z");
    }
}
