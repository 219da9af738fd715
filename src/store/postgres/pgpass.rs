//! The password for a PostgreSQL connection from a password file, as libpq reads it:
//! `PGPASSFILE`, else `~/.pgpass`; lines `hostname:port:database:username:password`, `*`
//! matching anything, `\:` and `\\` escaped, `#` comments. A file others can read is ignored
//! (libpq ignores it too), with a warning.

use std::path::PathBuf;

/// The password for `config`'s first host, port, database and user, if a line matches.
pub(super) fn lookup(config: &tokio_postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the password file is readable by others; it is ignored (chmod 600 it)"
            );
            return None;
        }
    }
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(_)) => "localhost".into(),
        None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    find(&text, [&host, &port, &dbname, &user])
}

/// The password of the first line of `text` whose four fields match `want`.
fn find(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(fields)
        .find(|f| {
            f.len() == 5
                && f[..4]
                    .iter()
                    .zip(want)
                    .all(|(have, want)| have == "*" || have == want)
        })
        .map(|mut f| f.swap_remove(4))
}

/// The `:`-separated fields of one line, unescaped.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.last_mut()?.push(chars.next()?),
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut()?.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn the_first_matching_line_gives_the_password_with_wildcards_and_escapes() {
        let text = "# jitgate\n\
                    db.example:5432:other:jitgate:nope\n\
                    db.example:*:jitgate:jitgate:s\\:cr\\\\et:more\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            find(text, ["db.example", "5433", "jitgate", "jitgate"]).as_deref(),
            Some("s:cr\\et:more")
        );
        assert_eq!(
            find(text, ["elsewhere", "5432", "x", "y"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(find("a:b:c:d\n", ["a", "b", "c", "d"]), None);
    }
}
