//! The PostgreSQL schema stays distributable by app (docs/SCALING.md: Citus with
//! `app_id` as the distribution column of every app-owned table, `apps` and
//! `api_keys` as reference tables):
//! - in the catalog of a freshly migrated database, every table is either a reference
//!   table or app-owned (has `app_id`), and every primary key, unique constraint,
//!   unique index and foreign key between app-owned tables includes `app_id`;
//! - in the source, no statement of the PostgreSQL store joins app-owned rows
//!   without tying them to one app (a static scan, described at
//!   [`cross_app_joins`]).

use std::collections::BTreeSet;

use sqlx::Row;

use crate::helpers::{pg_connect, run_cli, Backend, TestDb};

/// Tables shared by every app or belonging to none: Citus reference tables (the
/// unauthenticated delivery log is small, bounded and global).
const REFERENCE_TABLES: [&str; 3] = ["apps", "api_keys", "unauthenticated_deliveries"];

/// Tables whose every row belongs to one app (`app_id`): Citus distributed tables.
/// The catalog test keeps this list equal to the schema.
const APP_OWNED: [&str; 10] = [
    "attribution_days",
    "attributions",
    "dedupe_keys",
    "deliveries",
    "destinations",
    "outbox",
    "partner_connection_shards",
    "postback_events",
    "quota_usage",
    "user_identities",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_an_app_owned_table_includes_app_id() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let out = run_cli(db.url(), &["migrate"]);
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = pg_connect(db.url()).await.expect("connect");

    // Every table (a partitioned table counts once, by its parent) is a reference
    // table or has app_id.
    let tables = sqlx::query(
        "select c.relname::text, exists (select 1 from pg_attribute a where a.attrelid = c.oid \
             and a.attname = 'app_id' and not a.attisdropped) \
         from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition \
             and c.relname <> '_sqlx_migrations' \
         order by 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut app_owned = BTreeSet::new();
    for row in &tables {
        let (name, has_app_id): (String, bool) = (row.get(0), row.get(1));
        if REFERENCE_TABLES.contains(&name.as_str()) {
            continue;
        }
        assert!(
            has_app_id,
            "table {name} is neither a reference table nor app-owned (no app_id): \
             add app_id, or declare it a reference table here and in docs/SCALING.md"
        );
        app_owned.insert(name);
    }
    assert_eq!(
        app_owned,
        APP_OWNED.iter().map(|t| t.to_string()).collect(),
        "the app-owned tables (update APP_OWNED and docs/SCALING.md)"
    );

    // Every primary key, unique or exclusion constraint of an app-owned table.
    let constraints = sqlx::query(
        "select c.relname::text, con.conname::text, pg_get_constraintdef(con.oid), \
             exists (select 1 from pg_attribute a where a.attrelid = con.conrelid \
                 and a.attname = 'app_id' and a.attnum = any (con.conkey)) \
         from pg_constraint con join pg_class c on c.oid = con.conrelid \
         where con.contype in ('p', 'u', 'x') and c.relname = any ($1) and not c.relispartition",
    )
    .bind(&APP_OWNED[..])
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut with_primary_key = BTreeSet::new();
    for row in &constraints {
        let (table, name, def, has_app_id): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert!(has_app_id, "{table}.{name} ({def}) does not include app_id");
        if def.starts_with("PRIMARY KEY") {
            with_primary_key.insert(table);
        }
    }
    assert_eq!(
        with_primary_key, app_owned,
        "every app-owned table has a primary key"
    );

    // Every unique index, also one made without a constraint, and also on each
    // partition (they inherit the parent's keys; checked, not assumed).
    let indexes = sqlx::query(
        "select c.relname::text, pg_get_indexdef(x.indexrelid), \
             exists (select 1 from pg_attribute a where a.attrelid = x.indrelid \
                 and a.attname = 'app_id' and a.attnum = any (x.indkey::int2[])) \
         from pg_index x join pg_class c on c.oid = x.indrelid \
         where x.indisunique and (c.relname = any ($1) or c.oid in ( \
             select i.inhrelid from pg_inherits i join pg_class p on p.oid = i.inhparent \
             where p.relname = any ($1)))",
    )
    .bind(&APP_OWNED[..])
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut partitions_checked = 0;
    for row in &indexes {
        let (table, def, has_app_id): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(has_app_id, "unique index on {table} without app_id: {def}");
        if table.starts_with("postback_events_") {
            partitions_checked += 1;
        }
    }
    assert!(
        partitions_checked > 0,
        "the partitions of postback_events were checked"
    );

    // Foreign keys between app-owned tables: both sides include app_id (Citus
    // needs that for co-located tables). References to apps are to a reference table.
    let foreign = sqlx::query(
        "select c.relname::text, con.conname::text, pg_get_constraintdef(con.oid), \
             exists (select 1 from pg_attribute a where a.attrelid = con.conrelid \
                 and a.attname = 'app_id' and a.attnum = any (con.conkey)) \
             and exists (select 1 from pg_attribute a where a.attrelid = con.confrelid \
                 and a.attname = 'app_id' and a.attnum = any (con.confkey)) \
         from pg_constraint con join pg_class c on c.oid = con.conrelid \
         join pg_class r on r.oid = con.confrelid \
         where con.contype = 'f' and c.relname = any ($1) and r.relname = any ($1)",
    )
    .bind(&APP_OWNED[..])
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for row in &foreign {
        let (table, name, def, both): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert!(
            both,
            "{table}.{name} ({def}) links app-owned rows without app_id on both sides"
        );
    }
}

/// The PostgreSQL store's SQL, and the shared builders it uses (`store/mod.rs`).
fn postgres_store_sources() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
    let mut files: Vec<_> = std::fs::read_dir(root.join("postgres"))
        .expect("src/store/postgres")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push(root.join("mod.rs"));
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.display().to_string(), text)
        })
        .collect()
}

