//! o200k_base's pre-split for ASCII, by hand.
//!
//! Each piece of ASCII text is decided by a byte or two of look-ahead, so a
//! short prompt spends most of its count on starting regex searches, one per
//! piece. [`o200k_piece`] decides a piece the way the pattern's alternatives
//! do (first alternative that matches, each greedy) when every byte the
//! decision reads is ASCII, and gives up (`None`) otherwise: the caller then
//! asks the regex for that piece. A non-ASCII byte can be a letter, a mark, a
//! digit or a space in Unicode's classes (and `ſ` folds to `s` in the
//! contractions), so nothing past one is guessed. The tests compare every
//! piece with the regex's.
//!
//! The alternatives, in order, as they read in ASCII:
//! 1. an optional prefix (not CR, LF, letter or digit), upper case letters,
//!    lower case ones (at least one), an optional contraction;
//! 2. the same with at least one upper case letter and any lower case;
//! 3. one to three digits;
//! 4. an optional space, punctuation (not white space, letter or digit), then
//!    any CR, LF and `/`;
//! 5. white space up to its last CR or LF;
//! 6. white space not followed by a non-space (a run before a word leaves
//!    its last character to it), else 7. white space.

/// How o200k's pattern sees an ASCII byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Upper,
    Lower,
    Digit,
    /// `\r` or `\n`.
    Newline,
    /// White space other than a line break: tab, vertical tab, form feed, space.
    Space,
    /// Anything else below 0x80: punctuation and control characters.
    Punct,
    /// 0x80 and above: part of a non-ASCII character.
    Other,
}

const fn class(b: u8) -> Class {
    match b {
        b'A'..=b'Z' => Class::Upper,
        b'a'..=b'z' => Class::Lower,
        b'0'..=b'9' => Class::Digit,
        b'\r' | b'\n' => Class::Newline,
        b'\t' | 0x0b | 0x0c | b' ' => Class::Space,
        0x80.. => Class::Other,
        _ => Class::Punct,
    }
}

const CLASSES: [Class; 256] = {
    let mut t = [Class::Other; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = class(i as u8);
        i += 1;
    }
    t
};

/// The class of `b[i]`; `None` past the end.
fn at(b: &[u8], i: usize) -> Option<Class> {
    b.get(i).map(|&c| CLASSES[c as usize])
}

/// Where the piece o200k's pattern matches at `b[start..]` ends, when that
/// needs no byte at or above 0x80; `None` to ask the regex. `start` is below
/// `b.len()` and on a character boundary.
pub(crate) fn o200k_piece(b: &[u8], start: usize) -> Option<usize> {
    let first = at(b, start)?;
    let next = at(b, start + 1);
    match first {
        Class::Other => None,
        Class::Upper | Class::Lower => word(b, start),
        Class::Digit => digits(b, start),
        Class::Punct | Class::Space if next == Some(Class::Other) => None,
        // A prefix for the word that follows (alternatives 1 and 2).
        Class::Punct | Class::Space if matches!(next, Some(Class::Upper | Class::Lower)) => {
            word(b, start + 1)
        }
        Class::Punct => punctuation(b, start),
        Class::Space if b[start] == b' ' && next == Some(Class::Punct) => punctuation(b, start + 1),
        Class::Space | Class::Newline => space(b, start),
    }
}

/// Alternatives 1 and 2 from the letter at `i`: upper case, then lower case,
/// then a contraction.
fn word(b: &[u8], mut i: usize) -> Option<usize> {
    while at(b, i) == Some(Class::Upper) {
        i += 1;
    }
    while at(b, i) == Some(Class::Lower) {
        i += 1;
    }
    match at(b, i) {
        Some(Class::Other) => None,
        _ if b.get(i) == Some(&b'\'') => contraction(b, i),
        _ => Some(i),
    }
}

/// After a word, at its `'`: `'s 't 're 've 'm 'll 'd` in any case.
fn contraction(b: &[u8], quote: usize) -> Option<usize> {
    let lower = |k: usize| b.get(quote + k).map(u8::to_ascii_lowercase);
    match lower(1) {
        // `ſ` folds to `s`: its bytes are not ASCII.
        Some(c) if c >= 0x80 => None,
        Some(b's' | b't' | b'm' | b'd') => Some(quote + 2),
        Some(b'r') if lower(2) == Some(b'e') => Some(quote + 3),
        Some(b'v') if lower(2) == Some(b'e') => Some(quote + 3),
        Some(b'l') if lower(2) == Some(b'l') => Some(quote + 3),
        _ => Some(quote),
    }
}

/// Alternative 3: one to three digits.
fn digits(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i - start < 3 {
        match at(b, i) {
            Some(Class::Digit) => i += 1,
            // Another script's digit would be a fourth `\p{N}`.
            Some(Class::Other) => return None,
            _ => break,
        }
    }
    Some(i)
}

/// Alternative 4 from the punctuation at `i`: punctuation, then CR, LF and `/`.
fn punctuation(b: &[u8], mut i: usize) -> Option<usize> {
    while at(b, i) == Some(Class::Punct) {
        i += 1;
    }
    if at(b, i) == Some(Class::Other) {
        return None;
    }
    while matches!(b.get(i), Some(b'\r' | b'\n' | b'/')) {
        i += 1;
    }
    Some(i)
}

/// Alternatives 5 to 7 from the white space at `start`.
fn space(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut last_newline = None;
    loop {
        match at(b, i) {
            Some(Class::Space) => i += 1,
            Some(Class::Newline) => {
                last_newline = Some(i);
                i += 1;
            }
            // No-break and other Unicode spaces would lengthen the run.
            Some(Class::Other) => return None,
            _ => break,
        }
    }
    Some(match last_newline {
        Some(n) => n + 1,
        None if i == b.len() || i - start == 1 => i,
        // A non-space follows: the run's last space goes to it.
        None => i - 1,
    })
}
