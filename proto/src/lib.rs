//! `proto` is the one definition of what travels on the bus.
//!
//! * [`record`]: the normalized patient record every extractor produces.
//! * [`envelope`]: the wrapper that carries a record (or a deletion) with its
//!   schema version, ordering version and content hash, and its MessagePack
//!   codec.
//! * [`doctype`]: canonical identity-document types and the mapping from each
//!   source's codes.
//! * [`normalize`]: normalization of names, documents, SNILS, OMS policies,
//!   phones and e-mails, shared by every extractor.
//! * [`identifier_key`]: how a valid identifier is named as a key.
//! * [`naming`]: subjects, source names and message ids.
//! * [`bus`]: the stream definition and publishing.
//! * [`batch`]: batch messages (several envelopes in one message) and the
//!   one entry point that reads any message's envelopes.
//!
//! Nothing in this crate logs, and no error it produces carries a field value:
//! records are identified by source and source id only.

pub mod batch;
pub mod bus;
pub mod doctype;
pub mod envelope;
pub mod identifier_key;
pub mod naming;
pub mod normalize;
pub mod record;
pub mod trace;

pub use doctype::{DocumentType, DocumentTypeMap};
pub use envelope::{DecodeError, Envelope, Operation, SchemaViolation, SCHEMA_VERSION};
pub use normalize::{Checked, Problem};
pub use record::{Email, EmailKind, IdentityDocument, PatientRecord, Phone, Sex};
