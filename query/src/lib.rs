//! Answering in Roster: queries over the read models the projections build.
//! Every query is scoped to one company; another company's rows do not
//! exist for it.

pub mod audit;
pub mod cards;
pub mod cursor;
pub mod history;
pub mod households;
pub mod relationships;
pub mod users;

use serde::Serialize;

/// A page of results: `next_cursor` is `None` exactly when `has_more` is false.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only tells
    /// that there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Self {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more { rows.last().map(cursor_of) } else { None };
        Page {
            data: rows,
            has_more,
            next_cursor,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid cursor")]
    InvalidCursor,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("corrupt read model row: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Keys(#[from] roster_vault::VaultError),
    #[error(transparent)]
    Sealed(#[from] roster_vault::seal::OpenError),
}
