//! Reading asciicast v2 files back (player, search, export, recovery).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::CastHeader;

/// One `[time, code, data]` event.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    pub time: f64,
    pub code: String,
    pub data: String,
}

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    #[error("cannot read the recording {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: line {line} is not valid asciicast v2: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Streams a recording: the header, then events one by one. A line that
/// does not parse is an error naming it, except an incomplete last line
/// (a crash mid-write), which ends the stream.
pub struct CastReader {
    path: PathBuf,
    lines: io::Lines<BufReader<File>>,
    line: usize,
    pub header: CastHeader,
}

impl CastReader {
    pub fn open(path: &Path) -> Result<Self, CastError> {
        let read_err = |source| CastError::Read {
            path: path.to_owned(),
            source,
        };
        let mut lines =
            BufReader::with_capacity(256 * 1024, File::open(path).map_err(read_err)?).lines();
        let first =
            lines
                .next()
                .transpose()
                .map_err(read_err)?
                .ok_or_else(|| CastError::Invalid {
                    path: path.to_owned(),
                    line: 1,
                    message: "the file is empty".into(),
                })?;
        let header: CastHeader = serde_json::from_str(&first).map_err(|e| CastError::Invalid {
            path: path.to_owned(),
            line: 1,
            message: format!("bad header: {e}"),
        })?;
        if header.version != 2 {
            return Err(CastError::Invalid {
                path: path.to_owned(),
                line: 1,
                message: format!("version {} (only 2 is supported)", header.version),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            lines,
            line: 1,
            header,
        })
    }
}

impl Iterator for CastReader {
    type Item = Result<CastEvent, CastError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(source) => {
                    return Some(Err(CastError::Read {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<(f64, String, String)>(&text) {
                Ok((time, code, data)) => Ok(CastEvent { time, code, data }),
                Err(e) if e.is_eof() => return None,
                Err(e) => Err(CastError::Invalid {
                    path: self.path.clone(),
                    line: self.line,
                    message: e.to_string(),
                }),
            });
        }
    }
}

/// Reads a whole recording.
pub fn read_cast(path: &Path) -> Result<(CastHeader, Vec<CastEvent>), CastError> {
    let mut reader = CastReader::open(path)?;
    let header = reader.header.clone();
    let events = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((header, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_written_last_line_ends_the_stream_but_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cast");
        let header = r#"{"version":2,"width":80,"height":24,"timestamp":0,"bastion":{"x":1}}"#;
        std::fs::write(
            &path,
            format!("{header}\n[0.5, \"o\", \"hi\"]\n[1.5, \"o\", \"ha"),
        )
        .unwrap();
        let (h, events) = read_cast(&path).unwrap();
        assert_eq!((h.width, h.height), (80, 24));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "hi");
        std::fs::write(&path, format!("{header}\nnot json\n[1, \"o\", \"x\"]\n")).unwrap();
        let err = read_cast(&path).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        std::fs::write(&path, "{\"version\":1}\n").unwrap();
        assert!(read_cast(&path).is_err(), "only version 2");
    }
}
