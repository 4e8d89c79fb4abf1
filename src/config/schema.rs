//! The config file's JSON Schema (`credproxy schema`), also committed as
//! `credentials.schema.json` for editors; a test keeps the two the same.

/// Where editors find the schema, relative to the shipped `credentials.yaml`.
pub const EDITOR_COMMENT: &str = "# yaml-language-server: $schema=./credentials.schema.json";

/// The schema as pretty JSON with a trailing newline, titled for people, not by the Rust type.
pub fn json() -> Result<String, serde_json::Error> {
    let mut schema = schemars::schema_for!(super::raw::RawConfig);
    schema.insert("title".into(), "credproxy configuration".into());
    schema.insert(
        "description".into(),
        "credentials.yaml: the proxy, its clients, credentials and routes. See README.md and \
         `credproxy schema`."
            .into(),
    );
    Ok(serde_json::to_string_pretty(&schema)? + "\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_schema_is_current() {
        let committed = include_str!("../../credentials.schema.json");
        let now = super::json().unwrap();
        assert!(
            committed == now,
            "credentials.schema.json is stale: run `cargo run -q -- schema > credentials.schema.json`"
        );
        assert!(now.contains("\"title\": \"credproxy configuration\""));
    }

    #[test]
    fn the_shipped_config_names_the_schema_for_editors() {
        let shipped = include_str!("../../credentials.yaml");
        assert_eq!(shipped.lines().next(), Some(super::EDITOR_COMMENT));
    }
}
