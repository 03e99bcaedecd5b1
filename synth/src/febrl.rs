//! The public FEBRL1, FEBRL2 and FEBRL3 record-linkage sets as truth
//! records, so that the matcher is also measured on data nobody here wrote.
//!
//! The CSV files are vendored in `data/febrl/` (their origin, license and
//! sizes are in its README) and compiled into this crate. Each line is one
//! record: `rec_id, given_name, surname, street_number, address_1,
//! address_2, suburb, postcode, state, date_of_birth, soc_sec_id`. Records
//! `rec-N-org` and `rec-N-dup-K` with the same `N` are one person.
//!
//! How a line becomes a [`PatientRecord`]:
//!
//! | FEBRL | record |
//! |---|---|
//! | `rec_id` | source id, as is; its `rec-N` is the truth's person |
//! | `given_name`, `surname` | first and last name through [`normalize::name`] (Latin, lower case as given); empty → none |
//! | — | no patronymic, sex, SNILS, OMS, phone or e-mail: FEBRL has none, and none is invented |
//! | `date_of_birth` `YYYYMMDD` | birth date; a date that does not exist (`19371233`) or lies outside 1880..[`REFERENCE_DATE`] is no birth date and a [`FieldIssue`] with the raw text (`bad_format` / `out_of_range`) |
//! | `soc_sec_id` | a document of type [`DocumentType::FOREIGN_NATIONAL_ID`] (source type code `soc_sec_id`), number through [`normalize::document`] |
//! | address fields | dropped: the record has no address |
//!
//! The records are spread over the two [`SOURCES`] by a fixed hash of the
//! record id, so that about half of the true pairs lie across the sources
//! and half within one (the matcher matches both).

use proto::{normalize, DocumentType, PatientRecord};

use crate::rng::mix64;
use crate::truth::{TruthRecord, SOURCES};
use crate::REFERENCE_DATE;

/// The sets, by the name the evaluation uses, with their CSV text.
pub const SETS: [(&str, &str); 3] = [
    ("febrl1", include_str!("../data/febrl/dataset1.csv")),
    ("febrl2", include_str!("../data/febrl/dataset2.csv")),
    ("febrl3", include_str!("../data/febrl/dataset3.csv")),
];

/// The records of set `name` (`febrl1`, `febrl2`, `febrl3`), in file order;
/// `None` for another name.
pub fn records(name: &str) -> Option<Vec<TruthRecord>> {
    let (_, csv) = SETS.iter().find(|(n, _)| *n == name)?;
    Some(parse(csv).expect("the vendored FEBRL files parse"))
}

/// Parses FEBRL CSV text (a header line, then one record per line).
/// Errors name the line and what is wrong, never its values.
pub fn parse(csv: &str) -> Result<Vec<TruthRecord>, String> {
    let mut out = Vec::new();
    for (n, line) in csv.lines().enumerate() {
        if line.trim().is_empty() || (n == 0 && line.starts_with("rec_id")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 11 {
            return Err(format!(
                "line {}: {} fields, expected 11",
                n + 1,
                fields.len()
            ));
        }
        let person = person_of(fields[0])
            .ok_or_else(|| format!("line {}: record id is not rec-N-org or rec-N-dup-K", n + 1))?;
        out.push(TruthRecord {
            source: source_of(fields[0]),
            source_id: fields[0].to_string(),
            person: person.to_string(),
            group: None,
            record: record(&fields),
        });
    }
    Ok(out)
}

/// `rec-N` of `rec-N-org` / `rec-N-dup-K`.
fn person_of(rec_id: &str) -> Option<&str> {
    let (person, tail) = rec_id
        .strip_suffix("-org")
        .map(|p| (p, ""))
        .or_else(|| rec_id.split_once("-dup-"))?;
    let n = person.strip_prefix("rec-")?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!n.is_empty() && digits(n) && digits(tail)).then_some(person)
}

/// One of [`SOURCES`], by a fixed hash of the record id (FNV-1a, then
/// SplitMix64's mix): the same on every machine and run.
fn source_of(rec_id: &str) -> &'static str {
    let fnv = rec_id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    SOURCES[(mix64(fnv) & 1) as usize]
}

