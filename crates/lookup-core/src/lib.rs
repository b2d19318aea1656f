//! The tested logic of the reverse-lookup module (seed 000, RL1–RL20): what
//! to look up, how to ask, how to read answers and how to race providers.
//!
//! - [`candidates`]: base-number candidates for extensions of a number block (RL3);
//! - [`placeholders`]: lookup URL and SQL templates, SQL values always bound (RL5);
//! - [`rules`]: parser rules that extract names and spam scores (RL7);
//! - [`answer`]: whether an answer is a real name (RL19);
//! - [`cache`]: keyed-hash cache keys, numbers never in clear (RL11);
//! - [`race`]: all providers at once, first success wins, within a budget (RL9/RL10).
//!
//! Pure logic only: the providers (HTTP, SQL, CRM), the cache's storage and
//! the host services come with the module that uses this crate.

pub mod answer;
pub mod cache;
pub mod candidates;
pub mod placeholders;
pub mod race;
pub mod rules;

pub use answer::{is_meaningful, verdict, Verdict};
pub use cache::cache_key;
pub use candidates::base_number_candidates;
pub use placeholders::{
    check_template, expand, expand_url, no_escape, percent_encode, sql_with_binds,
    sql_with_binds_with, BindStyle, Placeholder, TelFormat, TemplateError,
};
pub use race::{first_success, Attempt, AttemptReport, AttemptResult, RaceOutcome, Winner};
pub use rules::{Extracted, Field, Rule, RuleError, RuleSet};
