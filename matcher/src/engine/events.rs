//! Person events: what an application changed, person by person, written to
//! the outbox `person_events` in the application's transaction (the relay,
//! `crate::events`, publishes them). Derived from the moves the application
//! wrote, so an application that moves nothing (a re-match of a current
//! state) writes no event. Ids and sources only: no personal data.
//!
//! Per person, from the records it gained (`joined`: each with the person it
//! came from, if any) and lost (`left`: each with the person it went to,
//! none for a deleted record):
//! * a person created here: `created` (its records; `other_person_id` the
//!   one person they all came from, if so);
//! * a person that lost records and keeps some: `split` when some went to a
//!   person created here (`other_person_id` the lowest such), else
//!   `records_left` (`other_person_id` the one person they all went to, if
//!   so);
//! * a person that lost all its records: `merged_into` when its live
//!   records all went to one person (`other_person_id`), else `retired`;
//! * a person that existed and gained records: `records_joined`.
//!
//! `created` events come first, so that a consumer reading a `split` or a
//! `merged_into` already knows the other person; then by person id.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use sqlx::PgConnection;

use super::types::Rec;
use super::write::{self, Placed};

/// One record's move in an application: its person before and after (none:
/// it had none / it was deleted).
struct Move<'a> {
    rec: &'a Rec,
    from: Option<i64>,
    to: Option<i64>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEvent {
    pub kind: &'static str,
    pub person_id: i64,
    pub other_person_id: Option<i64>,
    /// The records, as JSON.
    pub records: String,
}

/// The events of an application that placed `open` and removed `leaving`
/// (records deleted or gone; `person_of`: their persons before), with
/// `created` and `kept` as in [`derive`].
pub(super) fn of_application(
    open: &[Placed<'_>],
    leaving: &[Rec],
    person_of: &HashMap<Rec, i64>,
    created: &HashSet<i64>,
    kept: &HashSet<i64>,
) -> Vec<PersonEvent> {
    let placed = open.iter().map(|p| Move {
        rec: &p.rec,
        from: p.old,
        to: Some(p.person),
    });
    let removed = leaving.iter().filter_map(|r| {
        Some(Move {
            rec: r,
            from: Some(*person_of.get(r)?),
            to: None,
        })
    });
    derive(&placed.chain(removed).collect::<Vec<_>>(), created, kept)
}

/// The events of one application: `moves` (records whose person changed),
/// `created` (persons created by it) and `kept` (persons holding records
/// after it).
fn derive(moves: &[Move<'_>], created: &HashSet<i64>, kept: &HashSet<i64>) -> Vec<PersonEvent> {
    // person -> (record, the other person)
    let mut joined: BTreeMap<i64, Vec<(&Rec, Option<i64>)>> = BTreeMap::new();
    let mut left: BTreeMap<i64, Vec<(&Rec, Option<i64>)>> = BTreeMap::new();
    for m in moves.iter().filter(|m| m.from != m.to) {
        if let Some(to) = m.to {
            joined.entry(to).or_default().push((m.rec, m.from));
        }
        if let Some(from) = m.from {
            left.entry(from).or_default().push((m.rec, m.to));
        }
    }
    let mut events = Vec::new();
    for (&person, records) in joined.iter().filter(|(p, _)| created.contains(*p)) {
        events.push(event(
            "created",
            person,
            single(records),
            records,
            Direction::Joined,
        ));
    }
    let persons: BTreeSet<i64> = joined.keys().chain(left.keys()).copied().collect();
    for person in persons.into_iter().filter(|p| !created.contains(p)) {
        if let Some(records) = left.get(&person) {
            let kind_other = if kept.contains(&person) {
                let split_off = records
                    .iter()
                    .filter_map(|r| r.1)
                    .filter(|p| created.contains(p))
                    .min();
                match split_off {
                    Some(new) => ("split", Some(new)),
                    None => ("records_left", single(records)),
                }
            } else {
                let to: BTreeSet<i64> = records.iter().filter_map(|r| r.1).collect();
                match (to.len(), to.first()) {
                    (1, Some(&into)) => ("merged_into", Some(into)),
                    _ => ("retired", None),
                }
            };
            events.push(event(
                kind_other.0,
                person,
                kind_other.1,
                records,
                Direction::Left,
            ));
        }
        if let Some(records) = joined.get(&person) {
            events.push(event(
                "records_joined",
                person,
                single(records),
                records,
                Direction::Joined,
            ));
        }
    }
    events
}

/// The one person all `records` came from (or went to), if there is one.
fn single(records: &[(&Rec, Option<i64>)]) -> Option<i64> {
    let first = records.first()?.1?;
    records.iter().all(|r| r.1 == Some(first)).then_some(first)
}

/// A record of an event that joined its person, and where from.
#[derive(Serialize)]
struct Joined<'a> {
    source: &'a str,
    source_id: &'a str,
    from_person_id: Option<i64>,
}

/// A record of an event that left its person, and where to.
#[derive(Serialize)]
struct Left<'a> {
    source: &'a str,
    source_id: &'a str,
    to_person_id: Option<i64>,
}

