//! The search page over HTTP: by source id, SNILS, OMS policy, document and
//! by name and birth date (scored as `$match` scores: the person ranks
//! first); each search by personal data writes its access-log line, a
//! viewer may search, a signed-out request goes to sign-in.

use proto::DocumentType;

use crate::support::{client, Console, STEWARD, VIEWER};

/// The search page for `params` with the session `cookie`: status, the
/// `Location` of a redirect and the page.
async fn search<P: serde::Serialize + ?Sized>(
    console: &Console,
    cookie: &str,
    params: &P,
) -> (u16, String, String) {
    let r = client()
        .get(console.url("/search"))
        .query(params)
        .header("cookie", cookie)
        .send()
        .await
        .expect("search");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.expect("page"))
}

/// The access-log lines of the search page: subject, records.
async fn search_views(console: &Console, client_name: &str) -> Vec<(String, Vec<String>)> {
    sqlx::query_as(
        "SELECT subject, records FROM personal_data_access
         WHERE command = 'console GET /console/search' AND client = $1 ORDER BY id",
    )
    .bind(format!("console:{client_name}"))
    .fetch_all(&console.pool)
    .await
    .expect("access log")
}

/// SNILS digits laid out as people type them: `112-233-445 95`.
fn typed_snils(digits: &str) -> String {
    format!(
        "{}-{}-{} {}",
        &digits[0..3],
        &digits[3..6],
        &digits[6..9],
        &digits[9..11]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_search_finds_the_person_and_is_logged() {
    let console = Console::start().await;
    let (cookie, _) = console.session(STEWARD).await;

    // By source id: straight to the person's page; unknown: nothing found.
    let pair = &console.pairs[0];
    let person = console.person_of(&pair.a).await;
    let (status, location, _) = search(
        &console,
        &cookie,
        &[("source", &pair.a.0), ("source_id", &pair.a.1)],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("/console/persons/{person}"))
    );
    let (status, _, page) = search(
        &console,
        &cookie,
        &[("source", "qms"), ("source_id", "no-such")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"nothing\""));

    // By SNILS (typed with dashes and a space), OMS and document.
    let with = |f: &dyn Fn(&proto::PatientRecord) -> bool| {
        console
            .pairs
            .iter()
            .find(|p| f(&p.a_record))
            .expect("a synthetic record with the identifier")
            .clone()
    };
    let p = with(&|r| r.snils.as_ref().is_some_and(|c| c.is_valid()));
    let snils = typed_snils(&p.a_record.snils.as_ref().unwrap().value);
    let (_, _, page) = search(&console, &cookie, &[("snils", &snils)]).await;
    found_record(&console, &page, &p).await;

    let p = with(&|r| r.oms_policy.as_ref().is_some_and(|c| c.is_valid()));
    let oms = format!(" {} ", p.a_record.oms_policy.as_ref().unwrap().value);
    let (_, _, page) = search(&console, &cookie, &[("oms", &oms)]).await;
    found_record(&console, &page, &p).await;

    let usable =
        |d: &proto::IdentityDocument| d.problem.is_none() && d.doc_type != DocumentType::UNKNOWN;
    let p = with(&|r| r.documents.iter().any(usable));
    let doc = p.a_record.documents.iter().find(|d| usable(d)).unwrap();
    let (_, _, page) = search(
        &console,
        &cookie,
        &[
            ("doc_type", doc.doc_type.code().expect("a known type")),
            ("series", doc.series.as_deref().unwrap_or("")),
            ("number", &doc.number),
        ],
    )
    .await;
    found_record(&console, &page, &p).await;
    // The Russian pages name document types in Russian, on the search form
    // and on the person's page (type, series, number).
    assert!(page.contains(">Паспорт гражданина РФ</option>"), "{page}");
    let (_, person_page) = console
        .get(
            &cookie,
            &format!("/persons/{}", console.person_of(&p.a).await),
        )
        .await;
    let shown = [
        steward_console::i18n::Lang::Ru.document_type(doc.doc_type.0),
        doc.series.clone().unwrap_or_default(),
        doc.number.clone(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .cloned()
    .collect::<Vec<_>>()
    .join(" ");
    assert!(person_page.contains(&shown), "{shown} not in {person_page}");

    // A wrong SNILS (bad checksum) finds nothing and is still logged.
    let (_, _, page) = search(&console, &cookie, &[("snils", "112-233-445 96")]).await;
    assert!(page.contains("id=\"nothing\""));

    // By name and birth date, typed in lower case: scored, the person first.
    let (status, _, page) = search(&console, &cookie, &name_query(&pair.a_record)).await;
    assert_eq!(status, 200);
    assert_eq!(first_candidate(&page), Some(person), "{page}");
    // Grades in the page's language.
    let grades = ["точно", "вероятно", "возможно", "точно нет"];
    assert!(
        grades
            .iter()
            .any(|g| page.contains(&format!("<td>{g}</td>"))),
        "{page}"
    );
    assert!(!["certain", "probable", "possible"]
        .iter()
        .any(|g| page.contains(&format!("<td>{g}</td>"))));

    let views = search_views(&console, STEWARD).await;
    let subjects: Vec<&str> = views.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "search by snils",
            "search by oms",
            "search by document",
            "search by snils",
            "search by name and birth date"
        ]
    );
    let by_name = &views.last().unwrap().1;
    assert!(
        by_name.contains(&format!("{}:{}", pair.a.0, pair.a.1)),
        "{by_name:?}"
    );
    // The access log names records, never what was typed.
    let typed = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM personal_data_access WHERE subject LIKE '%' || $1 || '%'",
    )
    .bind(pair.a_record.last_name.clone().unwrap_or_default())
    .fetch_one(&console.pool)
    .await
    .unwrap();
    assert_eq!(typed, 0);

    // A viewer searches too.
    let (viewer, _) = console.session(VIEWER).await;
    let (status, _, page) = search(&console, &viewer, &name_query(&pair.a_record)).await;
    assert_eq!(status, 200);
    assert_eq!(first_candidate(&page), Some(person));
    assert_eq!(search_views(&console, VIEWER).await.len(), 1);

    // Signed out: to sign-in, nothing searched, nothing logged.
    let (status, location, _) = search(&console, "", &name_query(&pair.a_record)).await;
    assert_eq!((status, location.as_str()), (303, "/console/signin"));
    let all: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM personal_data_access WHERE command = 'console GET /console/search'",
    )
    .fetch_one(&console.pool)
    .await
    .unwrap();
    assert_eq!(all, 6);
}

/// The page lists pair `p`'s record `a` and links its person.
async fn found_record(console: &Console, page: &str, p: &crate::support::Pair) {
    let person = console.person_of(&p.a).await;
    assert!(page.contains(&format!("{}:{}", p.a.0, p.a.1)), "{page}");
    assert!(
        page.contains(&format!("href=\"/console/persons/{person}\"")),
        "{page}"
    );
}

/// Last name, first name and birth date of `r` as a steward might type
/// them (lower case).
fn name_query(r: &proto::PatientRecord) -> Vec<(&'static str, String)> {
    vec![
        (
            "last_name",
            r.last_name.clone().expect("a last name").to_lowercase(),
        ),
        (
            "first_name",
            r.first_name.clone().unwrap_or_default().to_lowercase(),
        ),
        (
            "birth_date",
            r.birth_date.expect("a birth date").to_string(),
        ),
    ]
}

/// The person of the first candidate row.
fn first_candidate(page: &str) -> Option<i64> {
    let at = page.find("data-person=\"")? + 13;
    page[at..].split('"').next()?.parse().ok()
}