fn record(fields: &[&str]) -> PatientRecord {
    let mut record = PatientRecord {
        first_name: normalize::name(fields[1]),
        last_name: normalize::name(fields[2]),
        ..Default::default()
    };
    record.birth_date =
        normalize::birth_date_yyyymmdd(fields[9], REFERENCE_DATE, &mut record.issues);
    record.documents.extend(normalize::document(
        DocumentType::FOREIGN_NATIONAL_ID,
        Some("soc_sec_id"),
        None,
        Some(fields[10]),
    ));
    record
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::NaiveDate;
    use proto::record::FieldIssue;
    use proto::Problem;

    use super::*;

    /// Pairs of records of one person: (within one source, across sources).
    fn true_pairs(records: &[TruthRecord]) -> (usize, usize) {
        let mut by_person: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in records {
            by_person.entry(&r.person).or_default().push(r.source);
        }
        let (mut within, mut across) = (0, 0);
        for sources in by_person.values() {
            for (i, a) in sources.iter().enumerate() {
                for b in &sources[i + 1..] {
                    if a == b {
                        within += 1;
                    } else {
                        across += 1;
                    }
                }
            }
        }
        (within, across)
    }

    #[test]
    fn sets_have_their_published_sizes_and_pairs_in_and_across_sources() {
        for (name, size, pairs) in [
            ("febrl1", 1_000, 500),
            ("febrl2", 5_000, 1_934),
            ("febrl3", 5_000, 6_538),
        ] {
            let set = records(name).unwrap();
            assert_eq!(set.len(), size, "{name}");
            let (within, across) = true_pairs(&set);
            assert_eq!(within + across, pairs, "{name}");
            // About half and half; both kinds are exercised.
            assert!(
                within * 3 > pairs && across * 3 > pairs,
                "{name}: {within} / {across}"
            );
        }
        assert!(records("febrl4").is_none());
    }

    #[test]
    fn a_line_maps_to_names_birth_date_and_a_foreign_national_id() {
        let csv = "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id\n\
                   rec-122-org, lachlan, berry, 69, giblin street, killarney, bittern, 4814, qld, 19990219, 7364009\n\
                   rec-122-dup-3, , berry, 69, giblin street, , bittern, 4814, qld, 19371233, 736 4009\n";
        let set = parse(csv).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set[0].person, "rec-122");
        assert_eq!(set[1].person, "rec-122");
        assert_eq!(set[1].source_id, "rec-122-dup-3");
        let r = &set[0].record;
        assert_eq!(r.first_name.as_deref(), Some("lachlan"));
        assert_eq!(r.last_name.as_deref(), Some("berry"));
        assert_eq!(r.middle_name, None);
        assert_eq!(r.sex, None);
        assert_eq!(r.birth_date, NaiveDate::from_ymd_opt(1999, 2, 19));
        assert_eq!(r.documents.len(), 1);
        assert_eq!(r.documents[0].doc_type, DocumentType::FOREIGN_NATIONAL_ID);
        assert_eq!(r.documents[0].number, "7364009");
        assert_eq!(r.documents[0].problem, None);
        assert!(r.snils.is_none() && r.phones.is_empty() && r.emails.is_empty());
        assert!(r.issues.is_empty());
        // An empty name is no name; a date that does not exist is kept raw.
        let d = &set[1].record;
        assert_eq!(d.first_name, None);
        assert_eq!(d.birth_date, None);
        assert_eq!(
            d.issues,
            vec![FieldIssue {
                field: "birth_date".into(),
                problem: Problem::BadFormat,
                raw: Some("19371233".into()),
            }]
        );
        assert_eq!(d.documents[0].number, "7364009");
    }

    #[test]
    fn malformed_lines_are_refused_by_number() {
        assert_eq!(
            parse("rec-1-org, a, b\n").unwrap_err(),
            "line 1: 3 fields, expected 11"
        );
        let bad_id = "rec-x-org, a, b, 1, s, , t, 1, q, 19990219, 1\n";
        assert!(parse(bad_id).unwrap_err().starts_with("line 1: record id"));
    }

    #[test]
    fn every_vendored_birth_date_is_a_date_or_an_issue() {
        for (name, _) in SETS {
            for r in records(name).unwrap() {
                let issues = r.record.issues.len();
                assert!(issues <= 1, "{}", r.source_id);
                assert!(!(issues == 1 && r.record.birth_date.is_some()));
            }
        }
    }
}
