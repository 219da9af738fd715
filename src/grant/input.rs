//! What every grant operation checks in the text people type: reasons and comments (length,
//! control characters) and names (users, tasks, targets, tickets).

use super::{GrantError, MAX_TEXT};

/// `s`, trimmed, if it is acceptable as `what`; `required` refuses an empty one.
pub(super) fn check_text(what: &str, s: &str, required: bool) -> Result<String, GrantError> {
    let t = s.trim();
    if required && t.is_empty() {
        return Err(GrantError::Invalid(format!(
            "{what} is empty; say what you will do and why"
        )));
    }
    if t.chars().count() > MAX_TEXT {
        return Err(GrantError::Invalid(format!(
            "{what} is longer than {MAX_TEXT} characters; shorten it"
        )));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(GrantError::Invalid(format!(
            "{what} contains control characters; use plain text"
        )));
    }
    Ok(t.to_string())
}

/// `s` parsed as the name `what`; the parse error names what was wrong.
pub(super) fn parse_name<T: std::str::FromStr<Err = String>>(
    what: &str,
    s: &str,
) -> Result<T, GrantError> {
    s.parse()
        .map_err(|e: String| GrantError::Invalid(format!("{what}: {e}")))
}
