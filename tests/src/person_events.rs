//! The person events on the bus checked against the matcher's outbox:
//! every outbox row published once, in id order, as the row says, and the
//! events, applied in order, giving the persons PostgreSQL holds. Shared by
//! the matcher's event tests and the chaos harness.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use serde_json::Value;
use sqlx::PgPool;

/// A message of the person-event stream.
#[derive(Debug)]
pub struct BusEvent {
    pub subject: String,
    pub message_id: String,
    /// The replay run's name, for a message `etl events replay` sent.
    pub replay: Option<String>,
    pub payload: String,
    pub event: Value,
}

impl BusEvent {
    pub fn id(&self) -> i64 {
        self.event["event_id"].as_i64().unwrap_or(-1)
    }
}

/// Every message of the stream `stream`, in stream order.
pub async fn on_stream(js: &jetstream::Context, stream: &str) -> Vec<BusEvent> {
    crate::stream_messages(js, stream)
        .await
        .into_iter()
        .map(|m| {
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            BusEvent {
                subject: m.subject.to_string(),
                message_id: header("Nats-Msg-Id").unwrap_or_default(),
                replay: header(matcher::events::REPLAY_HEADER),
                event: serde_json::from_str(&payload).unwrap_or(Value::Null),
                payload,
            }
        })
        .collect()
}

/// One outbox row.
#[derive(Debug, sqlx::FromRow)]
struct Outboxed {
    event_id: i64,
    kind: String,
    person_id: i64,
    records: Value,
}

/// A current membership.
#[derive(Debug, sqlx::FromRow)]
struct Member {
    person_id: i64,
    source: String,
    source_id: String,
}

type Persons = BTreeMap<i64, BTreeSet<(String, String)>>;

/// What is wrong with the events on the bus (`bus`, published under
/// `subject_prefix`) against the outbox and the persons of `pool`; empty
/// when nothing is. Replays are left out.
pub async fn problems(
    pool: &PgPool,
    bus: &[BusEvent],
    subject_prefix: &str,
) -> sqlx::Result<Vec<String>> {
    let rows: Vec<Outboxed> = sqlx::query_as(
        "SELECT event_id, kind, person_id, records FROM person_events ORDER BY event_id",
    )
    .fetch_all(pool)
    .await?;
    let published: Vec<&BusEvent> = bus.iter().filter(|m| m.replay.is_none()).collect();
    let mut out = Vec::new();
    let ids: Vec<i64> = published.iter().map(|m| m.id()).collect();
    let expected: Vec<i64> = rows.iter().map(|r| r.event_id).collect();
    if ids != expected {
        out.push(format!(
            "{} event(s) on the bus against {} in the outbox, or out of order ({})",
            ids.len(),
            expected.len(),
            first_difference(&ids, &expected)
        ));
        return Ok(out);
    }
    for (m, row) in published.iter().zip(&rows) {
        let as_row = m.subject == format!("{subject_prefix}.{}", row.kind)
            && m.message_id == row.event_id.to_string()
            && m.event["person_id"].as_i64() == Some(row.person_id)
            && m.event["records"] == row.records;
        if !as_row {
            out.push(format!(
                "event {} differs from its outbox row",
                row.event_id
            ));
        }
    }
    let current: Vec<Member> = sqlx::query_as(
        "SELECT person_id, source, source_id FROM person_memberships WHERE valid_to IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut db = Persons::new();
    for m in current {
        db.entry(m.person_id)
            .or_default()
            .insert((m.source, m.source_id));
    }
    match replayed(&published) {
        Ok(persons) if persons == db => {}
        Ok(persons) => out.push(format!(
            "the events replayed give {} person(s), PostgreSQL holds {} ({} differ)",
            persons.len(),
            db.len(),
            differing(&persons, &db)
        )),
        Err(e) => out.push(e),
    }
    Ok(out)
}

/// The persons the events give, applied in order.
fn replayed(published: &[&BusEvent]) -> Result<Persons, String> {
    let mut persons = Persons::new();
    for m in published {
        let person = m.event["person_id"].as_i64().unwrap_or(-1);
        let records = m.event["records"].as_array().cloned().unwrap_or_default();
        let records = records.iter().map(|r| {
            (
                r["source"].as_str().unwrap_or_default().to_string(),
                r["source_id"].as_str().unwrap_or_default().to_string(),
            )
        });
        let members = persons.entry(person).or_default();
        match m.event["kind"].as_str().unwrap_or_default() {
            "created" | "records_joined" => members.extend(records),
            "records_left" | "split" | "merged_into" | "retired" => {
                for r in records {
                    if !members.remove(&r) {
                        return Err(format!(
                            "event {} takes a record out of person {person}, which did not hold it",
                            m.id()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    persons.retain(|_, members| !members.is_empty());
    Ok(persons)
}

/// Where two id lists first differ, in words.
fn first_difference(got: &[i64], wanted: &[i64]) -> String {
    let at = got.iter().zip(wanted).position(|(g, w)| g != w);
    match at {
        Some(i) => format!("at position {i}: {} instead of {}", got[i], wanted[i]),
        None => format!("the shorter ends at {}", got.len().min(wanted.len())),
    }
}

/// How many persons differ between two maps.
fn differing(a: &Persons, b: &Persons) -> usize {
    let ids: BTreeSet<&i64> = a.keys().chain(b.keys()).collect();
    ids.into_iter().filter(|id| a.get(id) != b.get(id)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str, person: i64, record: &str) -> BusEvent {
        let event = serde_json::json!({
            "event_id": id, "kind": kind, "person_id": person,
            "records": [{"source": "qms", "source_id": record}],
        });
        BusEvent {
            subject: format!("persons.{kind}"),
            message_id: id.to_string(),
            replay: None,
            payload: event.to_string(),
            event,
        }
    }

    #[test]
    fn events_applied_in_order_give_the_persons_and_a_wrong_leave_is_named() {
        let bus = [
            event(1, "created", 1, "a"),
            event(2, "created", 2, "b"),
            event(3, "records_joined", 1, "b"),
            event(4, "merged_into", 2, "b"),
        ];
        let all: Vec<&BusEvent> = bus.iter().collect();
        let persons = replayed(&all).unwrap();
        let one: BTreeSet<(String, String)> = [("qms", "a"), ("qms", "b")]
            .map(|(s, i)| (s.to_string(), i.to_string()))
            .into();
        assert_eq!(persons, Persons::from([(1, one)]));

        let wrong = [
            event(1, "created", 1, "a"),
            event(2, "records_left", 2, "a"),
        ];
        let all: Vec<&BusEvent> = wrong.iter().collect();
        assert!(replayed(&all).unwrap_err().contains("event 2"));
        assert_eq!(
            first_difference(&[1, 3], &[1, 2, 3]),
            "at position 1: 3 instead of 2"
        );
    }
}
