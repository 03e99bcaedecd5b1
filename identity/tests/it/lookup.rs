//! Person by id, by record (PIX), by identifier; ids only without
//! `personal:read`.

use serde_json::Value;

use crate::support::{person, rec, snils, Service};

/// Ivanov in two sources (same SNILS), Petrova alone.
async fn seeded() -> (Service, i64, i64) {
    let s = Service::start().await;
    s.load(&[
        rec(
            "qms",
            "41449/A22",
            person(
                "Иванов",
                "Иван",
                "Петрович",
                (1980, 5, 17),
                Some(112233445),
                Some(("4506", "123456")),
            ),
        ),
        rec(
            "infoclinica",
            "1001",
            person(
                "Иванов",
                "Иван",
                "Петрович",
                (1980, 5, 17),
                Some(112233445),
                None,
            ),
        ),
        rec(
            "infoclinica",
            "1002",
            person(
                "Петрова",
                "Анна",
                "Сергеевна",
                (1975, 1, 2),
                Some(223344556),
                None,
            ),
        ),
    ])
    .await;
    s.match_pending().await;
    let ivanov = s.person_of("qms", "41449/A22").await;
    let petrova = s.person_of("infoclinica", "1002").await;
    assert_eq!(ivanov, s.person_of("infoclinica", "1001").await);
    assert_ne!(ivanov, petrova);
    (s, ivanov, petrova)
}

fn records(v: &Value) -> Vec<String> {
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["source"].as_str().unwrap(),
                r["source_id"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn person_by_id_gives_ids_without_personal_scope_and_logs_personal_views() {
    let (s, ivanov, _) = seeded().await;
    let (status, body, _) = s.get(&s.reader, &format!("/v1/persons/{ivanov}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["person_id"], ivanov);
    assert_eq!(body["status"], "active");
    assert_eq!(records(&body), ["infoclinica:1001", "qms:41449/A22"]);
    assert!(body["records"][0]["since"].is_string());
    assert!(body.get("golden").is_none(), "ids only: {body}");
    let text = body.to_string();
    assert!(
        !text.contains("Иванов") && !text.contains("112233445"),
        "{text}"
    );
    // The history: both placements, by the matcher.
    let placements = body["history"]["placements"].as_array().unwrap();
    assert_eq!(placements.len(), 2);
    assert!(placements.iter().all(|p| p["actor"] == "matcher"));
    assert!(
        s.access_log().await.is_empty(),
        "an ids-only read is not a view of personal data"
    );

    let (status, body, _) = s.get(&s.viewer, &format!("/v1/persons/{ivanov}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["golden"]["last_name"], "Иванов");
    assert_eq!(body["golden"]["birth_date"], "1980-05-17");
    assert_eq!(body["golden"]["snils"], snils(112233445));
    let log = s.access_log().await;
    assert_eq!(log.len(), 1, "{log:?}");
    let (client, command, subject, recs) = &log[0];
    assert_eq!(client.as_deref(), Some("viewer"));
    assert_eq!(command, "identity GET /v1/persons/{id}");
    assert_eq!(subject, &format!("person {ivanov}"));
    assert_eq!(recs, &["infoclinica:1001", "qms:41449/A22"]);
}

#[tokio::test]
async fn a_record_answers_with_its_person_and_every_record_of_it() {
    let (s, ivanov, _) = seeded().await;
    let (status, body, _) = s
        .get(&s.reader, "/v1/records?source=qms&source_id=41449%2FA22")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["person_id"], ivanov);
    assert_eq!(body["source_id"], "41449/A22");
    assert_eq!(records(&body), ["infoclinica:1001", "qms:41449/A22"]);
    assert!(body.get("golden").is_none());

    let (status, body, _) = s
        .get(&s.reader, "/v1/records?source=qms&source_id=nope")
        .await;
    crate::support::assert_problem(status, &body, 404, &[]);
}

#[tokio::test]
async fn identifiers_are_normalized_as_on_load() {
    let (s, ivanov, petrova) = seeded().await;
    let raw = snils(112233445);
    // The clerk's layout `112-233-445 95`.
    let typed = format!("{}-{}-{} {}", &raw[0..3], &raw[3..6], &raw[6..9], &raw[9..]);
    let (status, body, _) = s
        .get(
            &s.reader,
            &format!("/v1/identifiers?snils={}", typed.replace(' ', "+")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["persons"], serde_json::json!([ivanov]));
    assert_eq!(body["records"].as_array().unwrap().len(), 2);

    let (status, body, _) = s
        .get(
            &s.reader,
            "/v1/identifiers?document_type=passport&series=45+06&number=123456",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["persons"], serde_json::json!([ivanov]));
    let (_, body, _) = s
        .get(
            &s.reader,
            &format!("/v1/identifiers?snils={}", snils(223344556)),
        )
        .await;
    assert_eq!(body["persons"], serde_json::json!([petrova]));
    // Nobody holds it: an empty answer, not an error.
    let (status, body, _) = s
        .get(
            &s.reader,
            &format!("/v1/identifiers?snils={}", snils(998877665)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["persons"], serde_json::json!([]));
    // Every lookup is in the access log, by kind and records, not value.
    let log = s.access_log().await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0].2, "lookup by snils");
    assert_eq!(log[1].2, "lookup by document `passport`");
    assert!(log.iter().all(|l| !format!("{l:?}").contains("112233445")));

    // A SNILS failing its checksum is refused, without being echoed.
    let bad = format!(
        "{}{}",
        &raw[..9],
        if &raw[9..] == "00" { "01" } else { "00" }
    );
    let (status, body, _) = s
        .get(&s.reader, &format!("/v1/identifiers?snils={bad}"))
        .await;
    crate::support::assert_problem(status, &body, 400, &[&bad]);
    assert!(
        body["detail"].as_str().unwrap().contains("bad_checksum"),
        "{body}"
    );
}

#[tokio::test]
async fn review_items_are_listed_by_id() {
    let (s, _, _) = seeded().await;
    let (status, body, _) = s.get(&s.reader, "/v1/review-items").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array());
}
