//! A batch PostgreSQL rejected for a reason that will not go away (a
//! constraint, a value it cannot store): each record is written alone, and
//! one that still fails is set aside as a dead letter with the database's
//! reason (`database_rejected`), so the rest load. Used by the loader's
//! consume loop and by `etl replay`.

use etl_runtime::database::is_transient;

use crate::batch::Rejection;
use crate::store::{Examined, Store, Written};

/// What writing one record alone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alone {
    pub written: Written,
    /// The message is a dead letter (rejected before or by the database):
    /// terminate it rather than ack it.
    pub set_aside: bool,
}

/// Writes `message` in a transaction of its own; if PostgreSQL rejects it
/// for good, writes its dead letter instead. `Err` only for a transient
/// failure (retry the message later).
pub async fn write_alone(store: &Store, message: &Examined<'_>) -> Result<Alone, sqlx::Error> {
    match store.write_examined(std::slice::from_ref(message)).await {
        Ok(written) => Ok(Alone {
            written,
            set_aside: message.verdict.is_err(),
        }),
        Err(error) if !is_transient(&error) => {
            let (source, source_id) = match message.verdict {
                Ok(env) => (Some(env.source.clone()), Some(env.source_id.clone())),
                Err(r) => (r.source.clone(), r.source_id.clone()),
            };
            let verdict = Err(Rejection {
                code: "database_rejected",
                reason: database_reason(&error),
                source,
                source_id,
            });
            let dead = Examined {
                stream_seq: message.stream_seq,
                item: message.item,
                subject: message.subject,
                delivered: message.delivered,
                payload: message.payload,
                verdict: &verdict,
                traceparent: message.traceparent,
            };
            let written = store.write_examined(std::slice::from_ref(&dead)).await?;
            Ok(Alone {
                written,
                set_aside: true,
            })
        }
        Err(error) => Err(error),
    }
}

/// The database's reason without values: SQLSTATE, constraint and table only.
pub fn database_reason(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!(
            "database rejected the record: SQLSTATE {} (constraint {}, table {})",
            db.code().as_deref().unwrap_or("?"),
            db.constraint().unwrap_or("-"),
            db.table().unwrap_or("-"),
        ),
        other => format!("database rejected the record: {}", error_kind(other)),
    }
}

fn error_kind(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode error",
        sqlx::Error::Encode(_) => "encode error",
        sqlx::Error::TypeNotFound { .. } => "type not found",
        _ => "other error",
    }
}
