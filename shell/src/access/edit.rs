//! `bastionctl access add-user`: the one edit of the access file made by a
//! command (for `provisioning/add-user.sh` and the demo), keeping every
//! comment and the layout of the rest of the file (`toml_edit`).

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

/// Why the file could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the access file is not valid TOML: {0}")]
    Syntax(String),
    #[error("`{key}` in the access file is not an array of tables ([[{key}]])")]
    NotTables { key: &'static str },
}

/// `text` with user `name` holding exactly `keys`, enabled, and in
/// `groups` too (each defined, without levels, when the file has no such
/// group).
pub fn add_user(
    text: &str,
    name: &str,
    keys: &[String],
    groups: &[String],
) -> Result<String, EditError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Syntax(e.to_string()))?;
    {
        let defined = tables(&mut doc, "groups")?;
        for group in groups {
            if !defined
                .iter()
                .any(|t| t.get("name").and_then(Item::as_str) == Some(group))
            {
                let mut table = Table::new();
                table.insert("name", value(group.as_str()));
                table.insert("levels", value(Array::new()));
                defined.push(table);
            }
        }
    }
    let users = tables(&mut doc, "users")?;
    let existing = users
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name));
    let mut key_array = Array::new();
    for key in keys {
        key_array.push(key.as_str());
    }
    match existing {
        Some(user) => {
            user.insert("keys", value(key_array));
            let mut all: Vec<String> = user
                .get("groups")
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for group in groups {
                if !all.contains(group) {
                    all.push(group.clone());
                }
            }
            if !all.is_empty() {
                user.insert(
                    "groups",
                    value(all.iter().map(String::as_str).collect::<Array>()),
                );
            }
            user.remove("disabled");
        }
        None => {
            let mut user = Table::new();
            user.insert("name", value(name));
            user.insert("keys", value(key_array));
            if !groups.is_empty() {
                user.insert(
                    "groups",
                    value(groups.iter().map(String::as_str).collect::<Array>()),
                );
            }
            users.push(user);
        }
    }
    Ok(doc.to_string())
}

fn tables<'d>(
    doc: &'d mut DocumentMut,
    key: &'static str,
) -> Result<&'d mut ArrayOfTables, EditError> {
    doc.entry(key)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or(EditError::NotTables { key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_is_appended_and_comments_stay() {
        let text = "# who may log in\n[aws]\naccount_id = \"123456789012\" # ours\n";
        let out = add_user(
            text,
            "alice",
            &["ssh-ed25519 AAAA a".into()],
            &["sre".into()],
        )
        .unwrap();
        assert!(out.starts_with(text), "{out}");
        let doc: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(doc["users"][0]["name"].as_str(), Some("alice"));
        assert_eq!(doc["users"][0]["groups"][0].as_str(), Some("sre"));
        assert_eq!(doc["groups"][0]["name"].as_str(), Some("sre"));
    }

    #[test]
    fn an_existing_user_gets_the_new_keys_and_is_enabled() {
        let text = "[[users]]\nname = \"bob\"\nkeys = [\"old\"]\ngroups = [\"a\"]\ndisabled = true\nlevels = [] # keep\n";
        let out = add_user(text, "bob", &["new".into()], &["b".into()]).unwrap();
        let doc: toml::Value = toml::from_str(&out).unwrap();
        let bob = &doc["users"][0];
        assert_eq!(bob["keys"].as_array().unwrap().len(), 1);
        assert_eq!(bob["keys"][0].as_str(), Some("new"));
        assert_eq!(bob["groups"].as_array().unwrap().len(), 2);
        assert!(bob.get("disabled").is_none());
        assert!(out.contains("# keep"), "{out}");
    }
}
