//! Bad input gets a clear 4xx problem document (RFC 9457), never a 500,
//! and no problem quotes what was sent.

use serde_json::json;

use crate::support::{assert_problem, Service};

#[tokio::test]
async fn bad_input_gets_problem_documents() {
    let s = Service::start().await;
    // Unknown fields, at the top and inside.
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"last_name": "Иванов"}, "limt": 3}),
        )
        .await;
    assert_problem(status, &body, 422, &["Иванов"]);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `limt`"),
        "{body}"
    );
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"surname": "Иванов"}}),
        )
        .await;
    assert_problem(status, &body, 422, &["Иванов"]);
    assert!(
        body["detail"].as_str().unwrap().contains("`surname`"),
        "{body}"
    );
    // A value of the wrong type is named by its path, not quoted.
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"birth_date": "17 мая 1980 Иванов"}}),
        )
        .await;
    assert_problem(status, &body, 422, &["Иванов", "мая"]);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("demographics.birth_date"),
        "{body}"
    );
    // Malformed identifiers.
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"snils": "123-456-789 00"}}),
        )
        .await;
    assert_problem(status, &body, 400, &["123-456-789"]);
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"documents": [{"type": "passport", "number": "45061"}]}}),
        )
        .await;
    assert_problem(status, &body, 400, &["45061"]);
    let (status, body) = s
        .post(&s.reader, "/v1/match", &json!({"demographics": {}}))
        .await;
    assert_problem(status, &body, 400, &[]);
    // Not JSON; the wrong media type; a huge body.
    let r = s
        .http
        .post(s.url("/v1/match"))
        .bearer_auth(&s.reader)
        .header("content-type", "application/json")
        .body("{\"demographics\": {\"last_name\": \"Иван")
        .send()
        .await
        .unwrap();
    let (status, body, headers) = crate::support::read(r).await;
    assert_problem(status, &body, 422, &["Иван"]);
    assert_eq!(headers["content-type"], "application/problem+json");
    let r = s
        .http
        .post(s.url("/v1/match"))
        .bearer_auth(&s.reader)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body, _) = crate::support::read(r).await;
    assert_problem(status, &body, 415, &[]);
    let huge = json!({"demographics": {"last_name": "я".repeat(200_000)}});
    let (status, body) = s.post(&s.reader, "/v1/match", &huge).await;
    assert_problem(status, &body, 413, &["яяя"]);
    // Unknown and malformed ids, unknown query parameters and routes.
    let (status, body, _) = s.get(&s.reader, "/v1/persons/987654321").await;
    assert_problem(status, &body, 404, &[]);
    let (status, body, _) = s.get(&s.reader, "/v1/persons/abc").await;
    assert_problem(status, &body, 400, &[]);
    let (status, body, _) = s.get(&s.reader, "/v1/persons/-1").await;
    assert_problem(status, &body, 400, &[]);
    let (status, body, _) = s
        .get(&s.reader, "/v1/identifiers?snils=1&name=Иванов")
        .await;
    assert_problem(status, &body, 400, &["Иванов"]);
    let (status, body, _) = s
        .get(&s.reader, "/v1/identifiers?document_type=visa&number=1")
        .await;
    assert_problem(status, &body, 400, &[]);
    let (status, body, _) = s.get(&s.reader, "/v1/identifiers").await;
    assert_problem(status, &body, 400, &[]);
    let (status, body, _) = s.get(&s.reader, "/v1/review-items?limit=many").await;
    assert_problem(status, &body, 400, &[]);
    let (status, body, _) = s.get(&s.reader, "/v1/nothing-here").await;
    assert_problem(status, &body, 404, &[]);
    let r = s
        .http
        .delete(s.url("/v1/match"))
        .bearer_auth(&s.reader)
        .send()
        .await
        .unwrap();
    let (status, body, _) = crate::support::read(r).await;
    assert_problem(status, &body, 405, &[]);
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/review-items/12/resolve",
            &json!({"resolution": "merge"}),
        )
        .await;
    assert_problem(status, &body, 400, &[]);
    let (status, body) = s
        .post(
            &s.writer,
            "/v1/decisions/link",
            &json!({"a": {"source": "qms", "source_id": "1"}, "b": {"source": "qms", "source_id": "1"}}),
        )
        .await;
    assert_problem(status, &body, 400, &[]);
    // FHIR answers with OperationOutcomes.
    let (status, body, _) = s.get(&s.reader, "/fhir/Patient/987654321").await;
    assert_eq!(status, 404);
    assert_eq!(body["resourceType"], "OperationOutcome");
    let (status, body, _) = s.get(&s.reader, "/fhir/Patient?identifier=urn:x|1").await;
    assert_eq!(status, 400);
    assert_eq!(body["issue"][0]["code"], "invalid");
    let (status, body) = s
        .post(
            &s.reader,
            "/fhir/Patient/$match",
            &json!({"resourceType": "Patient"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn the_openapi_document_describes_every_json_route() {
    let s = Service::start().await;
    let (status, doc, _) = s.get(&s.reader, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/persons/{id}",
        "/v1/records",
        "/v1/identifiers",
        "/v1/match",
        "/v1/review-items",
        "/v1/decisions/link",
        "/v1/decisions/keep-apart",
        "/v1/decisions/revoke",
        "/v1/persons/{id}/lock",
        "/v1/persons/{id}/unlock",
        "/v1/review-items/{id}/resolve",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["PersonView"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
