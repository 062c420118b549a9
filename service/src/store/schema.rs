//! The schema, one source for both backends: each migration is written once, with the few
//! column types the backends spell differently in braces (`{serial}`, `{int}`, `{real}`), and
//! rendered for a backend when it is applied.

/// One version of the schema.
pub struct Migration {
    /// Its version; applied in order, each once.
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// Its SQL, with the dialect's words in braces.
    pub template: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    template: include_str!("../../migrations/0001_init.sql"),
}];

/// The latest version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// How a backend spells the types the schema uses.
pub struct Dialect {
    /// A 64-bit integer key that numbers rows in insertion order.
    pub serial: &'static str,
    /// A 64-bit integer.
    pub int: &'static str,
    /// A double-precision float.
    pub real: &'static str,
}

/// SQLite (its `INTEGER` is 64 bits; `INTEGER PRIMARY KEY` is the row id).
pub const SQLITE: Dialect = Dialect {
    serial: "INTEGER",
    int: "INTEGER",
    real: "REAL",
};

/// PostgreSQL.
pub const POSTGRES: Dialect = Dialect {
    serial: "BIGSERIAL",
    int: "BIGINT",
    real: "DOUBLE PRECISION",
};

/// A migration's SQL for `dialect`.
pub fn render(template: &str, dialect: &Dialect) -> String {
    template
        .replace("{serial}", dialect.serial)
        .replace("{int}", dialect.int)
        .replace("{real}", dialect.real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_renders_completely_for_both_backends() {
        for dialect in [&SQLITE, &POSTGRES] {
            for migration in MIGRATIONS {
                let sql = render(migration.template, dialect);
                assert!(
                    !sql.contains('{') && !sql.contains('}'),
                    "{}",
                    migration.name
                );
            }
        }
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    }
}
