//! FHIR R4 (JSON): the golden Patient, search by identifier, `$match`.
//!
//! * `GET /fhir/Patient/{id}`: the person as a Patient. Its identifiers are
//!   its source records (`urn:etl-bus:source:<source>`) and, with
//!   `personal:read`, its SNILS, OMS policy and documents
//!   ([`crate::identifiers`] lists the systems); `link` entries of type
//!   `seealso` name each source record (a logical reference by identifier).
//!   A merged person reads as an inactive Patient with a `replaced-by` link
//!   to the survivor; a retired one is 410.
//! * `GET /fhir/Patient?identifier=system|value`: a searchset Bundle.
//! * `POST /fhir/Patient/$match`: a `Parameters` resource with `resource`
//!   (a Patient), optional `count` and `onlyCertainMatches`; a searchset
//!   Bundle of candidates, best first, each with `search.score` (the
//!   probability) and the `match-grade` extension.
//!
//! Errors are `OperationOutcome`s. Names, birth date, gender and telecom
//! appear only with `personal:read`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Scope;
use crate::body::{JsonBody, QueryParams};
use crate::identifiers::{self, Identifier};
use crate::matching::{Demographics, DocumentIn};
use crate::problem::Problem;
use crate::server::{Ctx, Shared};
use crate::store::{self, Golden, Member, Resolved};

pub const MATCH_GRADE: &str = "http://hl7.org/fhir/StructureDefinition/match-grade";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Patient", get(search))
        .route("/fhir/Patient/{id}", get(read))
        .route("/fhir/Patient/$match", post(match_patient))
}

fn fhir_json(status: axum::http::StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    fhir_json(axum::http::StatusCode::OK, body)
}

/// The Patient of a person: ids always, personal data from `golden` only.
pub fn patient(person: i64, active: bool, members: &[Member], golden: Option<&Golden>) -> Value {
    let mut identifiers: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({"use": "secondary",
                   "system": format!("{}{}", identifiers::SOURCE_SYSTEM_PREFIX, m.source),
                   "value": m.source_id})
        })
        .collect();
    let links: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({"type": "seealso", "other": {"type": "Patient", "identifier": {
                "system": format!("{}{}", identifiers::SOURCE_SYSTEM_PREFIX, m.source),
                "value": m.source_id}}})
        })
        .collect();
    let mut p = json!({
        "resourceType": "Patient",
        "id": person.to_string(),
        "active": active,
    });
    if let Some(g) = golden {
        identifiers.extend(personal_identifiers(g));
        add_personal(&mut p, g);
    }
    if !identifiers.is_empty() {
        p["identifier"] = identifiers.into();
    }
    if !links.is_empty() {
        p["link"] = links.into();
    }
    p
}

fn personal_identifiers(g: &Golden) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(s) = &g.snils {
        out.push(json!({"system": identifiers::SNILS_SYSTEM, "value": s}));
    }
    if let Some(o) = &g.oms_policy {
        out.push(json!({"system": identifiers::OMS_SYSTEM, "value": o}));
    }
    let docs = g
        .documents
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    for d in docs.as_array().into_iter().flatten() {
        if !d["problem"].is_null() {
            continue;
        }
        let Some(code) = d["type"]
            .as_u64()
            .and_then(|t| proto::DocumentType(t as u16).code())
        else {
            continue;
        };
        let number = d["number"].as_str().unwrap_or_default();
        let value = match d["series"].as_str().filter(|s| !s.is_empty()) {
            Some(series) => format!("{series} {number}"),
            None => number.to_string(),
        };
        out.push(
            json!({"system": format!("{}{code}", identifiers::DOCUMENT_SYSTEM_PREFIX),
                        "value": value}),
        );
    }
    out
}

