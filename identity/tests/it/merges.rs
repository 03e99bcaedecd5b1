//! Decisions over HTTP; merged ids redirect to the survivor, through
//! chains of merges; retired ids say so.

use serde_json::{json, Value};

use crate::support::{assert_problem, person, rec, Service};

/// Three persons: A (one record), B (one record), C (three records), born
/// the same day: only C's records share keys, and no guard (a different
/// SNILS or birth date) stands between any two, so operator links merge
/// them whole.
async fn three_persons() -> (Service, i64, i64, i64) {
    let s = Service::start().await;
    s.load(&[
        rec(
            "qms",
            "a1",
            person("Алексеев", "Артём", "Андреевич", (1983, 3, 13), None, None),
        ),
        rec(
            "qms",
            "b1",
            person("Борисов", "Борис", "Борисович", (1983, 3, 13), None, None),
        ),
        rec(
            "qms",
            "c1",
            person(
                "Васильев",
                "Виктор",
                "Васильевич",
                (1983, 3, 13),
                Some(333444555),
                None,
            ),
        ),
        rec(
            "infoclinica",
            "c2",
            person(
                "Васильев",
                "Виктор",
                "Васильевич",
                (1983, 3, 13),
                Some(333444555),
                None,
            ),
        ),
        rec(
            "infoclinica",
            "c3",
            person(
                "Васильев",
                "Виктор",
                "Васильевич",
                (1983, 3, 13),
                Some(333444555),
                None,
            ),
        ),
    ])
    .await;
    s.match_pending().await;
    let a = s.person_of("qms", "a1").await;
    let b = s.person_of("qms", "b1").await;
    let c = s.person_of("qms", "c1").await;
    assert_eq!(c, s.person_of("infoclinica", "c3").await);
    assert!(a != b && b != c && a != c);
    (s, a, b, c)
}

fn pair(a: (&str, &str), b: (&str, &str)) -> Value {
    json!({"a": {"source": a.0, "source_id": a.1}, "b": {"source": b.0, "source_id": b.1}})
}

#[tokio::test]
async fn merged_ids_redirect_to_the_survivor_through_a_chain() {
    let (s, a, b, c) = three_persons().await;
    // A and B, one record each: the older id (A) survives, B is merged.
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/decisions/link",
            &pair(("qms", "a1"), ("qms", "b1")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["persons"], json!([a.min(b)]));
    let (older, newer) = (a.min(b), a.max(b));
    let (status, body, headers) = s.get(&s.reader, &format!("/v1/persons/{newer}")).await;
    assert_eq!(status, 308, "{body}");
    assert_eq!(headers["location"], format!("/v1/persons/{older}").as_str());
    assert_eq!(body["merged_into"], older);
    assert_eq!(body["chain"], json!([older]));

    // A+B (two records) and C (three): C's id survives; the first merged
    // id now leads through the second to C.
    let (status, _) = s
        .post(
            &s.writer,
            "/v1/decisions/link",
            &pair(("qms", "a1"), ("qms", "c1")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.person_of("qms", "b1").await, c);
    let (status, body, headers) = s.get(&s.reader, &format!("/v1/persons/{newer}")).await;
    assert_eq!(status, 308, "{body}");
    assert_eq!(headers["location"], format!("/v1/persons/{c}").as_str());
    assert_eq!(body["chain"], json!([older, c]));
    let (status, body, _) = s.get(&s.reader, &format!("/v1/persons/{older}")).await;
    assert_eq!((status, body["merged_into"].clone()), (308, json!(c)));
    // The survivor: its history names the client that decided.
    let (status, body, _) = s.get(&s.reader, &format!("/v1/persons/{c}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["records"].as_array().unwrap().len(), 5);
    let decisions = body["history"]["decisions"].as_array().unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d["actor"] == "identity:writer" && d["kind"] == "link"),
        "{body}"
    );
    // FHIR: the merged Patient points at the survivor.
    let (status, p, _) = s.get(&s.reader, &format!("/fhir/Patient/{newer}")).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["active"], false);
    assert_eq!(p["link"][0]["type"], "replaced-by");
    assert_eq!(p["link"][0]["other"]["reference"], format!("Patient/{c}"));
}

#[tokio::test]
async fn a_person_whose_records_were_deleted_is_retired() {
    let (s, a, _, _) = three_persons().await;
    s.delete(&[("qms", "a1")]).await;
    s.match_pending().await;
    let (status, body, _) = s.get(&s.reader, &format!("/v1/persons/{a}")).await;
    assert_problem(status, &body, 410, &[]);
    assert_eq!(body["person_id"], a);
    assert_eq!(body["successors"], json!([]));
    let (status, body, _) = s
        .get(&s.reader, "/v1/records?source=qms&source_id=a1")
        .await;
    assert_problem(status, &body, 404, &[]);
}

#[tokio::test]
async fn decisions_lock_unlock_keep_apart_and_resolve() {
    let (s, a, _, c) = three_persons().await;
    let (status, body) = s
        .post(&s.writer, &format!("/v1/persons/{a}/lock"), &json!({}))
        .await;
    assert_eq!(
        (status, body["locked"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let locked: bool = sqlx::query_scalar("SELECT locked FROM persons WHERE person_id = $1")
        .bind(a)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert!(locked);
    let (status, _) = s
        .post(&s.writer, &format!("/v1/persons/{a}/unlock"), &json!({}))
        .await;
    assert_eq!(status, 200);
    // Keep two of C's records apart: one leaves.
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/decisions/keep-apart",
            &pair(("qms", "c1"), ("infoclinica", "c2")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        s.person_of("qms", "c1").await,
        s.person_of("infoclinica", "c2").await
    );
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM match_audit WHERE action IN ('decision', 'lock', 'unlock') ORDER BY id",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(actors, ["identity:writer"; 3]);
    // Revoked: the rules put them back together.
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/decisions/revoke",
            &pair(("qms", "c1"), ("infoclinica", "c2")),
        )
        .await;
    assert_eq!((status, body["revoked"].clone()), (200, json!(1)));
    assert_eq!(
        s.person_of("infoclinica", "c2").await,
        s.person_of("qms", "c1").await
    );
    let _ = c;
    // A review item resolved over HTTP.
    let item: i64 = sqlx::query_scalar(
        "INSERT INTO review_items (a_source, a_source_id, b_source, b_source_id, reason, score, evidence)
         VALUES ('qms', 'a1', 'qms', 'b1', 'test', 1, '{}') RETURNING id",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let path = format!("/v1/review-items/{item}/resolve");
    let (status, body) = s
        .post(&s.writer, &path, &json!({"resolution": "link"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.person_of("qms", "a1").await,
        s.person_of("qms", "b1").await
    );
    let (status, body) = s
        .post(&s.writer, &path, &json!({"resolution": "link"}))
        .await;
    assert_problem(status, &body, 409, &[]);
    // Unknown records and persons.
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/decisions/link",
            &pair(("qms", "a1"), ("qms", "zz")),
        )
        .await;
    assert_problem(status, &body, 404, &[]);
    let (status, body) = s
        .post(&s.writer, "/v1/persons/999999/lock", &json!({}))
        .await;
    assert_problem(status, &body, 404, &[]);
}