#[test]
fn no_postgres_store_query_joins_rows_of_two_apps() {
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    let mut statements = 0;
    for (file, text) in postgres_store_sources() {
        for sql in rust_string_literals(&text) {
            let tokens = tokenize(&sql);
            let named: Vec<&str> = APP_OWNED
                .iter()
                .copied()
                .filter(|t| tokens.iter().any(|k| k.is_word(t)))
                .collect();
            if named.is_empty() {
                continue;
            }
            statements += 1;
            seen.extend(named);
            for v in cross_app_joins(&sql) {
                violations.push(format!("{file}: {v}\n    in: {}", sql.trim()));
            }
        }
    }
    // The scan sees the store's SQL: every app-owned table is named somewhere.
    assert_eq!(
        seen,
        APP_OWNED.into_iter().collect(),
        "app-owned tables named in the store's SQL ({statements} statements)"
    );
    assert!(statements >= 12, "only {statements} statements found");
    assert!(
        violations.is_empty(),
        "statements that join app-owned rows without tying them to one app:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_join_scan_tells_joins_within_an_app_from_joins_across_apps() {
    let bad = [
        "select * from attributions a join user_identities u on u.attribution_id = a.id",
        "select * from attributions a, user_identities u where u.attribution_id = a.id",
        "update user_identities u set attribution_id = o.owner from owner o \
         where u.attribution_id = o.lost",
        "delete from dedupe_keys d using gone g where d.dedupe_key = g.dedupe_key",
        "select * from unnest($1::uuid[]) as t(id) cross join lateral \
         (select * from dedupe_keys d where d.event_id = t.id) e",
        "select * from attributions where app_id = $1 and id in \
         (select attribution_id from user_identities where value = $2)",
    ];
    for sql in bad {
        assert!(!cross_app_joins(sql).is_empty(), "not flagged: {sql}");
    }
    let good = [
        "select * from attributions a join user_identities u \
         on u.app_id = a.app_id and u.attribution_id = a.id",
        "select * from attributions a join user_identities u using (app_id, kind)",
        "update user_identities u set attribution_id = o.owner from owner o \
         where u.app_id = o.app_id and u.attribution_id = o.lost",
        "select * from attributions where app_id = $1 and id = \
         (select attribution_id from user_identities where app_id = $1 and value = $2)",
        // One table, every app: a fleet-wide job, not a join.
        "delete from dedupe_keys where received_at < $1",
        // Reference tables join anything.
        "select k.key_hash from api_keys k join apps a on a.id = k.app_id",
        // Batch input only, written into app-owned tables.
        "insert into dedupe_keys (app_id, dedupe_key) select app_id, dedupe_key from t \
         on conflict do nothing",
    ];
    for sql in good {
        assert_eq!(cross_app_joins(sql), Vec::<String>::new(), "{sql}");
    }
}

/// The static scan: in a statement that reads from more than one relation (tables,
/// subqueries, CTEs, `unnest` input), every app-owned table it reads, updates or
/// deletes from (after `from`, `join`, `using`, `update`, `delete from`, or in a
/// comma-separated FROM list) must be tied to one app by an equality on its own
/// `app_id`, found after it within its parentheses: `alias.app_id = …` or
/// `… = alias.app_id` (a join condition with another relation's app_id or a bound
/// app), `join … using (…, app_id, …)`, or a bare `app_id = …` in the WHERE of a
/// (sub)query that reads only that table. Rows inserted are not reads: each carries
/// its own app_id, and the catalog test checks the keys they conflict on.
///
/// It is a scan, not a parser: it sees the literals as written in the source (a
/// query assembled from fragments is seen as its fragments), and it does not follow
/// a CTE to the tables it came from; such a CTE still has to be joined to an
/// app-owned table on app_id wherever it is, since that table is read in the join.
fn cross_app_joins(sql: &str) -> Vec<String> {
    let tokens = tokenize(sql);
    let depth = depths(&tokens);
    let scope_end = |at: usize| {
        let d = depth[at];
        (at..tokens.len())
            .find(|&i| depth[i] < d)
            .unwrap_or(tokens.len())
    };
    // Where a relation is introduced, and the token that names it.
    let mut introduced: Vec<usize> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let intro = match t {
            Token::Word(w) if w == "from" || w == "join" => true,
            // `delete … using rel`, not `join … using (columns)`.
            Token::Word(w) if w == "using" => !next.is_some_and(|n| n.is_punct('(')),
            // `update rel set`, not `do update set`.
            Token::Word(w) if w == "update" => !next.is_some_and(|n| n.is_word("set")),
            // The next item of a FROM list.
            Token::Punct(',') => in_from_list(&tokens, &depth, i),
            _ => false,
        };
        if intro && next.is_some() {
            introduced.push(i + 1);
        }
    }
    if introduced.len() < 2 {
        return Vec::new();
    }
    let mut violations = Vec::new();
    for &at in &introduced {
        let Some(Token::Word(table)) = tokens.get(at) else {
            continue;
        };
        if !APP_OWNED.contains(&table.as_str()) {
            continue;
        }
        let alias = alias_of(&tokens, at);
        let end = scope_end(at);
        let is_eq = |i: usize| {
            tokens.get(i + 1).is_some_and(|t| t.is_punct('='))
                || (i > 0 && tokens[i - 1].is_punct('='))
        };
        // alias.app_id = … / … = alias.app_id
        let qualified = (at..end.saturating_sub(2)).any(|i| {
            tokens[i].is_word(&alias)
                && tokens[i + 1].is_punct('.')
                && tokens[i + 2].is_word("app_id")
                && (is_eq(i + 2) || (i > 0 && tokens[i - 1].is_punct('=')))
        });
        // … join … using (…, app_id, …), on either side of the join
        let using_app_id = (at..end).any(|i| {
            depth[i] == depth[at]
                && tokens[i].is_word("using")
                && tokens.get(i + 1).is_some_and(|t| t.is_punct('('))
                && (i + 2..scope_end(i + 2)).any(|j| tokens[j].is_word("app_id"))
        });
        // A bare app_id = … in the WHERE of a (sub)query that reads only this table.
        let alone = introduced
            .iter()
            .filter(|&&j| depth[j] == depth[at] && j >= scope_start(&depth, at) && j < end)
            .count()
            == 1;
        let bare = alone && {
            let mut in_where = false;
            (at..end).any(|i| {
                if depth[i] != depth[at] {
                    return false;
                }
                if tokens[i].is_word("where") || tokens[i].is_word("on") {
                    in_where = true;
                }
                in_where
                    && tokens[i].is_word("app_id")
                    && !(i > 0 && tokens[i - 1].is_punct('.'))
                    && is_eq(i)
            })
        };
        if !(qualified || using_app_id || bare) {
            violations.push(format!(
                "{table} (as {alias}) is joined without an equality on {alias}.app_id"
            ));
        }
    }
    violations
}

