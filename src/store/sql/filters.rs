//! Query filters: WHERE clauses assembled at run time for the list queries, with numbered
//! parameters bound in order (`Conditions`, `Param`).

use sqlx::Any;

use crate::store::{AuditFilter, ListFilter};

/// A bound parameter of a query assembled at run time.
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// WHERE clauses with numbered parameters, for the list queries.
#[derive(Default)]
pub(super) struct Conditions {
    sql: Vec<String>,
    params: Vec<Param>,
}

impl Conditions {
    /// Adds a condition; `?` in `clause` stands for the parameter.
    pub(super) fn push(&mut self, clause: &str, param: Param) {
        self.params.push(param);
        self.sql.push(clause.replace('?', &format!("${}", self.params.len())));
    }
    pub(super) fn push_bare(&mut self, clause: &str) {
        self.sql.push(clause.to_owned());
    }
    pub(super) fn next_index(&self) -> usize {
        self.params.len() + 1
    }
    pub(super) fn where_clause(&self) -> String {
        self.sql.join(" AND ")
    }
    pub(super) fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        for p in &self.params {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Paths strictly inside `namespace`: a range scan, so `_` and `%` in names mean nothing.
/// ('0' is the character after '/'.)
pub(super) fn push_namespace(c: &mut Conditions, column: &str, namespace: &str) {
    let ns = namespace.trim_end_matches('/');
    c.push(&format!("{column} > ?"), Param::Text(format!("{ns}/")));
    c.push(&format!("{column} < ?"), Param::Text(format!("{ns}0")));
}

pub(super) fn secret_conditions(tenant: &str, f: &ListFilter) -> Conditions {
    let mut c = Conditions::default();
    c.push("tenant_id = ?", Param::Text(tenant.to_owned()));
    c.push_bare("deleted_at IS NULL");
    if let Some(ns) = &f.namespace {
        push_namespace(&mut c, "path", ns);
    }
    if let Some(status) = &f.status {
        c.push("status = ?", Param::Text(status.clone()));
    }
    if let Some(r) = &f.external_ref {
        c.push("external_ref = ?", Param::Text(r.clone()));
    }
    if let Some((key, value)) = &f.tag {
        let n = c.next_index();
        c.params.push(Param::Text(key.clone()));
        let mut clause = format!("EXISTS (SELECT 1 FROM secret_tags t WHERE t.secret_id = secrets.id AND t.key = ${n}");
        if let Some(v) = value {
            c.params.push(Param::Text(v.clone()));
            clause.push_str(&format!(" AND t.value = ${}", n + 1));
        }
        clause.push(')');
        c.push_bare(&clause);
    }
    c
}

/// The audit records of `tenant` that `f` selects.
pub(super) fn audit_conditions(tenant: &str, f: &AuditFilter) -> Conditions {
    let mut c = Conditions::default();
    c.push("tenant_id = ?", Param::Text(tenant.to_owned()));
    if let Some(seq) = f.before_seq {
        c.push("seq < ?", Param::Int(seq));
    }
    if let Some(actor) = &f.actor {
        c.push("actor = ?", Param::Text(actor.clone()));
    }
    if let Some(kind) = &f.kind {
        c.push("kind = ?", Param::Text(kind.clone()));
    }
    if !f.kinds.is_empty() {
        let first = c.next_index();
        let marks: Vec<String> = (first..first + f.kinds.len()).map(|n| format!("${n}")).collect();
        c.params.extend(f.kinds.iter().map(|k| Param::Text(k.clone())));
        c.push_bare(&format!("kind IN ({})", marks.join(", ")));
    }
    if let Some(since) = f.since_ms {
        c.push("timestamp_ms >= ?", Param::Int(since));
    }
    if let Some(until) = f.until_ms {
        c.push("timestamp_ms < ?", Param::Int(until));
    }
    if let Some(ns) = &f.namespace {
        push_namespace(&mut c, "path", ns);
    }
    if let Some(path) = &f.path {
        c.push("path = ?", Param::Text(path.clone()));
    }
    c
}
