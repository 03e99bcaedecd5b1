//! Birth dates written `YYYYMMDD` (qMS exports, FEBRL).

use chrono::NaiveDate;

use crate::normalize::{FieldIssue, Problem};

/// Earliest birth date accepted as plausible.
pub fn earliest_birth_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1880, 1, 1).expect("valid date")
}

/// `YYYYMMDD`; anything else, or a date outside 1880..`latest`, becomes a
/// `birth_date` issue with the raw text, and no birth date. Empty: none,
/// and no issue.
pub fn birth_date_yyyymmdd(
    raw: &str,
    latest: NaiveDate,
    issues: &mut Vec<FieldIssue>,
) -> Option<NaiveDate> {
    if raw.is_empty() {
        return None;
    }
    let parsed = (raw.len() == 8 && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| NaiveDate::parse_from_str(raw, "%Y%m%d").ok())
        .flatten();
    let problem = match parsed {
        None => Problem::BadFormat,
        Some(d) if d < earliest_birth_date() || d > latest => Problem::OutOfRange,
        Some(d) => return Some(d),
    };
    issues.push(FieldIssue {
        field: "birth_date".into(),
        problem,
        raw: Some(raw.to_string()),
    });
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_dates_and_their_problems() {
        let latest = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let mut issues = Vec::new();
        assert_eq!(
            birth_date_yyyymmdd("19800115", latest, &mut issues),
            NaiveDate::from_ymd_opt(1980, 1, 15)
        );
        assert_eq!(birth_date_yyyymmdd("", latest, &mut issues), None);
        assert!(issues.is_empty());
        assert_eq!(birth_date_yyyymmdd("19801399", latest, &mut issues), None);
        assert_eq!(birth_date_yyyymmdd("20301231", latest, &mut issues), None);
        let problems: Vec<Problem> = issues.iter().map(|i| i.problem).collect();
        assert_eq!(problems, [Problem::BadFormat, Problem::OutOfRange]);
    }
}