fn add_personal(p: &mut Value, g: &Golden) {
    let given: Vec<&String> = [&g.first_name, &g.middle_name]
        .into_iter()
        .flatten()
        .collect();
    if g.last_name.is_some() || !given.is_empty() {
        let mut name = json!({"use": "official"});
        if let Some(f) = &g.last_name {
            name["family"] = f.clone().into();
        }
        if !given.is_empty() {
            name["given"] = json!(given);
        }
        p["name"] = json!([name]);
    }
    p["gender"] = match g.sex.as_deref() {
        Some("M") => "male",
        Some("F") => "female",
        _ => "unknown",
    }
    .into();
    if let Some(b) = g.birth_date {
        p["birthDate"] = b.to_string().into();
    }
    let mut telecom = Vec::new();
    let list = |j: &Option<sqlx::types::Json<Value>>| {
        j.as_ref()
            .and_then(|v| v.0.as_array().cloned())
            .unwrap_or_default()
    };
    for ph in list(&g.phones) {
        if ph["number"]["problem"].is_null() {
            if let Some(v) = ph["number"]["value"].as_str() {
                telecom.push(json!({"system": "phone", "value": v}));
            }
        }
    }
    for e in list(&g.emails) {
        if e["address"]["problem"].is_null() {
            if let Some(v) = e["address"]["value"].as_str() {
                telecom.push(json!({"system": "email", "value": v}));
            }
        }
    }
    if !telecom.is_empty() {
        p["telecom"] = telecom.into();
    }
}

/// The Patient of a live person, golden data if the caller may see it
/// (and the view logged).
async fn live_patient(app: &Shared, ctx: &Ctx, person: i64) -> Result<Value, Problem> {
    let members = store::members(&app.pool, person).await?;
    let golden = if ctx.caller.personal() {
        let shown = members
            .iter()
            .map(|m| format!("{}:{}", m.source, m.source_id))
            .collect();
        ctx.log_view(app, format!("person {person}"), shown).await?;
        store::golden(&app.pool, &[person])
            .await?
            .into_iter()
            .next()
    } else {
        None
    };
    Ok(patient(person, true, &members, golden.as_ref()))
}

async fn read(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    read_inner(app, ctx, raw).await.map_err(Problem::fhir)
}

