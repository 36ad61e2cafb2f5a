//! What is known about a model: its tokenizer family, context window, prices.

use serde::{Deserialize, Serialize};

/// A tokenizer family.
///
/// ```
/// assert_eq!(llm_tower_tokens::ModelInfo::lookup("gpt-4o-mini-2024-07-18").family, llm_tower_tokens::Family::O200k);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// OpenAI `o200k_base` (gpt-4o, gpt-4.1, o-series, gpt-5).
    O200k,
    /// OpenAI `cl100k_base` (gpt-4, gpt-3.5-turbo, text-embedding-3).
    Cl100k,
    /// Anthropic Claude (no public tokenizer: heuristic).
    Anthropic,
    /// Meta Llama (heuristic).
    Llama,
    /// Mistral (heuristic).
    Mistral,
    /// Google Gemini (heuristic).
    Gemini,
    /// Anything else (heuristic).
    Other,
}

impl Family {
    /// Whether counts for this family are exact (OpenAI's public tokenizers).
    pub fn is_exact(self) -> bool {
        matches!(self, Family::O200k | Family::Cl100k)
    }
}

pub use llm_tower_core::usage::Prices;

/// One model's facts.
///
/// ```
/// let m = llm_tower_tokens::ModelInfo::lookup("claude-3-5-haiku-latest");
/// assert_eq!(m.context_window, 200_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The table entry that matched (a prefix of the model name).
    pub prefix: &'static str,
    /// Tokenizer family.
    pub family: Family,
    /// Input + output tokens the model accepts.
    pub context_window: u32,
    /// List prices.
    pub prices: Prices,
}

const fn p(input: u64, cached_input: u64, output: u64) -> Prices {
    Prices { input, cached_input, output, reasoning: output }
}

/// Built-in models, longest prefix first within a family. List prices in
/// micro-dollars per million tokens, as published by the providers in 2025;
/// override them in configuration when yours differ.
const TABLE: &[ModelInfo] = &[
    m("gpt-5-nano", Family::O200k, 400_000, p(50_000, 5_000, 400_000)),
    m("gpt-5-mini", Family::O200k, 400_000, p(250_000, 25_000, 2_000_000)),
    m("gpt-5", Family::O200k, 400_000, p(1_250_000, 125_000, 10_000_000)),
    m("gpt-4.1-nano", Family::O200k, 1_047_576, p(100_000, 25_000, 400_000)),
    m("gpt-4.1-mini", Family::O200k, 1_047_576, p(400_000, 100_000, 1_600_000)),
    m("gpt-4.1", Family::O200k, 1_047_576, p(2_000_000, 500_000, 8_000_000)),
    m("gpt-4o-mini", Family::O200k, 128_000, p(150_000, 75_000, 600_000)),
    m("gpt-4o", Family::O200k, 128_000, p(2_500_000, 1_250_000, 10_000_000)),
    m("o4-mini", Family::O200k, 200_000, p(1_100_000, 275_000, 4_400_000)),
    m("o3-mini", Family::O200k, 200_000, p(1_100_000, 550_000, 4_400_000)),
    m("o3", Family::O200k, 200_000, p(2_000_000, 500_000, 8_000_000)),
    m("o1", Family::O200k, 200_000, p(15_000_000, 7_500_000, 60_000_000)),
    m("gpt-4-turbo", Family::Cl100k, 128_000, p(10_000_000, 10_000_000, 30_000_000)),
    m("gpt-4", Family::Cl100k, 8_192, p(30_000_000, 30_000_000, 60_000_000)),
    m("gpt-3.5-turbo", Family::Cl100k, 16_385, p(500_000, 500_000, 1_500_000)),
    m("text-embedding-3-small", Family::Cl100k, 8_191, p(20_000, 20_000, 0)),
    m("text-embedding-3-large", Family::Cl100k, 8_191, p(130_000, 130_000, 0)),
    m("claude-opus-4", Family::Anthropic, 200_000, p(15_000_000, 1_500_000, 75_000_000)),
    m("claude-sonnet-4", Family::Anthropic, 200_000, p(3_000_000, 300_000, 15_000_000)),
    m("claude-3-7-sonnet", Family::Anthropic, 200_000, p(3_000_000, 300_000, 15_000_000)),
    m("claude-3-5-sonnet", Family::Anthropic, 200_000, p(3_000_000, 300_000, 15_000_000)),
    m("claude-3-5-haiku", Family::Anthropic, 200_000, p(800_000, 80_000, 4_000_000)),
    m("claude", Family::Anthropic, 200_000, p(3_000_000, 300_000, 15_000_000)),
    m("llama", Family::Llama, 128_000, p(0, 0, 0)),
    m("mistral", Family::Mistral, 128_000, p(0, 0, 0)),
    m("gemini", Family::Gemini, 1_048_576, p(0, 0, 0)),
];

/// The longest prefix in [`TABLE`].
const LONGEST: usize = {
    let mut i = 0;
    let mut longest = 0;
    while i < TABLE.len() {
        if TABLE[i].prefix.len() > longest {
            longest = TABLE[i].prefix.len();
        }
        i += 1;
    }
    longest
};

