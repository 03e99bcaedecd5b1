//! Cheap tests on names and document numbers that settle most comparisons
//! before an edit distance is computed. Blocking puts records together that
//! share one key, so most names compared differ in many letters; strsim's
//! Damerau–Levenshtein (two vectors and a hash map per call) was the
//! costliest step of scoring a pair. The tests here never change a level:
//! they only say when the distance cannot be small enough to matter.

/// Whether `a` and `b` are equal once spaces and hyphens are left out
/// (`soph ie` / `sophie`, `анна-мария` / `аннамария`).
pub(super) fn equal_joined(a: &str, b: &str) -> bool {
    joined(a).eq(joined(b))
}

fn joined(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| !matches!(c, ' ' | '-'))
}

/// Whether the Damerau–Levenshtein distance of `a` and `b` may be at most
/// `most`: false only when it certainly is more.
pub(super) fn may_be_within(
    a: impl Iterator<Item = char>,
    b: impl Iterator<Item = char>,
    most: usize,
) -> bool {
    letters_apart(a, b).is_none_or(|d| d <= most)
}

/// The most letters [`letters_apart`] compares (a name or a document number
/// is far shorter).
const MAX_LETTERS: usize = 64;

/// The bag distance: with the letters of `a` and `b` taken as multisets,
/// how many are left over on the side with more left over. Each edit
/// (a letter inserted, deleted or replaced; two neighbours exchanged)
/// lowers it by at most one, so it is a lower bound of the
/// Damerau–Levenshtein distance. `None` when `b` is longer than
/// [`MAX_LETTERS`] (no bound).
fn letters_apart(a: impl Iterator<Item = char>, b: impl Iterator<Item = char>) -> Option<usize> {
    let mut rest = ['\0'; MAX_LETTERS];
    let mut n = 0;
    for c in b {
        *rest.get_mut(n)? = c;
        n += 1;
    }
    // Bit j set: `rest[j]` is matched by a letter of `a`.
    let mut used: u64 = 0;
    let mut a_only = 0;
    for c in a {
        match (0..n).find(|&j| used & (1 << j) == 0 && rest[j] == c) {
            Some(j) => used |= 1 << j,
            None => a_only += 1,
        }
    }
    let b_only = n - used.count_ones() as usize;
    Some(a_only.max(b_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apart(a: &str, b: &str) -> Option<usize> {
        letters_apart(a.chars(), b.chars())
    }

    #[test]
    fn the_bag_distance_counts_the_letters_left_over() {
        assert_eq!(apart("иванов", "иванов"), Some(0));
        // Neighbours exchanged: the same letters.
        assert_eq!(apart("иванов", "ивнаов"), Some(0));
        assert_eq!(apart("иванов", "иванова"), Some(1));
        assert_eq!(apart("анна", "инна"), Some(1));
        assert_eq!(apart("петр", "сергей"), Some(4));
        assert_eq!(apart("", "ab"), Some(2));
        assert_eq!(apart(&"a".repeat(65), &"a".repeat(65)), None);
    }

    /// The bound never exceeds the distance it stands in for.
    #[test]
    fn the_bag_distance_is_at_most_the_edit_distance() {
        let words = [
            "иванов",
            "ивановa",
            "иванова",
            "ивнаов",
            "вианов",
            "петров",
            "петр",
            "пётр",
            "анна",
            "инна",
            "жанна",
            "ca",
            "abc",
            "",
            "a",
            "4504123456",
            "4504123465",
            "4505123456",
        ];
        for a in words {
            for b in words {
                let bound = apart(a, b).unwrap();
                let distance = strsim::damerau_levenshtein(a, b);
                assert!(bound <= distance, "{a} {b}: {bound} > {distance}");
                assert!(may_be_within(a.chars(), b.chars(), distance));
            }
        }
    }

    #[test]
    fn spaces_and_hyphens_are_left_out() {
        assert!(equal_joined("анна-мария", "анна мария"));
        assert!(equal_joined("soph ie", "sophie"));
        assert!(!equal_joined("анна", "инна"));
    }
}
