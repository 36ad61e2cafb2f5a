//! Exact OpenAI token counts with a DFA pre-split.
//!
//! tiktoken splits text into pieces with a regex that has a look-ahead
//! (`\s+(?!\S)`: a run of spaces leaves its last one to the next word), so
//! tiktoken-rs runs it in `fancy_regex`'s backtracking VM: most of a short
//! prompt's count went there. Here the same pattern without the look-ahead
//! runs in `regex`'s DFA, and the look-ahead is applied to its matches: a
//! whitespace run that the last alternative matched (no line break in it,
//! not at the end of the text) and that a non-space follows gives back its
//! last character. Each piece is then counted by tiktoken-rs's own BPE merge
//! over the same ranks. For o200k, ASCII pieces do not reach the regex at
//! all: [`crate::split`] decides them by hand (a DFA search per piece was
//! most of what is left). `tests` checks the counts against tiktoken-rs's on
//! a corpus and on generated text, and the hand split's pieces against the
//! regex's.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, Rank};

/// o200k_base's pattern with `\s+(?!\S)|\s+` as `\s+`.
const O200K: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+",
);

/// cl100k_base's pattern, possessive quantifiers as greedy ones (nothing
/// after them can make them give back) and `\s+(?!\S)|\s` as `\s+`.
const CL100K: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"|\s+$|\s*[\r\n]|\s+",
);

/// An encoding's ranks and its look-ahead-free pre-split.
pub(crate) struct Bpe {
    ranks: FxHashMap<Vec<u8>, Rank>,
    split: Regex,
    /// o200k: ASCII pieces are split by hand ([`crate::split`]).
    ascii_split: bool,
}

impl Bpe {
    /// o200k_base (`o200k`) or cl100k_base: the ranks read out of
    /// tiktoken-rs's encoder, which is then dropped (this table is all a
    /// count needs: less memory than the encoder with its decoders).
    pub(crate) fn new(o200k: bool) -> Self {
        let (bpe, ordinary, pattern) = if o200k {
            (tiktoken_rs::o200k_base(), 199_998, O200K)
        } else {
            (tiktoken_rs::cl100k_base(), 100_256, CL100K)
        };
        let bpe: CoreBPE = bpe.expect("embedded ranks");
        // Ordinary ranks are 0..ordinary; the special tokens come after.
        let ranks = (0..ordinary).filter_map(|r| bpe.decode_bytes(&[r]).ok().map(|b| (b, r))).collect();
        Bpe { ranks, split: Regex::new(pattern).expect("valid pattern"), ascii_split: o200k }
    }

    /// The number of tokens tiktoken's `encode_ordinary` gives `text`.
    pub(crate) fn count(&self, text: &str) -> u32 {
        let mut n = 0;
        let mut at = 0;
        while at < text.len() {
            let Some(end) = self.piece_end(text, at) else { break };
            n += self.count_piece(&text.as_bytes()[at..end]);
            at = end;
        }
        n
    }

    /// Where the piece that starts at `at` ends; `None` if none does (the
    /// pattern matches every character, so not for valid text).
    fn piece_end(&self, text: &str, at: usize) -> Option<usize> {
        if self.ascii_split
            && let Some(end) = crate::split::o200k_piece(text.as_bytes(), at)
        {
            return Some(end);
        }
        self.regex_piece_end(text, at)
    }

    /// [`Self::piece_end`] by the regex alone.
    fn regex_piece_end(&self, text: &str, at: usize) -> Option<usize> {
        // Every character starts a match of some alternative, so the next
        // piece starts where the last ended: searched anchored there (a
        // forward scan only); unanchored should that ever not hold.
        let input = Input::new(text).range(at..);
        let found =
            self.split.search(&input.clone().anchored(Anchored::Yes)).or_else(|| self.split.search(&input));
        let m = found.filter(|m| !m.is_empty())?;
        Some(give_back_last_space(text, m.start(), m.end()).unwrap_or(m.end()))
    }

    fn count_piece(&self, piece: &[u8]) -> u32 {
        if self.ranks.contains_key(piece) {
            1
        } else {
            // Every single byte is a rank: a piece not found has two or more.
            tiktoken_rs::byte_pair_split(piece, &self.ranks).len() as u32
        }
    }
}