const fn m(prefix: &'static str, family: Family, context_window: u32, prices: Prices) -> ModelInfo {
    ModelInfo { prefix, family, context_window, prices }
}

/// What is assumed of a model not in the table.
pub const UNKNOWN: ModelInfo = m("", Family::Other, 128_000, p(0, 0, 0));

impl ModelInfo {
    /// The entry for `model` (the longest table prefix it starts with, after
    /// any `provider/` routing prefix), or [`UNKNOWN`].
    ///
    /// ```
    /// use llm_tower_tokens::{Family, ModelInfo};
    /// assert_eq!(ModelInfo::lookup("openai/gpt-4.1-mini").prefix, "gpt-4.1-mini");
    /// assert_eq!(ModelInfo::lookup("gpt-4").family, Family::Cl100k);
    /// assert_eq!(ModelInfo::lookup("my-finetune").family, Family::Other);
    /// ```
    pub fn lookup(model: &str) -> ModelInfo {
        let name = match model.rfind('/') {
            Some(i) => &model.as_bytes()[i + 1..],
            None => model.as_bytes(),
        };
        // The table's prefixes are lower case and at most LONGEST bytes long:
        // the name's head lowered once (on the stack), then plain prefix
        // comparisons, the longest match kept.
        let mut buf = [0u8; LONGEST];
        let head = &mut buf[..name.len().min(LONGEST)];
        for (d, s) in head.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let mut best = UNKNOWN;
        for e in TABLE {
            if e.prefix.len() > best.prefix.len() && head.starts_with(e.prefix.as_bytes()) {
                best = *e;
            }
        }
        best
    }

    /// The built-in table.
    pub fn table() -> &'static [ModelInfo] {
        TABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Usage;

    #[test]
    fn table_prefixes_are_lower_case_as_lookup_compares_them() {
        for e in TABLE {
            assert_eq!(e.prefix, e.prefix.to_ascii_lowercase(), "lookup compares lowered names");
        }
    }

    /// The table scan against the plainest statement of the rule: every
    /// entry's prefix, in any case, behind routing prefixes, with suffixes.
    #[test]
    fn lookup_agrees_with_a_plain_longest_prefix_search() {
        let plain = |model: &str| {
            let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
            TABLE
                .iter()
                .filter(|e| name.starts_with(e.prefix))
                .max_by_key(|e| e.prefix.len())
                .copied()
                .unwrap_or(UNKNOWN)
        };
        let mut names = vec![String::new(), "/".into(), "x/".into(), "g".into(), "é-gpt-4o".into()];
        for e in TABLE {
            for n in [
                e.prefix.to_string(),
                e.prefix.to_ascii_uppercase(),
                format!("{}-2025-01-01-and-a-long-suffix", e.prefix),
                format!("openrouter/openai/{}", e.prefix),
                e.prefix[..e.prefix.len() - 1].to_string(),
                format!("{}é", e.prefix),
            ] {
                names.push(n);
            }
        }
        for n in &names {
            assert_eq!(ModelInfo::lookup(n), plain(n), "{n:?}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(ModelInfo::lookup("gpt-4o-mini").prefix, "gpt-4o-mini");
        assert_eq!(ModelInfo::lookup("gpt-4o-2024-08-06").prefix, "gpt-4o");
        assert_eq!(ModelInfo::lookup("gpt-4-0613").prefix, "gpt-4");
        assert_eq!(ModelInfo::lookup("gpt-4-turbo-preview").prefix, "gpt-4-turbo");
        assert_eq!(ModelInfo::lookup("o3-mini-high").prefix, "o3-mini");
        assert_eq!(ModelInfo::lookup("GPT-5-MINI").prefix, "gpt-5-mini");
        assert_eq!(ModelInfo::lookup("claude-3-5-haiku-20241022").prices.output, 4_000_000);
        assert_eq!(ModelInfo::lookup("meta-llama/llama-3.1-70b").family, Family::Llama);
    }

    #[test]
    fn cost_is_exact_and_rounds_up() {
        let prices = ModelInfo::lookup("gpt-4o-mini").prices;
        let one = Usage { input: 1, output: 0, cached_input: 0, reasoning: 0 };
        assert_eq!(prices.cost_micros(&one), 1, "0.15 micro-dollars rounds up to 1");
        let million = Usage { input: 1_000_000, output: 1_000_000, cached_input: 0, reasoning: 0 };
        assert_eq!(prices.cost_micros(&million), 150_000 + 600_000);
        // Summing many small calls never drifts: integers all the way.
        let calls = 1_000_000u64;
        let each = Usage { input: 1_000, output: 100, cached_input: 0, reasoning: 0 };
        let total: u64 = (0..calls).map(|_| prices.cost_micros(&each)).sum();
        assert_eq!(total, calls * 210);
        // Reasoning and cached tokens use their own prices; counts never underflow.
        let weird = Usage { input: 10, output: 5, cached_input: 50, reasoning: 50 };
        let p = Prices { input: 1_000_000, cached_input: 0, output: 0, reasoning: 2_000_000 };
        assert_eq!(p.cost_micros(&weird), 10);
    }
}
