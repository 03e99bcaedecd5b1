//! FHIR R4 shapes: Patient read, search by identifier, `$match`, each
//! checked against the R4 JSON structure of what it claims to be (the
//! elements used here, their types, cardinalities and value sets).

use serde_json::{json, Value};

use crate::support::{person, rec, snils, Service};

fn is_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
}

fn is_uri(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.contains(':') && !s.contains(char::is_whitespace))
}

fn check_identifier(i: &Value) {
    assert!(is_uri(&i["system"]), "Identifier.system: {i}");
    assert!(
        i["value"].as_str().is_some_and(|v| !v.is_empty()),
        "Identifier.value: {i}"
    );
    if let Some(u) = i.get("use") {
        assert!(["usual", "official", "temp", "secondary", "old"].contains(&u.as_str().unwrap()));
    }
}

/// An R4 Patient as far as these elements go.
pub fn check_patient(p: &Value) {
    let allowed = [
        "resourceType",
        "id",
        "active",
        "identifier",
        "name",
        "gender",
        "birthDate",
        "telecom",
        "link",
    ];
    for k in p.as_object().expect("Patient is an object").keys() {
        assert!(allowed.contains(&k.as_str()), "Patient.{k} unexpected");
    }
    assert_eq!(p["resourceType"], "Patient");
    assert!(is_id(&p["id"]), "Patient.id: {p}");
    assert!(p["active"].is_boolean());
    for i in p["identifier"].as_array().into_iter().flatten() {
        check_identifier(i);
    }
    for n in p["name"].as_array().into_iter().flatten() {
        assert!(n.get("family").is_none_or(Value::is_string));
        for g in n["given"].as_array().into_iter().flatten() {
            assert!(g.is_string());
        }
    }
    if let Some(g) = p.get("gender") {
        assert!(["male", "female", "other", "unknown"].contains(&g.as_str().unwrap()));
    }
    if let Some(b) = p.get("birthDate") {
        assert!(chrono::NaiveDate::parse_from_str(b.as_str().unwrap(), "%Y-%m-%d").is_ok());
    }
    for t in p["telecom"].as_array().into_iter().flatten() {
        assert!(["phone", "fax", "email", "pager", "url", "sms", "other"]
            .contains(&t["system"].as_str().unwrap()));
        assert!(t["value"].is_string());
    }
    for l in p["link"].as_array().into_iter().flatten() {
        assert!(
            ["replaced-by", "replaces", "refer", "seealso"].contains(&l["type"].as_str().unwrap())
        );
        let other = &l["other"];
        assert!(
            other["reference"].is_string() || other["identifier"].is_object(),
            "Patient.link.other is a Reference: {l}"
        );
        if other["identifier"].is_object() {
            check_identifier(&other["identifier"]);
        }
    }
}

/// An R4 searchset Bundle of Patients.
pub fn check_bundle(b: &Value) -> Vec<Value> {
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "searchset");
    let entries = b["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(b["total"], entries.len());
    for e in &entries {
        check_patient(&e["resource"]);
        assert!(e["fullUrl"].as_str().unwrap().starts_with("Patient/"));
        assert!(["match", "include", "outcome"].contains(&e["search"]["mode"].as_str().unwrap()));
        if let Some(score) = e["search"].get("score") {
            let score = score.as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
        }
    }
    entries
}

async fn seeded() -> (Service, i64) {
    let s = Service::start().await;
    let mut ivanov = person(
        "Иванов",
        "Иван",
        "Петрович",
        (1980, 5, 17),
        Some(112233445),
        Some(("4506", "123456")),
    );
    ivanov.phones = vec![proto::Phone {
        number: proto::Checked::valid("+79123456789"),
        preferred: true,
    }];
    s.load(&[
        rec("qms", "41449/A22", ivanov),
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
    ])
    .await;
    s.match_pending().await;
    let p = s.person_of("qms", "41449/A22").await;
    (s, p)
}