/// Where the look-ahead `\s+(?!\S)` would have ended the match
/// `text[start..end]`: `None` unless the match is a whitespace run without
/// a line break (the pattern's last alternative) of two characters or more
/// that a non-space follows; then the run without its last character.
fn give_back_last_space(text: &str, start: usize, end: usize) -> Option<usize> {
    let run = &text[start..end];
    let next = text[end..].chars().next()?;
    if next.is_whitespace() || !run.chars().all(|c| c.is_whitespace() && c != '\r' && c != '\n') {
        return None;
    }
    let last = run.chars().next_back()?;
    (run.len() > last.len_utf8()).then(|| end - last.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    static FAST: LazyLock<[Bpe; 2]> = LazyLock::new(|| [Bpe::new(true), Bpe::new(false)]);
    static REFERENCE: LazyLock<[CoreBPE; 2]> = LazyLock::new(|| {
        [tiktoken_rs::o200k_base().expect("ranks"), tiktoken_rs::cl100k_base().expect("ranks")]
    });

    fn agree(text: &str) -> Result<(), String> {
        for (fast, reference) in FAST.iter().zip(REFERENCE.iter()) {
            let (got, want) = (fast.count(text), reference.encode_ordinary(text).len() as u32);
            if got != want {
                return Err(format!("{text:?}: {got} tokens, tiktoken {want}"));
            }
        }
        Ok(())
    }

    #[test]
    fn counts_as_tiktoken_does_on_a_corpus() {
        let corpus = [
            "",
            "Hello there, how are you?",
            "tiktoken is great!",
            "  leading spaces and   runs   of them  ",
            "trailing newline\n",
            "a  \n\n  b\r\n\r\n\tc   \n",
            "tabs\t\tand\u{a0}\u{a0}no-break spaces\u{3000}ideographic",
            "numbers 1234567 3.14159 -42 1e10 and 00007",
            "I'm sure you'll say it's fine, they've said they'd go; WE'LL SEE",
            "fn main() {\n    println!(\"{}\", x /* comment */);\n}\n",
            "<|endoftext|> is text here, not a special token",
            "emoji 😀👍🏽 and CJK 日本語のテキスト, العربية, русский текст, Ελληνικά",
            "MixedCASEWords camelCase snake_case kebab-case URLs https://x.y/z?a=b&c=d",
            "     ",
            "\n\n\n",
            " \u{2003}x",
            "e\u{301}te\u{301} combining marks",
        ];
        for text in corpus {
            agree(text).unwrap();
        }
        agree(&"lorem ipsum dolor sit amet, ".repeat(200)).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Text from every class the pattern distinguishes, in any order.
        #[test]
        fn counts_as_tiktoken_does_on_generated_text(parts in prop::collection::vec(prop_oneof![
            Just(" ".to_owned()), Just("  ".to_owned()), Just("\t".to_owned()), Just("\n".to_owned()),
            Just("\r\n".to_owned()), Just("\u{a0}".to_owned()), Just("\u{3000}".to_owned()),
            Just("'s".to_owned()), Just("'LL".to_owned()), Just("/".to_owned()), Just("...".to_owned()),
            "[a-z]{1,8}", "[A-Z]{1,4}", "[A-Z][a-z]{1,6}", "[0-9]{1,5}", "[!-/:-@]{1,3}",
            "[àéîõüßçñ]{1,3}", "[日本語中文]{1,3}", "[😀👍]{1,2}", "\\PC{1,3}",
        ], 0..24)) {
            agree(&parts.concat()).map_err(TestCaseError::fail)?;
        }

        /// The hand split decides each piece as the regex does, or leaves it
        /// to the regex: checked at every character boundary of text dense in
        /// the bytes its decisions turn on.
        #[test]
        fn ascii_pieces_are_the_regex_pieces(parts in prop::collection::vec(prop_oneof![
            Just(" "), Just("\t"), Just("\n"), Just("\r"), Just("\u{b}"), Just("\u{c}"), Just("\u{1}"),
            Just("'"), Just("s"), Just("S"), Just("re"), Just("vE"), Just("ll"), Just("m"), Just("D"), Just("t"),
            Just("/"), Just("."), Just("a"), Just("Z"), Just("7"), Just("\u{7f}"),
            Just("\u{a0}"), Just("\u{17f}"), Just("\u{212a}"), Just("\u{85}"), Just("é"), Just("\u{301}"),
            Just("\u{663}"), Just("\u{b2}"), Just("\u{2028}"), Just("日"),
        ], 0..32)) {
            let text = parts.concat();
            let o200k = &FAST[0];
            for at in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                if let Some(end) = crate::split::o200k_piece(text.as_bytes(), at) {
                    prop_assert_eq!(Some(end), o200k.regex_piece_end(&text, at), "{:?} at {}", text, at);
                }
            }
            agree(&text).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn ascii_text_is_split_by_hand() {
        // The fast path is taken for ASCII (a piece it declined would go to
        // the regex and still count right, unseen by the comparisons above).
        let text = "Hello there, I'm fine; they'LL see:  x\n\n  y 123456 ./a\r\n";
        let mut at = 0;
        while at < text.len() {
            at = crate::split::o200k_piece(text.as_bytes(), at).expect("decided by hand");
        }
        assert_eq!(at, text.len());
        assert_eq!(crate::split::o200k_piece("\u{a0}x".as_bytes(), 0), None);
        assert_eq!(crate::split::o200k_piece("it'\u{17f}".as_bytes(), 0), None);
    }
}