async fn read_inner(app: Shared, ctx: Ctx, raw: String) -> Result<Response, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let id = crate::body::person_id(&raw)?;
    match store::resolve(&app.pool, id).await? {
        Resolved::Live(p) => Ok(ok(live_patient(&app, &ctx, p.person_id).await?)),
        Resolved::Merged { chain } => {
            let into = *chain.last().expect("a chain ends in the survivor");
            let mut p = patient(id, false, &[], None);
            p["link"] = json!([{"type": "replaced-by",
                                "other": {"reference": format!("Patient/{into}")}}]);
            Ok(ok(p))
        }
        Resolved::Retired { person, successors } => {
            Err(Problem::retired(person.person_id, &successors))
        }
        Resolved::Unknown => Err(Problem::not_found(format!("Patient/{id} is not known"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    identifier: Option<String>,
}

fn bundle(entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })
}

fn entry(resource: Value, search: Value) -> Value {
    let id = resource["id"].as_str().unwrap_or_default().to_string();
    json!({"fullUrl": format!("Patient/{id}"), "resource": resource, "search": search})
}

async fn search(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Response, Problem> {
    search_inner(app, ctx, q).await.map_err(Problem::fhir)
}

async fn search_inner(app: Shared, ctx: Ctx, q: SearchQuery) -> Result<Response, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    let token = q.identifier.ok_or_else(|| {
        Problem::bad_request("invalid-query", "search by identifier=system|value")
    })?;
    let persons = match Identifier::from_fhir(&token)? {
        Identifier::Record { source, source_id } => {
            match store::person_of_record(&app.pool, &source, &source_id).await? {
                Some((p, _)) => vec![p],
                None => Vec::new(),
            }
        }
        other => crate::api::holders(&app, &ctx, &other).await?.persons,
    };
    let mut entries = Vec::with_capacity(persons.len());
    for p in persons {
        let resource = live_patient(&app, &ctx, p).await?;
        entries.push(entry(resource, json!({"mode": "match"})));
    }
    Ok(ok(bundle(entries)))
}

/// `Parameters` of `$match`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parameters {
    resource_type: String,
    #[serde(default)]
    parameter: Vec<Parameter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parameter {
    name: String,
    resource: Option<Value>,
    value_integer: Option<i64>,
    value_boolean: Option<bool>,
}

async fn match_patient(
    State(app): State<Shared>,
    Extension(ctx): Extension<Ctx>,
    body: Result<JsonBody<Parameters>, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(params) = body.map_err(Problem::fhir)?;
    match_inner(app, ctx, params).await.map_err(Problem::fhir)
}

async fn match_inner(app: Shared, ctx: Ctx, params: Parameters) -> Result<Response, Problem> {
    ctx.caller.require(Scope::IdsRead)?;
    if params.resource_type != "Parameters" {
        return Err(Problem::bad_request(
            "invalid-body",
            "the body is a Parameters resource",
        ));
    }
    let mut resource = None;
    let mut count = None;
    let mut only_certain = false;
    for p in params.parameter {
        match p.name.as_str() {
            "resource" => resource = p.resource,
            "count" => count = p.value_integer,
            "onlyCertainMatches" => only_certain = p.value_boolean.unwrap_or(false),
            _ => {
                return Err(Problem::bad_request(
                    "invalid-body",
                    "unknown parameter; $match takes resource, count, onlyCertainMatches",
                ))
            }
        }
    }
    let resource = resource
        .ok_or_else(|| Problem::bad_request("invalid-body", "parameter resource is missing"))?;
    let demographics = demographics(&resource)?;
    let limit = count.map(|c| c.clamp(1, 1000) as usize);
    let found = crate::api::run_match(&app, &ctx, &demographics, limit).await?;
    let golden: std::collections::HashMap<i64, Golden> = found
        .golden
        .unwrap_or_default()
        .into_iter()
        .map(|g| (g.person_id, g))
        .collect();
    let mut entries = Vec::new();
    for c in found
        .candidates
        .iter()
        .filter(|c| !only_certain || c.grade == "certain")
    {
        let members = store::members(&app.pool, c.person_id).await?;
        let resource = patient(c.person_id, true, &members, golden.get(&c.person_id));
        let search = json!({
            "mode": "match",
            "score": c.probability,
            "extension": [{"url": MATCH_GRADE, "valueCode": c.grade}],
        });
        entries.push(entry(resource, search));
    }
    Ok(ok(bundle(entries)))
}

/// The demographics of a Patient resource.
fn demographics(p: &Value) -> Result<Demographics, Problem> {
    if p["resourceType"] != "Patient" {
        return Err(Problem::bad_request(
            "invalid-body",
            "parameter resource is a Patient",
        ));
    }
    let bad =
        |what: &str| Problem::bad_request("invalid-body", format!("Patient.{what} is malformed"));
    let name = &p["name"][0];
    let text = |v: &Value| v.as_str().map(str::to_string);
    let given = name["given"].as_array().cloned().unwrap_or_default();
    let birth_date = match p["birthDate"].as_str() {
        Some(b) => {
            Some(chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").map_err(|_| bad("birthDate"))?)
        }
        None => None,
    };
    let mut d = Demographics {
        last_name: text(&name["family"]),
        first_name: given.first().and_then(text),
        middle_name: given.get(1).and_then(text),
        birth_date,
        sex: match p["gender"].as_str() {
            Some("male") => Some("M".into()),
            Some("female") => Some("F".into()),
            _ => None,
        },
        ..Default::default()
    };
    for i in p["identifier"].as_array().into_iter().flatten() {
        let (Some(system), Some(value)) = (i["system"].as_str(), i["value"].as_str()) else {
            return Err(bad("identifier"));
        };
        match Identifier::from_fhir(&format!("{system}|{value}"))? {
            Identifier::Snils(s) => d.snils = Some(s),
            Identifier::Oms(o) => d.oms_policy = Some(o),
            Identifier::Document {
                doc_type, number, ..
            } => d.documents.push(DocumentIn {
                doc_type,
                series: None,
                number,
            }),
            Identifier::Record { .. } => {}
        }
    }
    for t in p["telecom"].as_array().into_iter().flatten() {
        match (t["system"].as_str(), t["value"].as_str()) {
            (Some("phone"), Some(v)) => d.phones.push(v.to_string()),
            (Some("email"), Some(v)) => d.emails.push(v.to_string()),
            _ => {}
        }
    }
    Ok(d)
}

/// `GET /fhir/metadata`: what this server does.
async fn metadata(Extension(ctx): Extension<Ctx>) -> Response {
    let _ = ctx;
    ok(json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-06",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": "Patient",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": "identifier", "type": "token"}],
                "operation": [{"name": "match",
                               "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"}],
            }],
        }],
    }))
}
