//! What a session sent inside terminal *string sequences* — OSC (titles,
//! clipboard, hyperlinks), DCS, APC, PM and SOS — shown to the reviewer,
//! never hidden and never obeyed. A terminal draws none of their text, and
//! a replay must not send them on (they retitle the window, write the
//! clipboard, make the terminal answer), but the SSH client received every
//! byte of them: a user could carry a session's real output inside them
//! (wrap each line in a DCS string) and have a client-side tool read it.
//!
//! [`Revealer`] sits in front of every view of what a session showed
//! (`sessions play`, `search`, `export`): each string sequence becomes
//! visible text, `⟦OSC 2;title⟧`, its payload escaped like every other
//! text the recorded user controls ([`super::escape`]), streamed as
//! it comes (no size limit, nothing buffered but a split UTF-8 sequence).

use std::fmt::Write as _;

use super::escape::escape;

/// How a revealed string is set off from the session's own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Plain text (search, export's data).
    Plain,
    /// In reverse video (a replay on a terminal).
    Highlighted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Osc,
    Dcs,
    Apc,
    Pm,
    Sos,
}

impl Kind {
    /// The kind a 7-bit `ESC x` or 8-bit (UTF-8 encoded C1) introducer
    /// `x` starts.
    fn of_esc(byte: u8) -> Option<Self> {
        match byte {
            b']' => Some(Kind::Osc),
            b'P' => Some(Kind::Dcs),
            b'_' => Some(Kind::Apc),
            b'^' => Some(Kind::Pm),
            b'X' => Some(Kind::Sos),
            _ => None,
        }
    }

