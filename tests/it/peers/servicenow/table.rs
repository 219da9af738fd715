//! The fake ServiceNow's tables: task records (`incident`, `sc_task`, `problem`,
//! `change_request`) and `sys_user`, their values as the Table API gives them (strings;
//! references as sys_ids, dot-walked through `assigned_to`), display values, and a record
//! rendered for `sysparm_fields`, `sysparm_display_value` and `sysparm_exclude_reference_link`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::WorkNote;

/// The tables of task records the fake holds, and `sys_user`.
pub(super) const TASK_TABLES: [&str; 4] = ["incident", "sc_task", "problem", "change_request"];
const USERS: &str = "sys_user";
/// Columns of a task record.
const TASK_COLUMNS: [&str; 10] = [
    "sys_id",
    "number",
    "state",
    "short_description",
    "assigned_to",
    "active",
    "sys_class_name",
    "sys_updated_on",
    "work_notes",
    "comments",
];
/// Columns of a user.
const USER_COLUMNS: [&str; 4] = ["sys_id", "user_name", "name", "sys_updated_on"];

#[derive(Clone, Debug)]
pub(super) struct Row {
    pub table: String,
    pub fields: BTreeMap<String, String>,
}

impl Row {
    pub(super) fn get(&self, f: &str) -> &str {
        self.fields.get(f).map(String::as_str).unwrap_or_default()
    }
}

pub(super) struct Db {
    pub base: String,
    /// The largest page a list query answers (`None`: as `sysparm_limit` asks).
    pub page_cap: Option<usize>,
    pub rows: Vec<Row>,
    pub journal: Vec<WorkNote>,
    pub next: u128,
}

fn columns(table: &str) -> &'static [&'static str] {
    if table == USERS {
        &USER_COLUMNS
    } else {
        &TASK_COLUMNS
    }
}

fn reference(table: &str, column: &str) -> Option<&'static str> {
    (table != USERS && column == "assigned_to").then_some(USERS)
}

pub(super) fn known_table(table: &str) -> bool {
    table == USERS || TASK_TABLES.contains(&table)
}

/// `2026-05-01 10:00:00`, as the Table API writes date-times (UTC).
pub(super) fn glide_time() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .expect("a timestamp")
}

fn state_label(state: &str) -> &str {
    match state {
        "1" => "New",
        "2" => "In Progress",
        "3" => "On Hold",
        "6" => "Resolved",
        "7" => "Closed",
        "8" => "Canceled",
        s => s,
    }
}

impl Db {
    pub(super) fn new_sys_id(&mut self) -> String {
        self.next += 1;
        format!(
            "{:032x}",
            0x46d4_4a23_a9fe_1981_0012_d100_cca8_0666u128 + self.next
        )
    }

    pub(super) fn row(&self, table: &str, sys_id: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.get("sys_id") == sys_id && r.table == table)
    }

    pub(super) fn by_number_mut(&mut self, number: &str) -> &mut Row {
        self.rows
            .iter_mut()
            .find(|r| r.table != USERS && r.get("number") == number)
            .unwrap_or_else(|| panic!("the fake ServiceNow has no record {number}"))
    }

    /// The sys_id of user `user_name`, created when missing.
    pub(super) fn user(&mut self, user_name: &str) -> String {
        if let Some(u) = self
            .rows
            .iter()
            .find(|r| r.table == USERS && r.get("user_name") == user_name)
        {
            return u.get("sys_id").to_string();
        }
        let sys_id = self.new_sys_id();
        let fields = [
            ("sys_id", sys_id.clone()),
            ("user_name", user_name.to_string()),
            ("name", format!("{user_name} (test user)")),
            ("sys_updated_on", glide_time()),
        ];
        self.rows.push(Row {
            table: USERS.into(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
        sys_id
    }

    /// The value of `field` (dot-walked through references) on `row`; `None`: the table has no
    /// such field.
    pub(super) fn value(&self, row: &Row, field: &str) -> Option<String> {
        let (first, rest) = match field.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (field, None),
        };
        if !columns(&row.table).contains(&first) {
            return None;
        }
        let v = row.get(first).to_string();
        match rest {
            None => Some(v),
            Some(rest) => {
                let target = reference(&row.table, first)?;
                if !columns(target).contains(&rest.split('.').next().unwrap_or_default()) {
                    return None;
                }
                match self.row(target, &v) {
                    Some(r) => self.value(r, rest),
                    None => Some(String::new()),
                }
            }
        }
    }

    fn display(&self, row: &Row, field: &str, value: &str) -> String {
        let last = field.rsplit('.').next().unwrap_or(field);
        if last == "state" {
            return state_label(value).to_string();
        }
        let table = match field.rsplit_once('.') {
            None => row.table.as_str(),
            Some(_) => USERS,
        };
        match reference(table, last) {
            Some(target) => self
                .row(target, value)
                .map(|r| r.get("name").to_string())
                .unwrap_or_default(),
            None => value.to_string(),
        }
    }

    /// A record as the Table API renders it.
    pub(super) fn render(&self, row: &Row, want: &Render) -> Value {
        let mut out = Map::new();
        let all: Vec<String> = columns(&row.table).iter().map(|c| c.to_string()).collect();
        for f in want.fields.as_ref().unwrap_or(&all) {
            let Some(v) = self.value(row, f) else {
                continue;
            };
            let target = (!f.contains('.'))
                .then(|| reference(&row.table, f))
                .flatten();
            let link = match target {
                Some(t) if !v.is_empty() && !want.exclude_links => {
                    Some(format!("{}/api/now/table/{t}/{v}", self.base))
                }
                _ => None,
            };
            let shown = match want.display.as_str() {
                "true" => json!(self.display(row, f, &v)),
                "all" => {
                    let mut o = json!({ "display_value": self.display(row, f, &v), "value": v });
                    if let Some(l) = link {
                        o["link"] = json!(l);
                    }
                    o
                }
                _ => match link {
                    Some(l) => json!({ "link": l, "value": v }),
                    None => json!(v),
                },
            };
            out.insert(f.clone(), shown);
        }
        Value::Object(out)
    }
}

/// How records are rendered (`sysparm_fields`, `sysparm_display_value`,
/// `sysparm_exclude_reference_link`).
pub(super) struct Render {
    fields: Option<Vec<String>>,
    display: String,
    exclude_links: bool,
}

impl Render {
    pub(super) fn from(q: &HashMap<String, String>) -> Self {
        Self {
            fields: q
                .get("sysparm_fields")
                .filter(|f| !f.trim().is_empty())
                .map(|f| f.split(',').map(|s| s.trim().to_string()).collect()),
            display: q
                .get("sysparm_display_value")
                .cloned()
                .unwrap_or_else(|| "false".into())
                .to_ascii_lowercase(),
            exclude_links: q
                .get("sysparm_exclude_reference_link")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}