/// The alias of the relation named at `at` (the table's name if none).
fn alias_of(tokens: &[Token], at: usize) -> String {
    const NOT_ALIASES: [&str; 24] = [
        "where",
        "join",
        "on",
        "inner",
        "left",
        "right",
        "full",
        "cross",
        "natural",
        "group",
        "order",
        "limit",
        "offset",
        "using",
        "set",
        "returning",
        "union",
        "for",
        "with",
        "having",
        "window",
        "lateral",
        "values",
        "select",
    ];
    let table = match &tokens[at] {
        Token::Word(w) => w.clone(),
        _ => String::new(),
    };
    let mut i = at + 1;
    if tokens.get(i).is_some_and(|t| t.is_word("as")) {
        i += 1;
    }
    match tokens.get(i) {
        Some(Token::Word(w)) if !NOT_ALIASES.contains(&w.as_str()) => w.clone(),
        _ => table,
    }
}

/// Index of the first token inside the parentheses that hold `at` (0 at top level).
fn scope_start(depth: &[usize], at: usize) -> usize {
    (0..at)
        .rev()
        .find(|&i| depth[i] < depth[at])
        .map_or(0, |i| i + 1)
}

/// Whether the comma at `i` separates items of a FROM list (the last keyword before
/// it at its depth is `from`).
fn in_from_list(tokens: &[Token], depth: &[usize], i: usize) -> bool {
    const CLAUSES: [&str; 9] = [
        "from",
        "select",
        "where",
        "group",
        "order",
        "returning",
        "set",
        "values",
        "on",
    ];
    (0..i)
        .rev()
        .take_while(|&j| depth[j] >= depth[i])
        .filter(|&j| depth[j] == depth[i])
        .find_map(|j| match &tokens[j] {
            Token::Word(w) if CLAUSES.contains(&w.as_str()) => Some(w == "from"),
            _ => None,
        })
        .unwrap_or(false)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Punct(char),
}

