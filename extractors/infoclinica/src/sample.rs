//! A sample Infoclinica database for the demo, the tests and the benchmark:
//! a `CLIENTS` table shaped like Infoclinica's (including a `CLPASSWORD`
//! column filled with fake hashes, which the extractor must never read),
//! generated Russian patients from `synth`, and optionally the change-log
//! triggers of `deploy/firebird/changelog.sql`.

use chrono::Datelike;
use proto::PatientRecord;
use rsfbclient::prelude::*;
use rsfbclient::FbError;

use crate::firebird::{self, FbConnection};
use crate::settings::{Charset, DatabaseSettings};

/// The change-log installation script (an isql script).
pub const CHANGELOG_SQL: &str = include_str!("../../../deploy/firebird/changelog.sql");

/// FILIAL codes of the sample and the business units they map to (use them
/// as `databases.business_units`).
pub const SAMPLE_FILIALS: &[(i32, &str)] = &[(1, "main"), (3, "branch-1"), (7, "branch-7")];

/// SNILS and OMS policy columns of the sample table (Infoclinica's real
/// names are not confirmed; configure `table.snils` / `table.oms_policy`).
pub const SNILS_COLUMN: &str = "SNILS";
pub const OMS_COLUMN: &str = "POLIS";

const CREATE_CLIENTS: &str = "CREATE TABLE CLIENTS (
    PCODE INTEGER NOT NULL PRIMARY KEY,
    FILIAL INTEGER,
    LASTNAME VARCHAR(60),
    FIRSTNAME VARCHAR(40),
    MIDNAME VARCHAR(40),
    BDATE DATE,
    PASPTYPE INTEGER,
    PASPSER VARCHAR(20),
    PASPNUM VARCHAR(30),
    PHONE1 VARCHAR(40),
    PHONE2 VARCHAR(40),
    PHONE3 VARCHAR(40),
    CLMAIL VARCHAR(80),
    CLLOGIN VARCHAR(80),
    CLPASSWORD VARCHAR(64),
    SNILS VARCHAR(20),
    POLIS VARCHAR(30)
)";

/// Splits an isql script into statements: `--` comment lines dropped,
/// `SET TERM` honoured (the client API takes one statement per call and
/// does not know `SET TERM`).
pub fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut term = ";".to_string();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || (current.trim().is_empty() && trimmed.is_empty()) {
            continue;
        }
        let upper = trimmed.to_ascii_uppercase();
        if upper.starts_with("SET TERM") {
            // `SET TERM ^ ;` (under `;`) or `SET TERM ; ^` (under `^`).
            let rest = trimmed["SET TERM".len()..].trim();
            let rest = rest.strip_suffix(term.as_str()).unwrap_or(rest).trim();
            term = rest.to_string();
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if let Some(stmt) = current.trim_end().strip_suffix(term.as_str()) {
            let stmt = stmt.trim();
            if !stmt.is_empty() {
                out.push(stmt.to_string());
            }
            current.clear();
        }
    }
    out
}

/// A builder that may write (DDL and inserts).
fn writer(db: &DatabaseSettings) -> rsfbclient::builders::PureRustConnectionBuilder {
    let mut b = firebird::builder(db);
    b.transaction(firebird::read_write());
    b
}

/// Connects for writing (DDL and test changes).
pub fn connect_writer(db: &DatabaseSettings) -> Result<FbConnection, FbError> {
    writer(db).connect()
}

/// Creates (or re-creates: an existing file is dropped) the database of `db`
/// with an empty `CLIENTS` table, and the change log if `triggers`.
pub fn create_database(db: &DatabaseSettings, triggers: bool) -> Result<FbConnection, FbError> {
    if let Ok(conn) = writer(db).connect() {
        conn.drop_database()?;
    }
    let conn = writer(db).create_database()?;
    let mut conn = conn;
    let charset = match db.charset {
        Charset::Utf8 => "UTF8",
        Charset::Win1251 | Charset::None => "WIN1251",
    };
    conn.execute(
        &format!("ALTER DATABASE SET DEFAULT CHARACTER SET {charset}"),
        (),
    )?;
    conn.close()?;
    let mut conn = writer(db).connect()?;
    conn.execute(CREATE_CLIENTS, ())?;
    if triggers {
        install_changelog(&mut conn)?;
    }
    Ok(conn)
}

/// Runs `deploy/firebird/changelog.sql`.
pub fn install_changelog(conn: &mut FbConnection) -> Result<(), FbError> {
    for stmt in statements(CHANGELOG_SQL) {
        conn.execute(&stmt, ())?;
    }
    Ok(())
}

/// Inserts the synthetic patients `range` of `seed` with PCODE = index + 1,
/// in blocks of 200 rows per statement.
pub fn insert_patients(
    conn: &mut FbConnection,
    seed: u64,
    range: std::ops::Range<u64>,
) -> Result<(), FbError> {
    let generator =
        synth::Generator::new(seed).with_source_id_style(synth::SourceIdStyle::Infoclinica);
    let indices: Vec<u64> = range.collect();
    for chunk in indices.chunks(200) {
        let mut block = String::from("EXECUTE BLOCK AS BEGIN\n");
        for &i in chunk {
            let p = generator.patient(i);
            block.push_str(&insert_sql(i as i64 + 1, i, &p.record));
            block.push_str(";\n");
        }
        block.push_str("END");
        conn.execute(&block, ())?;
    }
    Ok(())
}

