//! `$match` agrees with the matcher: on a generated set, what it ranks
//! first as a link is the person the matcher assigns once the record is
//! loaded.

use proto::PatientRecord;
use serde_json::{json, Value};
use synth::truth::TruthGenerator;

use crate::support::Service;

/// The demographics of a record as a caller would send them: the valid
/// identifiers only (the matcher ignores the others; `$match` refuses them).
fn demographics(record: &PatientRecord) -> Value {
    let mut r = record.clone();
    loader::validity::recompute(&mut r);
    let valid =
        |c: &Option<proto::Checked>| c.as_ref().filter(|c| c.is_valid()).map(|c| c.value.clone());
    let documents: Vec<Value> = r
        .documents
        .iter()
        .filter(|d| d.problem.is_none() && d.doc_type.is_known() && d.doc_type.0 != 0)
        .map(|d| json!({"type": d.doc_type.0.to_string(), "series": d.series, "number": d.number}))
        .collect();
    json!({
        "last_name": r.last_name,
        "first_name": r.first_name,
        "middle_name": r.middle_name,
        "birth_date": r.birth_date,
        "sex": r.sex.map(|s| s.code()),
        "snils": valid(&r.snils),
        "oms_policy": valid(&r.oms_policy),
        "documents": documents,
        "phones": r.phones.iter().filter(|p| p.number.is_valid()).map(|p| &p.number.value).collect::<Vec<_>>(),
        "emails": r.emails.iter().filter(|e| e.address.is_valid()).map(|e| &e.address.value).collect::<Vec<_>>(),
    })
}

/// The person an id stands for now (following merges).
async fn current(s: &Service, person: i64) -> i64 {
    let (status, body, _) = s.get(&s.reader, &format!("/v1/persons/{person}")).await;
    match status {
        200 => person,
        308 => body["merged_into"].as_i64().unwrap(),
        other => panic!("person {person}: {other} {body}"),
    }
}

#[tokio::test]
async fn match_agrees_with_the_matcher_on_a_generated_set() {
    let s = Service::start().await;
    let all = TruthGenerator::new(2026).with_clerks().records(1_000);
    let (held, loaded): (Vec<_>, Vec<_>) = all.iter().enumerate().partition(|(n, _)| n % 10 == 0);
    let tuples = |v: &[(usize, &synth::truth::TruthRecord)]| {
        v.iter()
            .map(|(_, t)| (t.source.to_string(), t.source_id.clone(), t.record.clone()))
            .collect::<Vec<_>>()
    };
    s.load(&tuples(&loaded)).await;
    s.match_pending().await;
    let persons = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM persons")
            .fetch_one(&s.pool)
            .await
            .unwrap()
    };
    let before = persons().await;

    // Ask before the held-out records exist.
    let mut asked = Vec::new();
    for (_, t) in &held {
        let (status, body) = s
            .post(
                &s.reader,
                "/v1/match",
                &json!({"demographics": demographics(&t.record), "limit": 5}),
            )
            .await;
        assert_eq!(status, 200, "{}:{}: {body}", t.source, t.source_id);
        let candidates = body["candidates"].as_array().unwrap().clone();
        for pair in candidates.windows(2) {
            assert!(
                pair[0]["probability"].as_f64() >= pair[1]["probability"].as_f64(),
                "best first"
            );
        }
        asked.push((*t, candidates));
    }
    assert_eq!(persons().await, before, "asking created nothing");

    s.load(&tuples(&held)).await;
    s.match_pending().await;
    let (mut agree, mut disagree, mut unlinked) = (0, Vec::new(), 0);
    for (t, candidates) in &asked {
        let top = candidates.first();
        let Some(top) = top.filter(|c| c["decision"] == "link") else {
            unlinked += 1;
            continue;
        };
        assert!(top["probability"].as_f64().unwrap() >= 0.9999, "{top}");
        let expected = current(&s, top["person_id"].as_i64().unwrap()).await;
        let assigned = s.person_of(t.source, &t.source_id).await;
        if assigned == expected {
            agree += 1;
        } else {
            disagree.push(format!(
                "{}:{} top {} matcher {assigned}",
                t.source, t.source_id, expected
            ));
        }
    }
    eprintln!(
        "held-out records: {}; ranked first as a link and so assigned: {agree}; not linked: {unlinked}",
        asked.len()
    );
    assert!(
        disagree.is_empty(),
        "$match and the matcher disagree: {disagree:?}"
    );
    assert!(agree >= 50, "too few links to compare: {agree}");
}
