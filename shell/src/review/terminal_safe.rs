//! What reaches a reviewer's terminal. Records hold text the recorded user
//! controls (their command, their TERM, what their session printed), and a
//! terminal obeys what it is sent: escape sequences can retitle the window,
//! clear the screen, hide text, write the clipboard, or make the terminal
//! *answer* (device status, window title reports), which lands in the
//! reviewer's shell as if typed. So:
//!
//! - [`SafeText`] wraps every text view (`list`, `show`, `search`,
//!   `prune`, `audit verify`, the banners of `play` and `export`): each
//!   control character but newline and tab, each C1 control, and each
//!   character that reorders text (bidirectional overrides) is written as a
//!   visible escape (`\x1b`, `\u{202e}`); bytes that are not UTF-8 as
//!   `\xNN`. JSON output is not wrapped: it stays exact (its own escaping
//!   covers C0 controls).
//! - [`ReplayFilter`] sits between a recording and the terminal in `play`:
//!   text, cursor movement, colours, erasing and screen modes pass; every
//!   string sequence (OSC, DCS, APC, PM, SOS) is shown as visible text, in
//!   reverse video, never obeyed ([`super::string_sequences`]: the client
//!   got its bytes, so the reviewer sees them); every sequence that makes
//!   the terminal answer or report input (device status/attributes, window
//!   reports, mouse and focus reporting), and every other control is
//!   dropped. [`RESET`] puts back what a replay may have changed.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::string_sequences::{Revealer, Style};

pub use super::escape::escape;
use super::escape::{hidden_char, push_escaped};

/// A writer that escapes what it is given (see the module docs).
pub struct SafeText<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence split across two writes.
    pending: Vec<u8>,
}

impl<W: Write> SafeText<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for SafeText<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(buf);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    text.chars().for_each(|c| push_escaped(&mut out, c));
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // The prefix was just checked to be UTF-8.
                    let good = std::str::from_utf8(good).unwrap_or_default();
                    good.chars().for_each(|c| push_escaped(&mut out, c));
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                let _ = write!(out, "\\x{b:02x}");
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            // Incomplete at the end: keep it for the next write.
                            self.pending = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let mut out = String::new();
            for b in pending {
                let _ = write!(out, "\\x{b:02x}");
            }
            self.inner.write_all(out.as_bytes())?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for SafeText<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Puts back what a replay may have changed: attributes, cursor, the