/// Creates the sample database: `count` patients, change log if `triggers`.
pub fn create_sample(
    db: &DatabaseSettings,
    count: u64,
    seed: u64,
    triggers: bool,
) -> Result<(), FbError> {
    // Triggers after the rows, as on a real installation: the change log
    // starts empty and the initial load publishes what exists.
    let mut conn = create_database(db, false)?;
    insert_patients(&mut conn, seed, 0..count)?;
    if triggers {
        install_changelog(&mut conn)?;
    }
    conn.close()
}

/// Changes the sample as users would, in one transaction: `updates`
/// patients from PCODE 1 get a new phone and a corrected surname (every
/// run a different phone), the `deletes` after them are deleted, and
/// `inserts` new patients get PCODEs above the highest.
pub fn change_sample(
    db: &DatabaseSettings,
    updates: u64,
    deletes: u64,
    inserts: u64,
) -> Result<(), FbError> {
    let mut conn = connect_writer(db)?;
    let (max,): (Option<i64>,) = conn
        .query_first("SELECT MAX(PCODE) FROM CLIENTS", ())?
        .unwrap_or((None,));
    let max = max.unwrap_or(0);
    let stamp = chrono::Utc::now().timestamp() % 10_000;
    conn.begin_transaction()?;
    conn.execute(
        &format!(
            "UPDATE CLIENTS SET PHONE1 = '+7 (900) {stamp:04}-' || PCODE, \
             LASTNAME = TRIM(LASTNAME) WHERE PCODE BETWEEN 1 AND {updates}"
        ),
        (),
    )?;
    conn.execute(
        &format!(
            "DELETE FROM CLIENTS WHERE PCODE BETWEEN {} AND {}",
            updates + 1,
            updates + deletes
        ),
        (),
    )?;
    let generator =
        synth::Generator::new(max as u64).with_source_id_style(synth::SourceIdStyle::Infoclinica);
    for i in 0..inserts {
        let p = generator.patient(i);
        conn.execute(&insert_sql(max + 1 + i as i64, i, &p.record), ())?;
    }
    conn.commit()?;
    conn.close()
}

/// The FILIAL of a generated business unit.
pub fn filial_of(unit: Option<&str>) -> Option<i32> {
    SAMPLE_FILIALS
        .iter()
        .find(|(_, u)| Some(*u) == unit)
        .map(|(f, _)| *f)
}

fn quote(s: Option<&str>) -> String {
    match s {
        None => "NULL".into(),
        Some(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// `+7 (912) 345-67-89` from `79123456789`, as people type them.
fn display_phone(canonical: &str) -> String {
    if canonical.len() == 11 && canonical.is_ascii() {
        let d = canonical;
        format!("+7 ({}) {}-{}-{}", &d[1..4], &d[4..7], &d[7..9], &d[9..11])
    } else {
        canonical.to_string()
    }
}

/// The INSERT of one generated patient (as Infoclinica would hold them):
/// the preferred phone in the last used PHONE column, passport series with
/// a space, a portal login and a fake password hash for every other one.
pub fn insert_sql(pcode: i64, index: u64, r: &PatientRecord) -> String {
    let doc = r.documents.first();
    let series = doc.and_then(|d| d.series.clone()).map(|s| {
        if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
            format!("{} {}", &s[..2], &s[2..])
        } else {
            s
        }
    });
    // Preferred phone last: PHONE1 = second number, PHONE2 = preferred.
    let phones: Vec<String> = r
        .phones
        .iter()
        .rev()
        .map(|p| display_phone(&p.number.value))
        .collect();
    let email = r.emails.first().map(|e| e.address.value.clone());
    let login = email.clone().filter(|_| index.is_multiple_of(2));
    let password = login.as_ref().map(|_| format!("pbkdf2${index:016x}"));
    let bdate = r
        .birth_date
        .map(|d| format!("'{:04}-{:02}-{:02}'", d.year(), d.month(), d.day()))
        .unwrap_or_else(|| "NULL".into());
    format!(
        "INSERT INTO CLIENTS (PCODE, FILIAL, LASTNAME, FIRSTNAME, MIDNAME, BDATE, PASPTYPE, \
         PASPSER, PASPNUM, PHONE1, PHONE2, PHONE3, CLMAIL, CLLOGIN, CLPASSWORD, SNILS, POLIS) \
         VALUES ({pcode}, {filial}, {last}, {first}, {middle}, {bdate}, {ptype}, {ser}, {num}, \
         {p1}, {p2}, NULL, {mail}, {login}, {password}, {snils}, {oms})",
        filial =
            filial_of(r.business_unit.as_deref()).map_or("NULL".to_string(), |f| f.to_string()),
        last = quote(r.last_name.as_deref()),
        first = quote(r.first_name.as_deref()),
        middle = quote(r.middle_name.as_deref()),
        ptype = doc.map_or("NULL".to_string(), |d| d.doc_type.0.to_string()),
        ser = quote(series.as_deref()),
        num = quote(doc.map(|d| d.number.as_str())),
        p1 = quote(phones.first().map(String::as_str)),
        p2 = quote(phones.get(1).map(String::as_str)),
        mail = quote(email.as_deref()),
        login = quote(login.as_deref()),
        password = quote(password.as_deref()),
        snils = quote(r.snils.as_ref().map(|c| c.value.as_str())),
        oms = quote(r.oms_policy.as_ref().map(|c| c.value.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_changelog_script() {
        let stmts = statements(CHANGELOG_SQL);
        assert_eq!(stmts.len(), 4, "{stmts:#?}");
        assert!(stmts[0].starts_with("CREATE SEQUENCE"));
        assert!(stmts[3].starts_with("CREATE OR ALTER TRIGGER"));
        assert!(stmts[3].ends_with("END"));
        assert!(!stmts[3].contains('^'));
    }
}
