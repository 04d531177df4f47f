//! Target `first_frame`: bastiond's first-frame assembler
//! ([`bastion::broker::request::assemble_from`]), fed chunks that carry
//! real descriptors (duplicates of /dev/null), as `recvmsg` returns them.
//!
//! Input format:
//! - byte 0: bits 0-2 = number of chunks - 1; bits 3-4 = the length
//!   prefix: 1 = a correct one is put before the body, 2 = the body's
//!   length plus the signed byte that follows the chunk list, 0 or 3 = none
//!   added (the body carries its own);
//! - per chunk, two bytes: flags (bits 0-2 = descriptors, bit 3 = the
//!   kernel truncated the control message) and length (255 = all that is
//!   left);
//! - the rest: the body, cut into the chunks in order.
//!
//! Properties:
//! - the process has exactly as many open descriptors after each call as
//!   before it (every received descriptor is closed or returned; the
//!   returned ones are then dropped), and while a returned request is held
//!   exactly its three more;
//! - a request comes back only when the module's rules hold: exactly three
//!   descriptors, all with the first chunk, no truncated control message,
//!   and the bytes end exactly at the frame's end.

use bastion::broker::request::{REQUEST_FDS, Received, assemble_from};
use bastion::protocol::{MAX_FRAME, VERSION};

use crate::input::Input;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let specs: Vec<(usize, bool, u8)> = (0..=mode & 7)
        .map(|_| {
            let flags = input.byte();
            (usize::from(flags & 7), flags & 8 != 0, input.byte())
        })
        .collect();
    let prefix = match (mode >> 3) & 3 {
        1 => Some(0),
        2 => Some(i64::from(input.byte() as i8)),
        _ => None,
    };
    let body = input.rest();
    let mut stream = Vec::with_capacity(body.len() + 4);
    if let Some(delta) = prefix {
        let len = (body.len() as i64 + delta).clamp(0, i64::from(u32::MAX));
        stream.extend_from_slice(&(len as u32).to_be_bytes());
    }
    stream.extend_from_slice(body);

    let mut chunks: Vec<(&[u8], usize, bool)> = Vec::with_capacity(specs.len());
    let mut at = 0;
    for (fds, truncated, len) in specs {
        let left = stream.len() - at;
        let take = if len == 255 {
            left
        } else {
            usize::from(len).min(left)
        };
        chunks.push((&stream[at..at + take], fds, truncated));
        at += take;
    }

    let before = open_fds();
    let result = assemble_from(&chunks);
    let held = open_fds();
    match &result {
        Ok(Some(received)) => {
            assert_eq!(
                held,
                before + REQUEST_FDS,
                "a returned request holds exactly its 3 descriptors ({before} open before, {held} now); chunks {}",
                describe(&chunks)
            );
            check_accepted(received, &chunks);
        }
        _ => assert_eq!(
            held,
            before,
            "descriptors leaked by a frame that returned no request ({result:?}); chunks {}",
            describe(&chunks)
        ),
    }
    drop(result);
    let after = open_fds();
    assert_eq!(
        after,
        before,
        "descriptors leaked: {before} open before, {after} after; chunks {}",
        describe(&chunks)
    );
}

/// A returned request: the chunk that completed the frame is the one where
/// the bytes reach exactly 4 + the prefix's length, and every chunk up to it
/// follows the descriptor rules.
fn check_accepted(received: &Received, chunks: &[(&[u8], usize, bool)]) {
    use std::os::fd::AsRawFd;
    assert_eq!(received.request.version, VERSION);
    let raw = [
        received.stdin.as_raw_fd(),
        received.stdout.as_raw_fd(),
        received.stderr.as_raw_fd(),
    ];
    assert!(
        raw[0] != raw[1] && raw[1] != raw[2] && raw[0] != raw[2],
        "three distinct descriptors: {raw:?}"
    );
    // What the assembler was given: each chunk cut to its buffer's room.
    let mut have = 0;
    let mut frame_end = None;
    for (i, &(bytes, fds, truncated)) in chunks.iter().enumerate() {
        assert!(!truncated, "accepted despite a truncated control message");
        let expected_fds = if i == 0 { REQUEST_FDS } else { 0 };
        assert_eq!(
            fds, expected_fds,
            "accepted with {fds} descriptors in chunk {i}"
        );
        have += bytes.len().min(4 + MAX_FRAME + 1 - have);
        if frame_end.is_none() && have >= 4 {
            let prefix: [u8; 4] = chunks_prefix(chunks);
            frame_end = Some(4 + u32::from_be_bytes(prefix) as usize);
        }
        if Some(have) == frame_end {
            return;
        }
        assert!(
            frame_end.is_none_or(|end| have < end),
            "accepted with bytes beyond the frame: {have} of {frame_end:?}"
        );
    }
    panic!("accepted before the frame was whole ({have} bytes, frame {frame_end:?})");
}

fn chunks_prefix(chunks: &[(&[u8], usize, bool)]) -> [u8; 4] {
    let mut prefix = [0; 4];
    for (slot, byte) in prefix
        .iter_mut()
        .zip(chunks.iter().flat_map(|c| c.0.iter()))
    {
        *slot = *byte;
    }
    prefix
}

fn describe(chunks: &[(&[u8], usize, bool)]) -> String {
    chunks
        .iter()
        .map(|(bytes, fds, truncated)| {
            format!("({} bytes, {fds} fds, truncated {truncated})", bytes.len())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
