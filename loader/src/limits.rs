//! Field limits: the largest value a record may hold, per field
//! ([`FieldLimits`]). A record past one is poison (it would be so on every
//! delivery) and becomes a dead letter whose reason names the field's path
//! and the limit, never the value.

use proto::{Envelope, PatientRecord};

use crate::settings::FieldLimits;

/// A value past its limit: what the dead letter says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// `field_too_long` or `too_many_items`.
    pub code: &'static str,
    /// The field's path and the limit (`record.documents[2].number is
    /// longer than 64 characters`).
    pub reason: String,
}

/// The first field of `envelope` past its limit, if any.
pub fn check(envelope: &Envelope, limits: &FieldLimits) -> Result<(), Exceeded> {
    text("source_id", Some(&envelope.source_id), limits.source_id)?;
    match &envelope.record {
        Some(record) => check_record(record, limits),
        None => Ok(()),
    }
}

fn check_record(r: &PatientRecord, limits: &FieldLimits) -> Result<(), Exceeded> {
    text("record.last_name", r.last_name.as_deref(), limits.name)?;
    text("record.first_name", r.first_name.as_deref(), limits.name)?;
    text("record.middle_name", r.middle_name.as_deref(), limits.name)?;
    let unit = r.business_unit.as_deref();
    text("record.business_unit", unit, limits.business_unit)?;
    let snils = r.snils.as_ref().map(|c| c.value.as_str());
    text("record.snils", snils, limits.identifier)?;
    let oms = r.oms_policy.as_ref().map(|c| c.value.as_str());
    text("record.oms_policy", oms, limits.identifier)?;

    items("record.documents", r.documents.len(), limits.items)?;
    for (i, d) in r.documents.iter().enumerate() {
        let path = |field: &str| format!("record.documents[{i}].{field}");
        text(&path("series"), d.series.as_deref(), limits.document)?;
        text(&path("number"), Some(&d.number), limits.document)?;
        let code = d.source_type_code.as_deref();
        text(&path("source_type_code"), code, limits.document)?;
    }
    items("record.phones", r.phones.len(), limits.items)?;
    for (i, p) in r.phones.iter().enumerate() {
        let path = format!("record.phones[{i}].number");
        text(&path, Some(&p.number.value), limits.phone)?;
    }
    items("record.emails", r.emails.len(), limits.items)?;
    for (i, e) in r.emails.iter().enumerate() {
        let path = format!("record.emails[{i}].address");
        text(&path, Some(&e.address.value), limits.email)?;
    }
    items("record.issues", r.issues.len(), limits.items)?;
    for (i, issue) in r.issues.iter().enumerate() {
        text(
            &format!("record.issues[{i}].field"),
            Some(&issue.field),
            limits.text,
        )?;
        text(
            &format!("record.issues[{i}].raw"),
            issue.raw.as_deref(),
            limits.text,
        )?;
    }
    Ok(())
}

/// At most `max` characters (counted only when the bytes could exceed it).
fn text(path: &str, value: Option<&str>, max: usize) -> Result<(), Exceeded> {
    match value {
        Some(v) if v.len() > max && v.chars().count() > max => Err(Exceeded {
            code: "field_too_long",
            reason: format!("{path} is longer than {max} characters"),
        }),
        _ => Ok(()),
    }
}

fn items(path: &str, len: usize, max: usize) -> Result<(), Exceeded> {
    if len > max {
        return Err(Exceeded {
            code: "too_many_items",
            reason: format!("{path} has more than {max} entries"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proto::{Checked, Phone};

    fn envelope(record: PatientRecord) -> Envelope {
        Envelope::upsert("qms", "1", 1, Utc::now(), record)
    }

    #[test]
    fn a_long_value_is_named_by_path_without_the_value() {
        let limits = FieldLimits::default();
        let mut r = PatientRecord {
            last_name: Some("Я".repeat(limits.name)),
            ..Default::default()
        };
        assert_eq!(check(&envelope(r.clone()), &limits), Ok(()));
        r.phones = vec![
            Phone {
                number: Checked::valid("79123456789"),
                preferred: false,
            },
            Phone {
                number: Checked::valid("7".repeat(limits.phone + 1)),
                preferred: false,
            },
        ];
        let e = check(&envelope(r), &limits).unwrap_err();
        assert_eq!(e.code, "field_too_long");
        assert_eq!(
            e.reason,
            format!(
                "record.phones[1].number is longer than {} characters",
                limits.phone
            )
        );
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        let limits = FieldLimits {
            name: 3,
            ..Default::default()
        };
        let r = PatientRecord {
            first_name: Some("Ёжи".into()),
            ..Default::default()
        };
        assert_eq!(check(&envelope(r), &limits), Ok(()));
    }

    #[test]
    fn too_many_entries() {
        let limits = FieldLimits {
            items: 1,
            ..Default::default()
        };
        let phone = Phone {
            number: Checked::valid("79123456789"),
            preferred: false,
        };
        let r = PatientRecord {
            phones: vec![phone.clone(), phone],
            ..Default::default()
        };
        let e = check(&envelope(r), &limits).unwrap_err();
        assert_eq!(e.code, "too_many_items");
        assert_eq!(e.reason, "record.phones has more than 1 entries");
    }
}
