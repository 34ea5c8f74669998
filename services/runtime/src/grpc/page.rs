//! One way to page through every list RPC: one default size, one maximum,
//! one message, and opaque keyset tokens (the sort key of the last row
//! shown, so a page never skips or repeats a row as rows are added).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::FieldViolations;

/// The page size when a request names none.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// The largest page any list RPC returns.
pub const MAX_PAGE_SIZE: i32 = 500;

/// The rows to show for `page_size` (0 asks for the default); outside
/// 0..=[`MAX_PAGE_SIZE`] it is a violation of `page_size`.
pub fn page_size(value: i32, violations: &mut FieldViolations) -> i64 {
    if !(0..=MAX_PAGE_SIZE).contains(&value) {
        violations.add(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})"),
        );
        return i64::from(DEFAULT_PAGE_SIZE);
    }
    i64::from(if value == 0 { DEFAULT_PAGE_SIZE } else { value })
}

/// A token carrying a cursor's parts.
pub fn encode_token(parts: &[&str]) -> String {
    BASE64.encode(parts.join("|"))
}

/// The cursor in `token`, read from its parts by `parse`; `None` for no
/// token, and a violation of `page_token` for one this service did not
/// issue (undecodable, or parts `parse` refuses).
pub fn decode_cursor<T>(
    token: &str,
    violations: &mut FieldViolations,
    parse: impl FnOnce(&[&str]) -> Option<T>,
) -> Option<T> {
    if token.is_empty() {
        return None;
    }
    let cursor = BASE64
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| parse(&text.split('|').collect::<Vec<_>>()));
    if cursor.is_none() {
        violations.add("page_token", "is not a token this service issued");
    }
    cursor
}

/// A time as a cursor part (microseconds, as PostgreSQL keeps it).
pub fn instant_part(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

/// The time of an [`instant_part`].
pub fn parse_instant(part: &str) -> Option<DateTime<Utc>> {
    part.parse().ok().and_then(DateTime::from_timestamp_micros)
}

/// An ID cursor part.
pub fn parse_id(part: &str) -> Option<Uuid> {
    Uuid::parse_str(part).ok()
}

/// The token of a cursor that sorts by a time, then an ID.
pub fn time_and_id_token(at: DateTime<Utc>, id: Uuid) -> String {
    encode_token(&[&instant_part(at), &id.to_string()])
}

/// The cursor of a [`time_and_id_token`]; `None` for no token, and a
/// violation of `page_token` for one this service did not issue.
pub fn time_and_id(token: &str, violations: &mut FieldViolations) -> Option<(DateTime<Utc>, Uuid)> {
    decode_cursor(token, violations, |parts| match parts {
        [at, id] => Some((parse_instant(at)?, parse_id(id)?)),
        _ => None,
    })
}

/// Cuts `rows`, fetched with a limit of `size + 1`, to the page, and gives
/// the token of the next page (empty when this is the last).
pub fn finish_page<T>(rows: &mut Vec<T>, size: i64, token_of: impl Fn(&T) -> String) -> String {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        rows.last().map(token_of).unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_cap_and_refuse_with_one_message() {
        let mut violations = FieldViolations::new();
        assert_eq!(page_size(0, &mut violations), 50);
        assert_eq!(page_size(500, &mut violations), 500);
        assert!(violations.is_empty());
        page_size(501, &mut violations);
        page_size(-1, &mut violations);
        assert_eq!(violations.fields().count(), 2);
    }

    #[test]
    fn tokens_round_trip_and_a_foreign_one_is_refused() {
        let mut violations = FieldViolations::new();
        let pair = |parts: &[&str]| match parts {
            [a, b] => Some((a.to_string(), b.to_string())),
            _ => None,
        };
        let token = encode_token(&["1700000000", "abc"]);
        assert_eq!(
            decode_cursor(&token, &mut violations, pair),
            Some(("1700000000".to_owned(), "abc".to_owned()))
        );
        assert_eq!(decode_cursor("", &mut violations, pair), None);
        assert!(violations.is_empty());
        assert_eq!(decode_cursor("%%%", &mut violations, pair), None);
        assert_eq!(
            decode_cursor(&encode_token(&["one"]), &mut violations, pair),
            None
        );
        assert_eq!(violations.fields().count(), 2);
    }

    #[test]
    fn a_time_and_id_cursor_round_trips() {
        let mut violations = FieldViolations::new();
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(
            time_and_id(&time_and_id_token(at, id), &mut violations),
            Some((at, id))
        );
        assert_eq!(
            time_and_id(&encode_token(&["soon", "x"]), &mut violations),
            None
        );
        assert_eq!(violations.fields().count(), 1);
    }

    #[test]
    fn a_page_is_cut_and_names_its_last_row() {
        let mut rows = vec![1, 2, 3];
        assert_eq!(finish_page(&mut rows, 2, |n| n.to_string()), "2");
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert_eq!(finish_page(&mut rows, 2, |n| n.to_string()), "");
    }
}
