use super::*;

/// The catalog's schema check, run by CI: every file parses with no unknown field, names
/// itself, and is consistent (declared placeholders, anchored patterns their examples match,
/// https endpoints, derivable route hosts, valid header names, parseable lifetimes).
#[test]
fn every_catalog_file_passes_its_checks() {
    let problems = check_all();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(entries().count() >= 40, "{} entries", entries().count());
}

#[test]
fn the_issue_s_integrations_are_all_there() {
    for name in [
        "slack",
        "salesforce",
        "hubspot",
        "notion",
        "zoho_crm",
        "zoho_books",
        "zoho_mail",
        "zoho_projects",
        "zoho_workdrive",
        "microsoft_teams",
        "microsoft_outlook",
        "microsoft_onedrive",
        "discord",
        "google_chat",
        "google_gmail",
        "google_drive",
        "google_calendar",
        "google_ads",
        "google_analytics",
        "zoom",
        "dropbox",
        "box",
        "asana",
        "jira",
        "confluence",
        "linear",
        "trello",
        "monday",
        "clickup",
        "airtable",
        "quickbooks",
        "xero",
        "stripe",
        "mailchimp",
        "meta_ads",
        "linkedin",
        "shopify",
        "zendesk",
        "intercom",
        "freshdesk",
        "github",
        "gitlab",
        "figma",
        "calendly",
        "spotify",
        "typeform",
    ] {
        assert!(get(name).is_some(), "{name} missing");
    }
}

#[test]
fn google_entries_ask_for_offline_access_and_consent() {
    for p in entries().filter(|p| p.name.starts_with("google_")) {
        assert_eq!(
            p.authorize_params.get("access_type").map(String::as_str),
            Some("offline"),
            "{}",
            p.name
        );
        assert_eq!(
            p.authorize_params.get("prompt").map(String::as_str),
            Some("consent"),
            "{}",
            p.name
        );
    }
}

#[test]
fn references_skip_env_references() {
    assert_eq!(
        references("https://{shop}.x/{a_b}?k=${ENV}"),
        vec!["shop", "a_b"]
    );
    assert_eq!(references("{}{ x}{"), Vec::<&str>::new());
    let filled = fill("https://{shop}.myshopify.com", &|n| {
        (n == "shop").then(|| "acme".into())
    });
    assert_eq!(filled.as_deref(), Ok("https://acme.myshopify.com"));
    assert_eq!(
        fill("{a}{b}", &|n| (n == "a").then(String::new)),
        Err("b".into())
    );
}

#[test]
fn route_hosts_come_from_placeholders() {
    let sf = get("salesforce").unwrap();
    assert!(sf
        .route_hosts()
        .unwrap()
        .contains(&"*.salesforce.com".to_string()));
    assert_eq!(
        get("shopify").unwrap().route_hosts().unwrap(),
        vec!["*.myshopify.com"]
    );
    let zm = get("zoho_mail").unwrap().route_hosts().unwrap();
    assert!(
        zm.contains(&"mail.zoho.eu".to_string())
            && zm.contains(&"www.mail.zohocloud.ca".to_string()),
        "{zm:?}"
    );
    assert_eq!(
        get("notion").unwrap().route_hosts().unwrap(),
        vec!["api.notion.com"]
    );
}

#[test]
fn inconsistent_entries_are_refused_with_the_field() {
    let mut p = get("shopify").unwrap().clone();
    p.placeholders.shift_remove("shop");
    let problems = p.check(true);
    assert!(
        problems
            .iter()
            .any(|(k, m)| k == "placeholders" && m.contains("{shop}")),
        "{problems:?}"
    );

    let mut p = get("zoho_crm").unwrap().clone();
    p.placeholders.get_mut("accounts_server").unwrap().pattern = "https://.*".into();
    let problems = p.check(true);
    assert!(
        problems
            .iter()
            .any(|(k, _)| k == "placeholders.accounts_server.pattern"),
        "{problems:?}"
    );

    let mut p = get("hubspot").unwrap().clone();
    p.token_url = Some("http://api.hubapi.com/oauth/v1/token".into());
    assert!(p.check(true).iter().any(|(k, _)| k == "token_url"));

    let mut p = get("quickbooks").unwrap().clone();
    p.callback_params.clear();
    assert!(p
        .check(true)
        .iter()
        .any(|(k, _)| k == "placeholders.realm_id.source"));

    let mut p = get("notion").unwrap().clone();
    p.extra_headers.insert("Host".into(), "x".into());
    assert!(p.check(true).iter().any(|(k, _)| k == "extra_headers.Host"));
}
