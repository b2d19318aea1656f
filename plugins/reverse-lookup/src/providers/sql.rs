//! SQL providers (RL5): PostgreSQL, MySQL/MariaDB and SQLite through sqlx,
//! MS SQL Server through tiberius. The number is always a bound parameter.

use callhost_lookup_core::{sql_with_binds_with, BindStyle, RuleSet};
use callhost_numbers::ExternalNumber;
use callhost_plugin_sdk::{config_error, ConfigError};
use sqlx::{Column as _, Row as _};
use tokio::sync::OnceCell;

use super::{mask, Settings, Trace};
use crate::{
    config::{Driver, FieldName, RuleConfig, TelFormat},
    extract::Found,
};

pub struct Sql {
    driver: Driver,
    url: String,
    query: String,
    tel: TelFormat,
    timeout: std::time::Duration,
    rules: Vec<(RuleConfig, RuleSet)>,
    extras: Vec<(String, String)>,
    /// Connected on first use (building a pool needs the module's runtime).
    pool: OnceCell<Pool>,
}

enum Pool {
    Postgres(sqlx::PgPool),
    Mysql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

/// One result row: column names and values as text.
type Row = Vec<(String, Option<String>)>;

impl Sql {
    pub fn build(s: &Settings<'_>) -> Result<Sql, ConfigError> {
        let driver = s.config.driver.ok_or_else(|| {
            config_error(
                (s.at)("driver"),
                "missing: postgres, mysql, sqlite or mssql",
            )
        })?;
        let url = s.template("url", &s.config.url)?;
        let query = s.required("query", &s.config.query)?;
        let style = bind_style(driver);
        // Refuse bad templates now, not on the first call.
        let probe = ExternalNumber {
            international: "0049301234567".into(),
            e164: "+49301234567".into(),
            national: "0301234567".into(),
            country: Some("DE".into()),
        };
        sql_with_binds_with(&query, &probe, style, s.tel.core())
            .map_err(|e| config_error((s.at)("query"), e.to_string()))?;
        Ok(Sql {
            driver,
            url,
            query,
            tel: s.tel,
            timeout: s.timeout,
            rules: s.rules.clone(),
            extras: s.extras(),
            pool: OnceCell::new(),
        })
    }

    /// The connection URL with secrets filled in (`{password}` and the like).
    fn connection_url(&self) -> Result<String, String> {
        let extras = super::borrowed(&self.extras);
        // Connection strings use only secrets, never the number.
        let probe = ExternalNumber {
            international: String::new(),
            e164: String::new(),
            national: String::new(),
            country: None,
        };
        // URLs carry secrets percent-encoded; an ADO string (MS SQL) as is.
        let escape = match self.driver {
            Driver::Mssql => callhost_lookup_core::no_escape,
            _ => callhost_lookup_core::percent_encode,
        };
        callhost_lookup_core::expand(&self.url, &probe, self.tel.core(), &extras, escape)
            .map_err(|e| e.to_string())
    }

