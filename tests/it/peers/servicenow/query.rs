//! ServiceNow's encoded queries (`sysparm_query`), as far as the fake understands them:
//! `field=value`, `!=`, `IN`, `STARTSWITH`, `LIKE`, `ISEMPTY`, `ISNOTEMPTY`, joined by `^` (and)
//! and `^OR` (or with the condition before), with `ORDERBY` / `ORDERBYDESC`; fields may be
//! dot-walked (`assigned_to.user_name`). As ServiceNow does by default, a condition on a field
//! the table lacks, or one not understood (`NQ`, other operators), is left out.

use super::table::{Db, Row};

/// One condition of an encoded query.
#[derive(Debug)]
struct Cond {
    field: String,
    op: &'static str,
    value: String,
}

/// An encoded query: an AND of OR groups, and an order.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    groups: Vec<Vec<Cond>>,
    /// The field to sort by, and whether descending.
    pub order: Option<(String, bool)>,
}

const OPS: [&str; 7] = [
    "ISNOTEMPTY",
    "ISEMPTY",
    "!=",
    "STARTSWITH",
    "LIKE",
    "IN",
    "=",
];

impl Encoded {
    pub fn parse(q: &str) -> Self {
        let mut e = Encoded::default();
        for part in q.split('^').filter(|p| !p.is_empty()) {
            if let Some(f) = part.strip_prefix("ORDERBYDESC") {
                e.order = Some((f.to_string(), true));
                continue;
            }
            if let Some(f) = part.strip_prefix("ORDERBY") {
                e.order = Some((f.to_string(), false));
                continue;
            }
            let (or, cond) = match part.strip_prefix("OR") {
                Some(rest) if !e.groups.is_empty() => (true, rest),
                _ => (false, part),
            };
            let field_len = cond
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.".contains(c)))
                .unwrap_or(cond.len());
            let (field, rest) = cond.split_at(field_len);
            // Anything not understood (NQ, other operators) is left out, as an invalid
            // condition is.
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                continue;
            };
            let c = Cond {
                field: field.to_string(),
                op,
                value: rest[op.len()..].to_string(),
            };
            match e.groups.last_mut() {
                Some(g) if or => g.push(c),
                _ => e.groups.push(vec![c]),
            }
        }
        e
    }

    pub fn matches(&self, db: &Db, row: &Row) -> bool {
        self.groups.iter().all(|g| {
            // A condition on a field the table lacks is left out, as ServiceNow does.
            let valid: Vec<(&Cond, String)> = g
                .iter()
                .filter_map(|c| db.value(row, &c.field).map(|v| (c, v)))
                .collect();
            valid.is_empty()
                || valid.iter().any(|(c, v)| match c.op {
                    "ISNOTEMPTY" => !v.is_empty(),
                    "ISEMPTY" => v.is_empty(),
                    "!=" => *v != c.value,
                    "STARTSWITH" => v.starts_with(&c.value),
                    "LIKE" => v.to_lowercase().contains(&c.value.to_lowercase()),
                    "IN" => c.value.split(',').any(|x| x == v),
                    _ => *v == c.value,
                })
        })
    }
}
