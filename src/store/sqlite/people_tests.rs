//! People's ticket-system identities in SQLite.

use super::*;

fn person(name: &str, ids: &[&str]) -> Person {
    Person {
        name: name.parse().unwrap(),
        issuer: "https://idp.example".into(),
        subject: format!("sub-{name}"),
        groups: vec![],
        external_ids: ids.iter().map(|s| s.to_string()).collect(),
        first_sign_in: 1,
        last_sign_in: 1,
    }
}

#[tokio::test]
async fn a_ticket_system_identity_belongs_to_the_last_person_who_claimed_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("j.db")).unwrap();
    let who = |id: &'static str| {
        let s = s.clone();
        async move { s.person_with_id(id).await.unwrap().map(|n| n.to_string()) }
    };
    s.put_person(&person("olga", &["jira:712020:olga", "rt:olga"]))
        .await
        .unwrap();
    assert_eq!(who("jira:712020:olga").await.as_deref(), Some("olga"));
    assert_eq!(who("rt:olga").await.as_deref(), Some("olga"));
    assert_eq!(who("jira:712020:pia").await, None);
    // Another person's sign-in claims the Jira account: it is theirs now.
    s.put_person(&person("pia", &["jira:712020:olga"]))
        .await
        .unwrap();
    assert_eq!(who("jira:712020:olga").await.as_deref(), Some("pia"));
    // Olga signs in without claims: she keeps none.
    s.put_person(&person("olga", &[])).await.unwrap();
    assert_eq!(who("rt:olga").await, None);
    assert_eq!(who("jira:712020:olga").await.as_deref(), Some("pia"));
}