    fn of_c1(byte: u8) -> Option<Self> {
        match byte {
            0x9d => Some(Kind::Osc),
            0x90 => Some(Kind::Dcs),
            0x9f => Some(Kind::Apc),
            0x9e => Some(Kind::Pm),
            0x98 => Some(Kind::Sos),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Osc => "OSC",
            Kind::Dcs => "DCS",
            Kind::Apc => "APC",
            Kind::Pm => "PM",
            Kind::Sos => "SOS",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// ESC seen.
    Esc,
    /// 0xC2 seen (the first byte of a UTF-8 encoded C1 control).
    C2,
    /// Inside a string; `esc`: ESC seen, `c2`: 0xC2 seen.
    String {
        kind: Kind,
        esc: bool,
        c2: bool,
    },
}

/// Turns the string sequences of a byte stream into visible text (see the
/// module docs); everything else passes unchanged.
pub struct Revealer {
    style: Style,
    state: State,
    /// The start of a UTF-8 sequence of a payload, split across feeds.
    carry: Vec<u8>,
}

impl Revealer {
    pub fn new(style: Style) -> Self {
        Self {
            style,
            state: State::Ground,
            carry: Vec::new(),
        }
    }

    /// Appends `data`, its string sequences revealed, to `out`. Sequences
    /// split across calls are kept whole.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut text = Vec::new();
        for &byte in data {
            self.byte(byte, out, &mut text);
        }
        self.flush_text(&mut text, out);
    }

    /// Ends the stream: a string still open is shown as cut off.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::String { esc, c2, .. } => {
                let mut text = Vec::new();
                if esc {
                    text.push(0x1b);
                }
                if c2 {
                    text.push(0xc2);
                }
                self.flush_text(&mut text, out);
                self.close(out, " (cut off)");
            }
            State::Esc => out.push(0x1b),
            State::C2 => out.push(0xc2),
            State::Ground => {}
        }
        self.state = State::Ground;
    }

    fn byte(&mut self, byte: u8, out: &mut Vec<u8>, text: &mut Vec<u8>) {
        match self.state {
            State::Ground => match byte {
                0x1b => self.state = State::Esc,
                0xc2 => self.state = State::C2,
                _ => out.push(byte),
            },
            State::Esc => match Kind::of_esc(byte) {
                Some(kind) => self.open(kind, out),
                // ESC ESC: the second starts the sequence over, as in a
                // terminal.
                None if byte == 0x1b => {}
                None => {
                    out.extend_from_slice(&[0x1b, byte]);
                    self.state = State::Ground;
                }
            },
            State::C2 => match Kind::of_c1(byte) {
                Some(kind) => self.open(kind, out),
                None if byte == 0xc2 => out.push(0xc2),
                None if byte == 0x1b => {
                    out.push(0xc2);
                    self.state = State::Esc;
                }
                None => {
                    out.extend_from_slice(&[0xc2, byte]);
                    self.state = State::Ground;
                }
            },
            State::String { kind, esc, c2 } => {
                if esc {
                    self.flush_text(text, out);
                    self.close(out, "");
                    // ESC \ is the terminator; any other ESC ends the
                    // string and starts a sequence of its own.
                    self.state = State::Ground;
                    if byte != b'\\' {
                        self.state = State::Esc;
                        self.byte(byte, out, text);
                    }
                    return;
                }
                if c2 {
                    if byte == 0x9c {
                        self.flush_text(text, out);
                        self.close(out, "");
                        self.state = State::Ground;
                        return;
                    }
                    text.push(0xc2);
                    self.state = State::String {
                        kind,
                        esc: false,
                        c2: false,
                    };
                }
                match byte {
                    0x1b => self.set_string(kind, true, false),
                    0xc2 => self.set_string(kind, false, true),
                    0x07 if kind == Kind::Osc => {
                        self.flush_text(text, out);
                        self.close(out, "");
                        self.state = State::Ground;
                    }
                    // CAN and SUB cancel a string.
                    0x18 | 0x1a => {
                        self.flush_text(text, out);
                        self.close(out, " (cancelled)");
                        self.state = State::Ground;
                    }
                    _ => text.push(byte),
                }
            }
        }
    }

    fn set_string(&mut self, kind: Kind, esc: bool, c2: bool) {
        self.state = State::String { kind, esc, c2 };
    }

    fn open(&mut self, kind: Kind, out: &mut Vec<u8>) {
        if self.style == Style::Highlighted {
            out.extend_from_slice(b"\x1b[7m");
        }
        out.extend_from_slice("⟦".as_bytes());
        out.extend_from_slice(kind.name().as_bytes());
        out.push(b' ');
        self.set_string(kind, false, false);
    }

    fn close(&mut self, out: &mut Vec<u8>, note: &str) {
        if !self.carry.is_empty() {
            for b in std::mem::take(&mut self.carry) {
                let _ = write!(Bytes(out), "\\x{b:02x}");
            }
        }
        out.extend_from_slice(note.as_bytes());
        out.extend_from_slice("⟧".as_bytes());
        if self.style == Style::Highlighted {
            out.extend_from_slice(b"\x1b[27m");
        }
    }

    /// Writes a payload's bytes, escaped, keeping a UTF-8 sequence split at
    /// the end for the next call.
    fn flush_text(&mut self, text: &mut Vec<u8>, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.append(text);
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.extend_from_slice(escape(valid).as_bytes());
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    let good = std::str::from_utf8(good).unwrap_or_default();
                    out.extend_from_slice(escape(good).as_bytes());
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                let _ = write!(Bytes(out), "\\x{b:02x}");
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            self.carry = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// `write!` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(chunks: &[&[u8]]) -> String {
        let mut revealer = Revealer::new(Style::Plain);
        let mut out = Vec::new();
        for chunk in chunks {
            revealer.feed(chunk, &mut out);
        }
        revealer.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_kind_of_string_is_shown_with_its_payload() {
        assert_eq!(shown(&[b"a\x1b]2;TITLE\x07b"]), "a⟦OSC 2;TITLE⟧b");
        assert_eq!(shown(&[b"\x1b]52;c;c2VjcmV0\x1b\\"]), "⟦OSC 52;c;c2VjcmV0⟧");
        assert_eq!(
            shown(&[b"\x1bPuid=1000(alice)\x1b\\\n"]),
            "⟦DCS uid=1000(alice)⟧\n"
        );
        assert_eq!(
            shown(&[b"\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\"]),
            "⟦APC apc⟧⟦PM pm⟧⟦SOS sos⟧"
        );
        // 8-bit introducers and terminator, as UTF-8 encoded C1 controls.
        assert_eq!(shown(&["\u{90}hidden\u{9c}x".as_bytes()]), "⟦DCS hidden⟧x");
        assert_eq!(shown(&["\u{9d}0;t\u{7}".as_bytes()]), "⟦OSC 0;t⟧");
    }

    #[test]
    fn sequences_split_anywhere_are_whole_and_other_escapes_pass() {
        let whole = b"x\x1b[31mred\x1b[0m \x1bPsecr\xc3\xa9t\x1b\\ \xc2\xa0end";
        let expected = shown(&[whole]);
        assert_eq!(expected, "x\x1b[31mred\x1b[0m ⟦DCS secrét⟧ \u{a0}end");
        for split in 0..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(shown(&[a, b]), expected, "split at {split}");
        }
    }

    #[test]
    fn payloads_cannot_reach_the_terminal_and_open_strings_are_shown() {
        // Controls in a payload are escapes; BEL ends only an OSC.
        // An ESC other than ESC \ ends the string and is a sequence of
        // its own.
        assert_eq!(shown(&[b"\x1bPa\x07\x1b[2Jb"]), "⟦DCS a\\x07⟧\x1b[2Jb");
        assert_eq!(
            shown(&[b"\x1b]0;never ends"]),
            "⟦OSC 0;never ends (cut off)⟧"
        );
        assert_eq!(shown(&[b"\x1bPab\x18c"]), "⟦DCS ab (cancelled)⟧c");
        assert!(!shown(&[b"\x1b]0;\xe2\x80\xaeevil\x07"]).contains('\u{202e}'));
    }

    #[test]
    fn a_doubled_escape_starts_over() {
        assert_eq!(shown(&[b"\x1b\x1b]0;t\x07"]), "⟦OSC 0;t⟧");
    }

    #[test]
    fn a_replay_highlights_what_it_reveals() {
        let mut revealer = Revealer::new(Style::Highlighted);
        let mut out = Vec::new();
        revealer.feed(b"\x1b]2;t\x07", &mut out);
        assert_eq!(out, "\x1b[7m⟦OSC 2;t⟧\x1b[27m".as_bytes());
    }
}