impl Token {
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Token::Word(x) if x == w)
    }
    fn is_punct(&self, c: char) -> bool {
        matches!(self, Token::Punct(x) if *x == c)
    }
}

/// SQL words (lower case) and punctuation; string constants and comments dropped.
fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            // 'text', with '' inside
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token::Word(word.to_lowercase()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// Parenthesis depth of every token; a parenthesis itself is outside what it holds.
fn depths(tokens: &[Token]) -> Vec<usize> {
    let mut depth = 0usize;
    tokens
        .iter()
        .map(|t| {
            if t.is_punct('(') {
                depth += 1;
                depth - 1
            } else if t.is_punct(')') {
                depth = depth.saturating_sub(1);
                depth
            } else {
                depth
            }
        })
        .collect()
}

/// The string literals of a Rust source file, unescaped (a `\` line continuation
/// becomes a space); comments, char literals and lifetimes are skipped.
fn rust_string_literals(src: &str) -> Vec<String> {
    let b: Vec<char> = src.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            '\'' => {
                if b.get(i + 1) == Some(&'\\') {
                    // '\n', '\'', '\u{…}'
                    i += 2;
                    while i < b.len() && b[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if b.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1; // a lifetime
                }
            }
            'r' if (i == 0 || !ident(b[i - 1]))
                && matches!(b.get(i + 1), Some('"') | Some('#')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                let start = j;
                while j < b.len()
                    && !(b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')))
                {
                    j += 1;
                }
                out.push(b[start..j.min(b.len())].iter().collect());
                i = j + 1 + hashes;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                        match b.get(i) {
                            Some('\n') => {
                                while i + 1 < b.len() && b[i + 1].is_whitespace() {
                                    i += 1;
                                }
                                s.push(' ');
                            }
                            Some('n') | Some('t') | Some('r') => s.push(' '),
                            Some(&c) => s.push(c),
                            None => {}
                        }
                    } else {
                        s.push(b[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push(s);
            }
            _ => i += 1,
        }
    }
    out
}