    async fn pool(&self) -> Result<&Pool, String> {
        self.pool
            .get_or_try_init(|| async {
                let url = self.connection_url()?;
                let fail =
                    |e: sqlx::Error| format!("connecting: {}", mask(&e.to_string(), &self.extras));
                Ok(match self.driver {
                    Driver::Postgres => Pool::Postgres(
                        sqlx::postgres::PgPoolOptions::new()
                            .max_connections(4)
                            .acquire_timeout(self.timeout)
                            .connect_lazy(&url)
                            .map_err(fail)?,
                    ),
                    Driver::Mysql => Pool::Mysql(
                        sqlx::mysql::MySqlPoolOptions::new()
                            .max_connections(4)
                            .acquire_timeout(self.timeout)
                            .connect_lazy(&url)
                            .map_err(fail)?,
                    ),
                    Driver::Sqlite => Pool::Sqlite(
                        sqlx::sqlite::SqlitePoolOptions::new()
                            .max_connections(2)
                            .acquire_timeout(self.timeout)
                            .connect_lazy(&url)
                            .map_err(fail)?,
                    ),
                    Driver::Mssql => unreachable!("MS SQL connects per query"),
                })
            })
            .await
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let (sql, binds) = sql_with_binds_with(
            &self.query,
            number,
            bind_style(self.driver),
            self.tel.core(),
        )
        .map_err(|e| e.to_string())?;
        trace.note(format!("SQL {sql} with {binds:?}"));
        let row = match self.driver {
            Driver::Mssql => self.query_mssql(&sql, &binds).await?,
            _ => self.query_sqlx(&sql, &binds).await?,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        trace.note(format!("row {row:?}"));
        Ok(Some(self.read_row(&row)))
    }

    async fn query_sqlx(&self, sql: &str, binds: &[String]) -> Result<Option<Row>, String> {
        let fail = |e: sqlx::Error| mask(&e.to_string(), &self.extras);
        macro_rules! run {
            ($pool:expr) => {{
                let mut query = sqlx::query(sql);
                for value in binds {
                    query = query.bind(value.as_str());
                }
                query.fetch_optional($pool).await.map_err(fail)?.map(|row| {
                    row.columns()
                        .iter()
                        .map(|c| (c.name().to_string(), text_of(&row, c.ordinal())))
                        .collect::<Row>()
                })
            }};
        }
        Ok(match self.pool().await? {
            Pool::Postgres(pool) => run!(pool),
            Pool::Mysql(pool) => run!(pool),
            Pool::Sqlite(pool) => run!(pool),
        })
    }

    async fn query_mssql(&self, sql: &str, binds: &[String]) -> Result<Option<Row>, String> {
        use tokio_util::compat::TokioAsyncWriteCompatExt;
        let url = self.connection_url()?;
        let fail = |e: &dyn std::fmt::Display| mask(&e.to_string(), &self.extras);
        let config = tiberius::Config::from_ado_string(&url).map_err(|e| fail(&e))?;
        let tcp = tokio::net::TcpStream::connect(config.get_addr())
            .await
            .map_err(|e| fail(&e))?;
        tcp.set_nodelay(true).map_err(|e| fail(&e))?;
        let mut client = tiberius::Client::connect(config, tcp.compat_write())
            .await
            .map_err(|e| fail(&e))?;
        let params: Vec<&dyn tiberius::ToSql> =
            binds.iter().map(|b| b as &dyn tiberius::ToSql).collect();
        let row = client
            .query(sql, &params)
            .await
            .map_err(|e| fail(&e))?
            .into_row()
            .await
            .map_err(|e| fail(&e))?;
        Ok(row.map(|row| {
            let names: Vec<String> = row.columns().iter().map(|c| c.name().to_string()).collect();
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    let text = row
                        .try_get::<&str, _>(i)
                        .ok()
                        .flatten()
                        .map(str::to_string)
                        .or_else(|| {
                            row.try_get::<i64, _>(i)
                                .ok()
                                .flatten()
                                .map(|v| v.to_string())
                        })
                        .or_else(|| {
                            row.try_get::<i32, _>(i)
                                .ok()
                                .flatten()
                                .map(|v| v.to_string())
                        });
                    (name, text)
                })
                .collect()
        }))
    }

    /// Rules read their column (RL7: "the first parser reads the first
    /// column"); without rules, columns named like a field fill it, else the
    /// first column is the name and the second the company (the original).
    fn read_row(&self, row: &Row) -> Found {
        let mut found = Found::default();
        if !self.rules.is_empty() {
            for (i, (rule, set)) in self.rules.iter().enumerate() {
                let column = rule.column.unwrap_or(i);
                if let Some((_, Some(text))) = row.get(column) {
                    found.fill_from(Found::from(set.apply(text)));
                }
            }
            return found;
        }
        let mut named = false;
        for (name, value) in row {
            let Some(value) = value.clone() else { continue };
            let field = match name.to_ascii_lowercase().replace(['_', ' '], "").as_str() {
                "firstname" | "givenname" | "vorname" => FieldName::FirstName,
                "lastname" | "surname" | "sn" | "nachname" => FieldName::LastName,
                "company" | "organization" | "organisation" | "firma" | "firmenname" => {
                    FieldName::Company
                }
                "name" | "display" | "displayname" | "fullname" | "anrufername" => {
                    FieldName::Display
                }
                "spam" | "spamscore" | "score" => FieldName::Spam,
                _ => continue,
            };
            named = true;
            found.set(field, value);
        }
        if !named {
            if let Some((_, Some(name))) = row.first() {
                found.set(FieldName::Display, name.clone());
            }
            if let Some((_, Some(company))) = row.get(1) {
                found.set(FieldName::Company, company.clone());
            }
        }
        found
    }
}

fn bind_style(driver: Driver) -> BindStyle {
    match driver {
        Driver::Postgres => BindStyle::Dollar,
        Driver::Mysql | Driver::Sqlite => BindStyle::QuestionMark,
        Driver::Mssql => BindStyle::AtP,
    }
}

/// A column's value as text, whatever its SQL type.
fn text_of<R>(row: &R, i: usize) -> Option<String>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    if let Ok(text) = row.try_get::<Option<String>, _>(i) {
        return text;
    }
    if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
        return Some(n.to_string());
    }
    if let Ok(Some(n)) = row.try_get::<Option<i32>, _>(i) {
        return Some(n.to_string());
    }
    row.try_get::<Option<f64>, _>(i)
        .ok()
        .flatten()
        .map(|n| n.to_string())
}