/// Which of the two a record of an event is.
#[derive(Clone, Copy)]
enum Direction {
    Joined,
    Left,
}

fn event(
    kind: &'static str,
    person_id: i64,
    other_person_id: Option<i64>,
    records: &[(&Rec, Option<i64>)],
    direction: Direction,
) -> PersonEvent {
    let mut sorted: Vec<&(&Rec, Option<i64>)> = records.iter().collect();
    sorted.sort_by(|x, y| x.0.cmp(y.0));
    // Serialized from borrowed fields: a re-match writes one event per
    // person.
    let records = match direction {
        Direction::Joined => serde_json::to_string(
            &sorted
                .iter()
                .map(|(rec, other)| Joined {
                    source: &rec.0,
                    source_id: &rec.1,
                    from_person_id: *other,
                })
                .collect::<Vec<_>>(),
        ),
        Direction::Left => serde_json::to_string(
            &sorted
                .iter()
                .map(|(rec, other)| Left {
                    source: &rec.0,
                    source_id: &rec.1,
                    to_person_id: *other,
                })
                .collect::<Vec<_>>(),
        ),
    }
    .expect("ids serialize");
    PersonEvent {
        kind,
        person_id,
        other_person_id,
        records,
    }
}

/// An event without records (`locked`, `unlocked`).
pub fn plain(kind: &'static str, person_id: i64) -> PersonEvent {
    PersonEvent {
        kind,
        person_id,
        other_person_id: None,
        records: "[]".into(),
    }
}

/// Writes `events` to the outbox, in order (their ids follow it): one
/// `INSERT … UNNEST` for a few, COPY for many (a re-match's).
pub async fn write(conn: &mut PgConnection, events: &[PersonEvent]) -> sqlx::Result<()> {
    write::rows(conn, &write::PERSON_EVENTS, events, |e, row| {
        row.text(e.kind);
        row.int(e.person_id);
        row.opt_int(e.other_person_id);
        row.json_text(&e.records);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn records(e: &PersonEvent) -> Value {
        serde_json::from_str(&e.records).unwrap()
    }

    fn rec(id: &str) -> Rec {
        ("qms".into(), id.into())
    }

    fn kinds(events: &[PersonEvent]) -> Vec<(&str, i64, Option<i64>)> {
        events
            .iter()
            .map(|e| (e.kind, e.person_id, e.other_person_id))
            .collect()
    }

    #[test]
    fn a_merge_a_split_and_a_delete() {
        let (a, b, c, d) = (rec("a"), rec("b"), rec("c"), rec("d"));
        // 1 {a} merges into 2 {b}; 3 {c, d} splits: d to new person 9;
        // 4 {e} loses its only record to a delete.
        let e = rec("e");
        let moves = [
            Move {
                rec: &a,
                from: Some(1),
                to: Some(2),
            },
            Move {
                rec: &b,
                from: Some(2),
                to: Some(2),
            },
            Move {
                rec: &c,
                from: Some(3),
                to: Some(3),
            },
            Move {
                rec: &d,
                from: Some(3),
                to: Some(9),
            },
            Move {
                rec: &e,
                from: Some(4),
                to: None,
            },
        ];
        let created = HashSet::from([9]);
        let kept = HashSet::from([2, 3, 9]);
        let events = derive(&moves, &created, &kept);
        assert_eq!(
            kinds(&events),
            [
                ("created", 9, Some(3)),
                ("merged_into", 1, Some(2)),
                ("records_joined", 2, Some(1)),
                ("split", 3, Some(9)),
                ("retired", 4, None),
            ]
        );
        assert_eq!(
            records(&events[1]),
            json!([{"source": "qms", "source_id": "a", "to_person_id": 2}])
        );
        assert_eq!(
            records(&events[0]),
            json!([{"source": "qms", "source_id": "d", "from_person_id": 3}])
        );
    }

    #[test]
    fn nothing_moved_nothing_emitted() {
        let a = rec("a");
        let moves = [Move {
            rec: &a,
            from: Some(1),
            to: Some(1),
        }];
        assert!(derive(&moves, &HashSet::new(), &HashSet::from([1])).is_empty());
    }

    #[test]
    fn a_new_record_joins_and_a_moved_one_leaves() {
        let (a, b) = (rec("a"), rec("b"));
        let moves = [
            Move {
                rec: &a,
                from: None,
                to: Some(5),
            },
            Move {
                rec: &b,
                from: Some(5),
                to: Some(6),
            },
        ];
        let events = derive(&moves, &HashSet::new(), &HashSet::from([5, 6]));
        assert_eq!(
            kinds(&events),
            [
                ("records_left", 5, Some(6)),
                ("records_joined", 5, None),
                ("records_joined", 6, Some(5)),
            ]
        );
    }
}
