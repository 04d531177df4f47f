//! The audit trail's timestamps: RFC 3339 in UTC, always to the
//! millisecond (`2026-11-23T08:00:00.120Z`, never `…:00.12Z` or `…:00Z`),
//! so every `ts` has the same width and sorts as text (`jq sort_by(.ts)`).
//! Reading accepts any RFC 3339 time, so older lines still parse.
//!
//! Use as `#[serde(with = "crate::audit::timestamp")]` (or `::option`).

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `t` in UTC, truncated to the millisecond: what a record keeps of it.
pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

/// Now, as a record keeps it (UTC, to the millisecond), so that what is
/// held in memory equals what is read back.
pub fn now() -> OffsetDateTime {
    truncate(OffsetDateTime::now_utc())
}

/// `t` in UTC, to the millisecond (truncated), fixed width.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("a UTC time within years 0..9999 formats")
}

pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
}

/// The same for optional times (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        text.map(|t| OffsetDateTime::parse(&t, &Rfc3339).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn every_timestamp_has_milliseconds_and_the_same_width() {
        let times = [
            datetime!(2026-11-23 08:00:11 UTC),
            datetime!(2026-11-23 08:00:17.12 UTC),
            datetime!(2026-11-23 08:00:17.123456 UTC),
            datetime!(2026-11-23 09:00:00.5 +01:00),
        ];
        let texts: Vec<String> = times.iter().map(|t| format(*t)).collect();
        assert_eq!(
            texts,
            [
                "2026-11-23T08:00:11.000Z",
                "2026-11-23T08:00:17.120Z",
                "2026-11-23T08:00:17.123Z",
                "2026-11-23T08:00:00.500Z",
            ]
        );
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(
            sorted[0], "2026-11-23T08:00:00.500Z",
            "text order is time order"
        );
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Line {
        #[serde(with = "super")]
        ts: OffsetDateTime,
        #[serde(with = "super::option")]
        until: Option<OffsetDateTime>,
    }

    #[test]
    fn older_lines_without_milliseconds_still_read() {
        let line: Line =
            serde_json::from_str(r#"{"ts":"2026-11-23T08:00:11Z","until":null}"#).unwrap();
        assert_eq!(line.ts, datetime!(2026-11-23 08:00:11 UTC));
        let out = serde_json::to_string(&line).unwrap();
        assert_eq!(out, r#"{"ts":"2026-11-23T08:00:11.000Z","until":null}"#);
        let back: Line = serde_json::from_str(&out).unwrap();
        assert_eq!(back, line);
    }
}
