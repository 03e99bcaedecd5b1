use crate::{DocumentType, IdentityDocument};

/// Normalizes a document's series and number for its canonical type.
pub fn document(
    doc_type: DocumentType,
    source_type_code: Option<&str>,
    series: Option<&str>,
    number: Option<&str>,
) -> Option<IdentityDocument> {
    let number = number.map(str::trim).filter(|n| !n.is_empty())?;
    Some(IdentityDocument {
        doc_type,
        source_type_code: source_type_code.map(str::to_string),
        series: series.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string),
        number: number.to_string(),
        problem: None,
    })
}