#[tokio::test]
async fn the_golden_patient_links_its_source_records() {
    let (s, p) = seeded().await;
    let (status, body, headers) = s.get(&s.reader, &format!("/fhir/Patient/{p}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/fhir+json");
    check_patient(&body);
    assert!(
        body.get("name").is_none() && body.get("birthDate").is_none(),
        "ids only: {body}"
    );
    let links = body["link"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|l| l["type"] == "seealso"));
    assert_eq!(
        links[1]["other"]["identifier"]["system"],
        "urn:etl-bus:source:qms"
    );
    assert_eq!(links[1]["other"]["identifier"]["value"], "41449/A22");

    let (status, body, _) = s.get(&s.viewer, &format!("/fhir/Patient/{p}")).await;
    assert_eq!(status, 200);
    check_patient(&body);
    assert_eq!(body["name"][0]["family"], "Иванов");
    assert_eq!(body["name"][0]["given"], json!(["Иван", "Петрович"]));
    assert_eq!(body["gender"], "male");
    assert_eq!(body["birthDate"], "1980-05-17");
    let systems: Vec<&str> = body["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["system"].as_str().unwrap())
        .collect();
    assert!(systems.contains(&"urn:oid:1.2.643.100.3"), "{systems:?}");
    assert!(
        systems.contains(&"urn:etl-bus:document:passport"),
        "{systems:?}"
    );
    // As the loader stores it (proto::normalize::phone).
    assert_eq!(body["telecom"][0]["value"], "79123456789");
}

#[tokio::test]
async fn patients_are_searched_by_identifier() {
    let (s, p) = seeded().await;
    for token in [
        format!("urn:oid:1.2.643.100.3|{}", snils(112233445)),
        "urn:etl-bus:document:passport|4506 123456".to_string(),
        "urn:etl-bus:source:infoclinica|1001".to_string(),
    ] {
        let path = format!(
            "/fhir/Patient?identifier={}",
            token.replace('|', "%7C").replace(' ', "%20")
        );
        let (status, body, _) = s.get(&s.reader, &path).await;
        assert_eq!(status, 200, "{token}: {body}");
        let entries = check_bundle(&body);
        assert_eq!(entries.len(), 1, "{token}: {body}");
        assert_eq!(entries[0]["resource"]["id"], p.to_string());
    }
    let (status, body, _) = s
        .get(
            &s.reader,
            &format!(
                "/fhir/Patient?identifier=urn:oid:1.2.643.100.3%7C{}",
                snils(998877665)
            ),
        )
        .await;
    assert_eq!(status, 200);
    assert!(check_bundle(&body).is_empty());
}

#[tokio::test]
async fn patient_match_returns_graded_candidates() {
    let (s, p) = seeded().await;
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {
                "resourceType": "Patient",
                "name": [{"family": "Иванов", "given": ["Иван", "Петрович"]}],
                "birthDate": "1980-05-17",
                "gender": "male",
                "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": snils(112233445)}]
            }},
            {"name": "count", "valueInteger": 5}
        ]
    });
    let (status, body) = s.post(&s.reader, "/fhir/Patient/$match", &parameters).await;
    assert_eq!(status, 200, "{body}");
    let entries = check_bundle(&body);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["resource"]["id"], p.to_string());
    assert_eq!(
        e["search"]["extension"][0]["url"],
        "http://hl7.org/fhir/StructureDefinition/match-grade"
    );
    assert_eq!(e["search"]["extension"][0]["valueCode"], "certain");
    assert!(e["search"]["score"].as_f64().unwrap() > 0.9999);
    // The JSON form: each field's contribution.
    let (status, body) = s
        .post(
            &s.reader,
            "/v1/match",
            &json!({"demographics": {"last_name": "Иванов", "first_name": "Иван",
                    "middle_name": "Петрович", "birth_date": "1980-05-17"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let c = &body["candidates"][0];
    assert_eq!(c["person_id"], p);
    assert_eq!(c["fields"]["last_name"]["level"], "exact");
    assert!(c["fields"]["birth_date"]["weight"].as_f64().unwrap() > 0.0);
    assert!(
        c["fields"].get("snils").is_none(),
        "a field the query lacks is no evidence"
    );
    assert!(body.get("golden").is_none());
}
