//! Multi-row statements for the SQLite write path.
//!
//! Every statement is a round trip to sqlx's SQLite worker thread (two channel
//! hand-offs and two thread wake-ups). One statement per postback made those
//! hand-offs most of a batch's time, so the write path binds up to [`MAX_ROWS`]
//! rows per statement. Each row count has its own text, built once, so the
//! writer connection prepares each size once and keeps it (see
//! [`WRITER_STATEMENT_CACHE`]).

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::Sqlite;

/// Rows per statement. The widest row (an event) binds 22 parameters, so a full
/// statement binds 1,408: far below SQLite's limit of 32,766.
pub(super) const MAX_ROWS: usize = 64;

/// Prepared statements the writer connection keeps: every size of every
/// multi-row statement (about ten of them, [`MAX_ROWS`] sizes each), plus the
/// writer's other statements, so none is prepared twice.
pub(super) const WRITER_STATEMENT_CACHE: usize = 1024;

pub(super) type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// One statement in every size from 1 to [`MAX_ROWS`] rows: `head`, then the rows'
/// `(?, …)` groups, then `tail`.
pub(super) struct MultiRow {
    texts: Vec<String>,
}

impl MultiRow {
    pub(super) fn new(head: &str, columns: usize, tail: &str) -> Self {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let texts = (1..=MAX_ROWS)
            .map(|n| format!("{head}{}{tail}", vec![row.as_str(); n].join(", ")))
            .collect();
        Self { texts }
    }

    /// Run the statement over `rows`, [`MAX_ROWS`] at a time, `bind` binding one
    /// row's columns in order; returns every row the statements return.
    pub(super) async fn run<'q, T>(
        &'q self,
        conn: &mut SqliteConnection,
        rows: &'q [T],
        bind: impl Fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut returned = Vec::new();
        for chunk in rows.chunks(MAX_ROWS) {
            let mut query = sqlx::query(&self.texts[chunk.len() - 1]);
            for row in chunk {
                query = bind(query, row);
            }
            returned.extend(query.fetch_all(&mut *conn).await?);
        }
        Ok(returned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_has_its_row_groups() {
        let statement = MultiRow::new("insert into t (a, b) values ", 2, " returning a");
        assert_eq!(
            statement.texts[0],
            "insert into t (a, b) values (?, ?) returning a"
        );
        assert_eq!(
            statement.texts[2],
            "insert into t (a, b) values (?, ?), (?, ?), (?, ?) returning a"
        );
        assert_eq!(statement.texts.len(), MAX_ROWS);
    }
}
