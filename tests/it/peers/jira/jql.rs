//! The part of JQL the fake Jira understands: `project`, `key`/`issuekey`, `status`,
//! `statusCategory` and `assignee` with `=`, `!=`, `in (...)`, `not in (...)`,
//! `is [not] EMPTY`, joined by `AND`, and `ORDER BY key` or `created` `[ASC|DESC]`. Errors are
//! worded as Jira words them ("Error in the JQL Query: ...", "Field 'x' does not exist ...").

use super::Issue;

/// The part of JQL the fake understands.
#[derive(Debug, Default)]
pub(super) struct Jql {
    clauses: Vec<Clause>,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Project,
    Key,
    Status,
    StatusCategory,
    Assignee,
}

#[derive(Debug)]
struct Clause {
    field: Field,
    /// The values it must (or, negated, must not) be one of; `None`: EMPTY.
    values: Option<Vec<String>>,
    negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Eq,
    Ne,
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '(' | ')' | ',' | '=' => {
                it.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    ',' => Tok::Comma,
                    _ => Tok::Eq,
                });
            }
            '!' => {
                it.next();
                if it.next() != Some('=') {
                    return Err("Error in the JQL Query: expecting '=' after '!'.".into());
                }
                out.push(Tok::Ne);
            }
            '"' | '\'' => {
                it.next();
                let mut v = String::new();
                loop {
                    match it.next() {
                        Some(q) if q == c => break,
                        Some('\\') => v.extend(it.next()),
                        Some(x) => v.push(x),
                        None => {
                            return Err("Error in the JQL Query: a string is not closed.".into());
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = it.peek() {
                    if x.is_whitespace() || "(),=!\"'".contains(x) {
                        break;
                    }
                    w.push(x);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

fn is_word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

impl Jql {
    pub fn parse(jql: &str) -> Result<Self, String> {
        let toks = lex(jql)?;
        let mut q = Jql::default();
        let mut p = 0;
        let bad = |what: &str| format!("Error in the JQL Query: {what}.");
        while p < toks.len() {
            if is_word(toks.get(p), "order") {
                if !is_word(toks.get(p + 1), "by") {
                    return Err(bad("expecting 'BY' after 'ORDER'"));
                }
                match toks.get(p + 2) {
                    Some(Tok::Word(f))
                        if ["key", "issuekey", "created", "id"]
                            .contains(&f.to_ascii_lowercase().as_str()) => {}
                    Some(Tok::Word(f)) => {
                        return Err(format!("Not able to sort using field '{f}'."));
                    }
                    _ => return Err(bad("expecting a field name after 'ORDER BY'")),
                }
                p += 3;
                if is_word(toks.get(p), "desc") {
                    q.descending = true;
                    p += 1;
                } else if is_word(toks.get(p), "asc") {
                    p += 1;
                }
                if p < toks.len() {
                    return Err(bad("expecting the end of the query after 'ORDER BY'"));
                }
                break;
            }
            let field = match toks.get(p) {
                Some(Tok::Word(f)) | Some(Tok::Str(f)) => match f.to_ascii_lowercase().as_str() {
                    "project" => Field::Project,
                    "key" | "issuekey" | "issue" => Field::Key,
                    "status" => Field::Status,
                    "statuscategory" => Field::StatusCategory,
                    "assignee" => Field::Assignee,
                    _ => {
                        return Err(format!(
                            "Field '{f}' does not exist or you do not have permission to view it."
                        ));
                    }
                },
                _ => return Err(bad("expecting a field name")),
            };
            p += 1;
            let (values, negated) = match toks.get(p) {
                Some(Tok::Eq) | Some(Tok::Ne) => {
                    let negated = toks[p] == Tok::Ne;
                    p += 1;
                    match toks.get(p) {
                        Some(Tok::Word(v)) if v.eq_ignore_ascii_case("empty") => (None, negated),
                        Some(Tok::Word(v)) | Some(Tok::Str(v)) => (Some(vec![v.clone()]), negated),
                        _ => return Err(bad("expecting a value after the operator")),
                    }
                }
                t if is_word(t, "in") || is_word(t, "not") => {
                    let negated = is_word(t, "not");
                    if negated {
                        p += 1;
                        if !is_word(toks.get(p), "in") {
                            return Err(bad("expecting 'IN' after 'NOT'"));
                        }
                    }
                    p += 1;
                    if toks.get(p) != Some(&Tok::Open) {
                        return Err(bad("expecting '(' after 'IN'"));
                    }
                    let mut vs = Vec::new();
                    loop {
                        p += 1;
                        match toks.get(p) {
                            Some(Tok::Word(v)) | Some(Tok::Str(v)) => vs.push(v.clone()),
                            _ => return Err(bad("expecting a value in the list")),
                        }
                        p += 1;
                        match toks.get(p) {
                            Some(Tok::Comma) => {}
                            Some(Tok::Close) => break,
                            _ => return Err(bad("expecting ',' or ')' in the list")),
                        }
                    }
                    (Some(vs), negated)
                }
                t if is_word(t, "is") => {
                    p += 1;
                    let negated = is_word(toks.get(p), "not");
                    if negated {
                        p += 1;
                    }
                    if !(is_word(toks.get(p), "empty") || is_word(toks.get(p), "null")) {
                        return Err(bad("expecting 'EMPTY' after 'IS'"));
                    }
                    (None, negated)
                }
                _ => return Err(bad("expecting an operator after the field name")),
            };
            p += 1;
            q.clauses.push(Clause {
                field,
                values,
                negated,
            });
            if is_word(toks.get(p), "and") {
                p += 1;
                if p == toks.len() {
                    return Err(bad("expecting a clause after 'AND'"));
                }
            } else if p < toks.len() && !is_word(toks.get(p), "order") {
                return Err(bad("expecting 'AND' or 'ORDER BY'"));
            }
        }
        Ok(q)
    }

    pub fn matches(&self, i: &Issue) -> bool {
        self.clauses.iter().all(|c| {
            let have: Option<Vec<String>> = match c.field {
                Field::Project => Some(vec![
                    i.key.split('-').next().unwrap_or_default().to_string(),
                ]),
                Field::Key => Some(vec![i.key.clone(), i.id.to_string()]),
                Field::Status => Some(vec![i.category.facts().3.to_string()]),
                Field::StatusCategory => {
                    let (id, name, ..) = i.category.facts();
                    Some(vec![
                        i.category.key().to_string(),
                        name.to_string(),
                        id.to_string(),
                    ])
                }
                Field::Assignee => i.assignee.clone().map(|a| vec![a]),
            };
            match (&c.values, &have) {
                (None, have) => have.is_none() != c.negated,
                // As in Jira, `!=` and `not in` never match an empty field.
                (Some(_), None) => false,
                (Some(want), Some(have)) => {
                    let hit = want
                        .iter()
                        .any(|w| have.iter().any(|h| h.eq_ignore_ascii_case(w)));
                    hit != c.negated
                }
            }
        })
    }
}