/// alternate screen, insert mode, the scroll region, keypad and cursor-key
/// modes, character sets, bracketed paste.
pub const RESET: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?12l\x1b[?1049l\x1b[?47l\x1b[4l\x1b[r\x1b[?1l\x1b>\x1b(B\x1b)B\x0f\x1b[?2004l\x1b[0 q";

/// Filters a recording's output for a live terminal (see the module docs):
/// string sequences are first made visible text
/// ([`super::string_sequences`]), then only drawing sequences pass.
pub struct ReplayFilter {
    revealer: Revealer,
    parser: vte::Parser,
}

impl Default for ReplayFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayFilter {
    pub fn new() -> Self {
        Self {
            revealer: Revealer::new(Style::Highlighted),
            parser: vte::Parser::new(),
        }
    }

    /// The part of `data` that is safe to send to a terminal (appended to
    /// `out`). Sequences split across calls are kept whole.
    pub fn filter(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut revealed = Vec::with_capacity(data.len());
        self.revealer.feed(data, &mut revealed);
        let mut sink = Sink { out };
        self.parser.advance(&mut sink, &revealed);
    }

    /// The end of the recording: a string sequence still open is shown.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut revealed = Vec::new();
        self.revealer.finish(&mut revealed);
        let mut sink = Sink { out };
        self.parser.advance(&mut sink, &revealed);
    }
}

struct Sink<'a> {
    out: &'a mut Vec<u8>,
}

/// The only private modes (`CSI ? N h/l`) a replay may set, all put back
/// by [`RESET`]: cursor keys (1), cursor visible (25), cursor blink (12),
/// bracketed paste (2004). Not: the alternate screen (what was drawn there
/// disappears from the reviewer's view when the session leaves it), mouse
/// and focus reporting (the terminal would send input), 132 columns,
/// reverse video, origin mode, left/right margins, no-autowrap.
const REPLAY_PRIVATE_MODES: &[u16] = &[1, 12, 25, 2004];

/// The only ANSI modes (`CSI N h/l`) a replay may set: insert (4), put
/// back by [`RESET`]. Not: keyboard lock (2), local echo (12), newline
/// mode (20).
const REPLAY_ANSI_MODES: &[u16] = &[4];

/// CSI finals without intermediates that only draw: cursor movement,
/// erasing, inserting/deleting, scrolling, tabs, colours, modes, margins,
/// cursor save/restore. Not among them: `c` (device attributes), `n`
/// (status reports), `t` (window operations and reports), `x`, `q`, `p`,
/// `i` (printing), `y`.
const DRAWING_FINALS: &str = "@ABCDEFGHIJKLMPSTXZ`abdefgmrsu";

impl vte::Perform for Sink<'_> {
    fn print(&mut self, c: char) {
        // Characters drawn as nothing, or reordering what follows: shown.
        if hidden_char(c) {
            let shown = format!("\x1b[7m\\u{{{:x}}}\x1b[27m", c as u32);
            self.out.extend_from_slice(shown.as_bytes());
            return;
        }
        // C1 controls as characters: some terminals act on them.
        if !('\u{80}'..='\u{9f}').contains(&c) {
            let mut buf = [0u8; 4];
            self.out
                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }

    fn execute(&mut self, byte: u8) {
        // BEL, BS, HT, LF, VT, FF, CR. Not ENQ (the answerback answers).
        if matches!(byte, 0x07..=0x0d) {
            self.out.push(byte);
        }
    }

    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        ignore: bool,
        action: char,
    ) {
        if ignore {
            return;
        }
        let private: Vec<u8> = intermediates
            .iter()
            .copied()
            .filter(|b| (0x3c..=0x3f).contains(b))
            .collect();
        let others: Vec<u8> = intermediates
            .iter()
            .copied()
            .filter(|b| !(0x3c..=0x3f).contains(b))
            .collect();
        let allowed = match (private.as_slice(), others.as_slice()) {
            // Erasing the scrollback (`CSI 3 J`) would wipe the reviewer's
            // own history.
            ([], []) if action == 'J' => params.iter().all(|p| p.iter().all(|&v| v <= 2)),
            ([], []) if matches!(action, 'h' | 'l') => params
                .iter()
                .all(|p| p.iter().all(|v| REPLAY_ANSI_MODES.contains(v))),
            ([], []) => DRAWING_FINALS.contains(action),
            ([b'?'], []) => match action {
                'h' | 'l' => params
                    .iter()
                    .all(|p| p.iter().all(|v| REPLAY_PRIVATE_MODES.contains(v))),
                'J' | 'K' | 's' | 'r' => true,
                _ => false,
            },
            // Cursor style.
            ([], [b' ']) => action == 'q',
            _ => false,
        };
        if !allowed {
            return;
        }
        // Concealed text (SGR 8) would hide from the reviewer what the
        // client received: shown as ordinary text instead.
        let concealed = |param: &[u16]| param == [8];
        if action == 'm' && private.is_empty() && params.iter().any(concealed) {
            let kept: Vec<Vec<u16>> = params
                .iter()
                .filter(|p| !concealed(p))
                .map(<[u16]>::to_vec)
                .collect();
            if kept.is_empty() {
                return;
            }
            self.out.extend_from_slice(b"\x1b[");
            for (i, param) in kept.iter().enumerate() {
                if i > 0 {
                    self.out.push(b';');
                }
                let values: Vec<String> = param.iter().map(u16::to_string).collect();
                self.out.extend_from_slice(values.join(":").as_bytes());
            }
            self.out.push(b'm');
            return;
        }
        self.out.extend_from_slice(b"\x1b[");
        self.out.extend_from_slice(&private);
        for (i, param) in params.iter().enumerate() {
            if i > 0 {
                self.out.push(b';');
            }
            for (j, value) in param.iter().enumerate() {
                if j > 0 {
                    self.out.push(b':');
                }
                self.out.extend_from_slice(value.to_string().as_bytes());
            }
        }
        self.out.extend_from_slice(&others);
        let mut buf = [0u8; 4];
        self.out
            .extend_from_slice(action.encode_utf8(&mut buf).as_bytes());
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], ignore: bool, byte: u8) {
        if ignore {
            return;
        }
        let allowed = match intermediates {
            // Save/restore cursor, index, next line, reverse index, tab
            // set, keypad modes. Not a full reset (`ESC c`: it clears the
            // reviewer's screen and settings).
            [] => b"78DEHM=>".contains(&byte),
            // Character set designation. Not the screen alignment test
            // (`ESC # 8`: it fills the screen, hiding what was drawn).
            [b'(' | b')' | b'*' | b'+'] => byte.is_ascii_alphanumeric(),
            _ => false,
        };
        if allowed {
            self.out.push(0x1b);
            self.out.extend_from_slice(intermediates);
            self.out.push(byte);
        }
    }

    // OSC, DCS (hook/put/unhook), and SOS/PM/APC never get here: the
    // revealer has made them text.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        {
            let mut w = SafeText::new(&mut out);
            w.write_all(bytes).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_views_show_controls_as_escapes() {
        assert_eq!(safe(b"plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            safe(b"xterm\x1b]0;OWNED\x07\x1b[2J"),
            "xterm\\x1b]0;OWNED\\x07\\x1b[2J"
        );
        assert_eq!(safe(b"a\rb\x7f"), "a\\rb\\x7f");
        assert_eq!(safe("c1 \u{9b}31m".as_bytes()), "c1 \\u{9b}31m");
        assert_eq!(
            safe("rtl \u{202e}txt.exe".as_bytes()),
            "rtl \\u{202e}txt.exe"
        );
        assert_eq!(safe(b"bad \xff\xfe utf8"), "bad \\xff\\xfe utf8");
        assert_eq!(safe("é ok".as_bytes()), "é ok");
        assert_eq!(escape("no change"), "no change");
    }

    #[test]
    fn a_character_split_across_writes_is_kept_whole() {
        let mut out = Vec::new();
        {
            let mut w = SafeText::new(&mut out);
            let e = "é".as_bytes();
            w.write_all(&e[..1]).unwrap();
            w.write_all(&e[1..]).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "é");
    }

    fn replay(data: &[u8]) -> Vec<u8> {
        let mut filter = ReplayFilter::new();
        let mut out = Vec::new();
        filter.filter(data, &mut out);
        out
    }

    #[test]
    fn replays_keep_drawing_and_drop_what_talks_back() {
        // Colours, cursor, erase, alternate screen: kept as they were.
        for kept in [
            &b"\x1b[1;31mred\x1b[0m"[..],
            b"\x1b[2J\x1b[1;1H\x1b[10;20H",
            b"\x1b[?25l\x1b[?25h\x1b[4h\x1b[4l\x1b[2J\x1b[1J",
            b"\x1b[38:5:196mx",
            b"\x1b7\x1b8\x1b(B",
            b"line\r\n\x08\t",
            "héllo wörld".as_bytes(),
        ] {
            assert_eq!(replay(kept), kept, "{:?}", String::from_utf8_lossy(kept));
        }
        // String sequences: shown as text in reverse video, never obeyed.
        for (string, shown) in [
            (&b"\x1b]0;OWNED\x07"[..], "OSC 0;OWNED"),
            (b"\x1b]52;c;cm0gLXJmIH4K\x07", "OSC 52;c;cm0gLXJmIH4K"),
            (b"\x1b]8;;http://evil\x1b\\", "OSC 8;;http://evil"),
            (b"\x1bP$q\"p\x1b\\", "DCS $q\"p"),
            (b"\x1b_app\x1b\\", "APC app"),
            (b"\x1bPline\x1b[2J\x1b\\", "DCS line"),
        ] {
            let mut data = b"<".to_vec();
            data.extend_from_slice(string);
            data.push(b'>');
            let out = String::from_utf8(replay(&data)).unwrap();
            assert!(
                out.starts_with(&format!("<\x1b[7m⟦{shown}⟧\x1b[27m")) && out.ends_with('>'),
                "{shown}: {out:?}"
            );
        }
        // Dropped whole, text around them kept.
        for (dropped, why) in [
            (&b"\x1b[6n"[..], "cursor position report"),
            (b"\x1b[c", "device attributes"),
            (b"\x1b[>c", "secondary device attributes"),
            (b"\x1b[21t", "title report"),
            (b"\x1b[?1000h", "mouse reporting"),
            (b"\x1b[?1004h", "focus reporting"),
            (b"\x1b[?1049;1003h", "mouse hidden in a list"),
            (b"\x1b[?2026$p", "mode report"),
            (b"\x05", "answerback"),
            (
                b"\x1b[?1049h",
                "alternate screen (what is drawn there vanishes)",
            ),
            (b"\x1b[?47h\x1b[?1047h", "older alternate screens"),
            (b"\x1b[8m", "concealed text"),
            (b"\x1b[3J", "scrollback erase"),
            (b"\x1bc", "full reset"),
            (b"\x1b#8", "screen alignment fill"),
            (b"\x1b[2h", "keyboard lock"),
            (b"\x1b[12l", "local echo"),
            (b"\x1b[20h", "newline mode"),
            (b"\x1b[?69h", "left/right margins"),
            (b"\x1b[?3h", "132 columns"),
            (b"\x1b[?5h", "reverse video"),
            (b"\x1b[?6h", "origin mode"),
            (b"\x1b[?7l", "no autowrap"),
            (b"\x1bZ", "DECID"),
            ("\u{9b}6n".as_bytes(), "C1 CSI"),
        ] {
            let mut data = b"<".to_vec();
            data.extend_from_slice(dropped);
            data.push(b'>');
            let out = replay(&data);
            assert!(
                !out.contains(&0x1b) && !out.contains(&0x05),
                "{why}: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(
                out.starts_with(b"<") && out.ends_with(b">"),
                "{why}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn hidden_characters_are_shown_in_a_replay() {
        assert_eq!(
            String::from_utf8(replay("Q\u{200b}Z\u{202e}V".as_bytes())).unwrap(),
            "Q\x1b[7m\\u{200b}\x1b[27mZ\x1b[7m\\u{202e}\x1b[27mV"
        );
    }

    #[test]
    fn concealed_text_is_shown_and_the_rest_of_its_style_kept() {
        assert_eq!(replay(b"\x1b[1;8;31mSECRET"), b"\x1b[1;31mSECRET");
        assert_eq!(replay(b"\x1b[8mSECRET\x1b[0m"), b"SECRET\x1b[0m");
    }

    #[test]
    fn a_sequence_split_across_events_is_still_whole() {
        let mut filter = ReplayFilter::new();
        let mut out = Vec::new();
        filter.filter(b"a\x1b]0;OW", &mut out);
        filter.filter(b"NED\x07b\x1b[6", &mut out);
        filter.filter(b"nc\x1bPopen", &mut out);
        filter.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\x1b[7m⟦OSC 0;OWNED⟧\x1b[27mbc\x1b[7m⟦DCS open (cut off)⟧\x1b[27m"
        );
    }
}
