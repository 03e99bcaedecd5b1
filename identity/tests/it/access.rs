//! Authentication, scopes, rates: a refused request leaves its access-log
//! line and nothing else.

use serde_json::json;

use crate::support::{assert_problem, jwt, person, rec, Service};

async fn counts(s: &Service) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM match_decisions), (SELECT count(*) FROM match_audit),
                (SELECT count(*) FROM persons WHERE locked)",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn refused_requests_leave_only_their_access_log_line() {
    let s = Service::start().await;
    s.load(&[
        rec(
            "qms",
            "1",
            person(
                "Иванов",
                "Иван",
                "Иванович",
                (1970, 7, 7),
                Some(123123123),
                None,
            ),
        ),
        rec(
            "qms",
            "2",
            person(
                "Сидоров",
                "Пётр",
                "Петрович",
                (1971, 8, 8),
                Some(321321321),
                None,
            ),
        ),
    ])
    .await;
    s.match_pending().await;
    let p = s.person_of("qms", "1").await;
    let before = counts(&s).await;

    // No credential, a wrong one, a revoked one.
    let r = s
        .http
        .get(s.url(&format!("/v1/persons/{p}")))
        .send()
        .await
        .unwrap();
    let (status, body, headers) = crate::support::read(r).await;
    assert_problem(status, &body, 401, &[]);
    assert!(headers.contains_key("www-authenticate"));
    let (status, body, _) = s.get("idk_0000", &format!("/v1/persons/{p}")).await;
    assert_problem(status, &body, 401, &[]);
    identity::clients::revoke(&s.pool, "reader").await.unwrap();
    let (status, _, _) = s.get(&s.reader, &format!("/v1/persons/{p}")).await;
    assert_eq!(status, 401);
    // A client without decisions:write tries to link and to lock.
    let link =
        json!({"a": {"source": "qms", "source_id": "1"}, "b": {"source": "qms", "source_id": "2"}});
    let (status, body) = s.post(&s.viewer, "/v1/decisions/link", &link).await;
    assert_problem(status, &body, 403, &[]);
    assert_eq!(body["required_scope"], "decisions:write");
    let (status, _) = s
        .post(&s.viewer, &format!("/v1/persons/{p}/lock"), &json!({}))
        .await;
    assert_eq!(status, 403);
    // FHIR refusals are OperationOutcomes.
    let r = s
        .http
        .get(s.url(&format!("/fhir/Patient/{p}")))
        .send()
        .await
        .unwrap();
    let (status, body, _) = crate::support::read(r).await;
    assert_eq!(status, 401);
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "login");

    assert_eq!(
        counts(&s).await,
        before,
        "a refused request changed something"
    );
    let log = s.access_log().await;
    let lines: Vec<(Option<&str>, &str, &str)> = log
        .iter()
        .map(|(c, cmd, subj, recs)| {
            assert!(recs.is_empty());
            (c.as_deref(), cmd.as_str(), subj.as_str())
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                None,
                "identity GET /v1/persons/{id}",
                "refused: unauthenticated"
            ),
            (
                None,
                "identity GET /v1/persons/{id}",
                "refused: unauthenticated"
            ),
            (
                None,
                "identity GET /v1/persons/{id}",
                "refused: unauthenticated"
            ),
            (
                Some("viewer"),
                "identity POST /v1/decisions/link",
                "refused: forbidden"
            ),
            (
                Some("viewer"),
                "identity POST /v1/persons/{id}/lock",
                "refused: forbidden"
            ),
            (
                None,
                "identity GET /fhir/Patient/{id}",
                "refused: unauthenticated"
            ),
        ]
    );
}

#[tokio::test]
async fn jwt_bearer_tokens_carry_the_client_and_its_scopes() {
    let s = Service::start().await;
    s.load(&[rec(
        "qms",
        "1",
        person("Иванов", "Иван", "Иванович", (1970, 7, 7), None, None),
    )])
    .await;
    s.match_pending().await;
    let p = s.person_of("qms", "1").await;
    let path = format!("/v1/persons/{p}");
    let (status, body, _) = s.get(&jwt("portal", "ids:read", 300), &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("golden").is_none());
    let (status, body, _) = s
        .get(&jwt("portal", "ids:read personal:read", 300), &path)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["golden"]["first_name"], "Иван");
    let log = s.access_log().await;
    assert_eq!(log.last().unwrap().0.as_deref(), Some("jwt:portal"));
    // Expired, or signed with another key: refused.
    let (status, _, _) = s.get(&jwt("portal", "ids:read", -600), &path).await;
    assert_eq!(status, 401);
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "x", "scope": "ids:read", "exp": chrono::Utc::now().timestamp() + 300}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-1234"),
    )
    .unwrap();
    let (status, _, _) = s.get(&forged, &path).await;
    assert_eq!(status, 401);
    // No scope at all: forbidden.
    let (status, _, _) = s.get(&jwt("portal", "", 300), &path).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn each_client_has_its_own_rate() {
    let s = Service::start_with(|settings| {
        settings.auth.rate_per_second = 1;
        settings.auth.burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, body, headers) = s.get(&s.reader, "/v1/review-items").await;
        if status == 429 {
            assert_problem(status, &body, 429, &[]);
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another client is not slowed down.
    let (status, _, _) = s.get(&s.viewer, "/v1/review-items").await;
    assert_eq!(status, 200);
}
