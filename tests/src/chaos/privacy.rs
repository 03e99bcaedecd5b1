//! No personal data outside the records: every name, birth date, document,
//! SNILS, OMS policy, phone and e-mail the run loaded is looked for in every
//! process log of the run, in the dead letters' reasons and in what the
//! operator's listing commands print. A finding names the kind of value and
//! the place, never the value (the summary is itself a log).

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::PgPool;

/// One kind of value found in one place, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub kind: String,
    pub place: String,
    pub count: usize,
}

/// A value to look for: what it is and its text.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Personal {
    pub kind: String,
    pub value: String,
}

/// The personal values of the loaded records, in the forms a log would
/// show. Left out, to keep the check free of false alarms: names in Latin
/// letters (log lines are English), document numbers shorter than eight
/// characters (stream positions and counts look alike), birth dates after
/// 2009 (log timestamps).
pub async fn personal_values(pool: &PgPool) -> anyhow::Result<Vec<Personal>> {
    let rows = sqlx::query_as(
        "SELECT DISTINCT kind, value FROM (
             SELECT 'name' AS kind, unnest(ARRAY[last_name, first_name, middle_name]) AS value
               FROM source_records
             UNION ALL SELECT 'birth date', to_char(birth_date, 'YYYY-MM-DD')
               FROM source_records WHERE birth_date < DATE '2010-01-01'
             UNION ALL SELECT 'birth date', to_char(birth_date, 'YYYYMMDD')
               FROM source_records WHERE birth_date < DATE '2010-01-01'
             UNION ALL SELECT 'snils', snils FROM source_records
             UNION ALL SELECT 'oms policy', oms_policy FROM source_records
             UNION ALL SELECT 'document', coalesce(d->>'series', '') || (d->>'number')
               FROM source_records, jsonb_array_elements(documents) d
             UNION ALL SELECT 'document', d->>'number'
               FROM source_records, jsonb_array_elements(documents) d
             UNION ALL SELECT 'phone', p->'number'->>'value'
               FROM source_records, jsonb_array_elements(phones) p
             UNION ALL SELECT 'phone', right(p->'number'->>'value', 10)
               FROM source_records, jsonb_array_elements(phones) p
             UNION ALL SELECT 'e-mail', e->'address'->>'value'
               FROM source_records, jsonb_array_elements(emails) e
         ) v
         WHERE value IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter(worth_looking_for).collect())
}

fn worth_looking_for(p: &Personal) -> bool {
    let v = p.value.trim();
    match p.kind.as_str() {
        "name" => v.chars().count() >= 3 && !v.is_ascii(),
        "document" => v.chars().count() >= 8,
        _ => v.chars().count() >= 6,
    }
}

/// Where `values` occur in `text` as whole words (a value inside a longer
/// run of letters or digits does not count), by kind.
pub fn find(values: &[Personal], text: &str, place: &str) -> Vec<Leak> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in values {
        let found = text
            .match_indices(p.value.as_str())
            .filter(|(at, m)| whole_word(text, *at, m.len()))
            .count();
        if found > 0 {
            *counts.entry(p.kind.as_str()).or_default() += found;
        }
    }
    counts
        .into_iter()
        .map(|(kind, count)| Leak {
            kind: kind.to_string(),
            place: place.to_string(),
            count,
        })
        .collect()
}

fn whole_word(text: &str, at: usize, len: usize) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + len..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Every `*.log` file of the run's directory.
pub fn scan_logs(values: &[Personal], dir: &Path) -> anyhow::Result<Vec<Leak>> {
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            leaks.extend(find(values, &text, &name));
        }
    }
    Ok(leaks)
}

/// The dead letters' reasons.
pub async fn scan_dead_letters(values: &[Personal], pool: &PgPool) -> anyhow::Result<Vec<Leak>> {
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_all(pool)
        .await?;
    Ok(find(values, &reasons.join("\n"), "dead_letters.reason"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: &str, value: &str) -> Personal {
        Personal {
            kind: kind.into(),
            value: value.into(),
        }
    }

    #[test]
    fn whole_words_only_and_kinds_counted() {
        let values = [value("name", "Иванов"), value("phone", "79123456789")];
        let text = "rejected Иванов; Ивановский; seq 179123456789; phone=79123456789";
        let leaks = find(&values, text, "x.log");
        assert_eq!(
            leaks,
            vec![
                Leak {
                    kind: "name".into(),
                    place: "x.log".into(),
                    count: 1
                },
                Leak {
                    kind: "phone".into(),
                    place: "x.log".into(),
                    count: 1
                },
            ]
        );
        assert!(!worth_looking_for(&value("name", "John")));
        assert!(!worth_looking_for(&value("document", "123456")));
    }
}
