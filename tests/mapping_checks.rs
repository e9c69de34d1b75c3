//! Cross-rule checks on small mappings compiled from text: what is and is not shadowed.

use crmsync::diagnostics::SourceFile;
use crmsync::mapping::{MappingSources, compile};
use crmsync::record::System;

const VOCABULARY: &str = r#"
[[stage]]
id = "mql"
label = "MQL"
rank = 1
category = "marketing"

[[stage]]
id = "sal"
label = "SAL"
rank = 2
category = "sales"
"#;

fn problems(salesforce: &str) -> Vec<String> {
    let sources = MappingSources {
        vocabulary: SourceFile::new("vocabulary.toml", VOCABULARY.to_string()),
        systems: vec![(
            System::Salesforce,
            SourceFile::new("salesforce.toml", salesforce.to_string()),
        )],
    };
    compile(&sources)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

const HEAD: &str =
    "[objects.Lead]\nkind = \"person\"\n[objects.Lead.fields]\nemail = { from = \"Email\" }\n";

#[test]
fn a_case_insensitive_entry_is_not_shadowed_by_a_case_sensitive_one() {
    let mapping = format!(
        "{HEAD}[[objects.Lead.stage_rules]]\nname = \"exact\"\nproperty = \"Status\"\nmap = {{ working = \"sal\" }}\n\
         [[objects.Lead.stage_rules]]\nname = \"any case\"\nproperty = \"Status\"\nignore_case = true\nmap = {{ working = \"sal\", open = \"mql\" }}\n"
    );
    assert_eq!(problems(&mapping), Vec::<String>::new());
}

#[test]
fn a_case_insensitive_map_shadows_later_entries_of_any_case() {
    let mapping = format!(
        "{HEAD}[[objects.Lead.stage_rules]]\nname = \"any case\"\nproperty = \"Status\"\nignore_case = true\nmap = {{ working = \"sal\" }}\n\
         [[objects.Lead.stage_rules]]\nname = \"exact\"\nproperty = \"Status\"\nmap = {{ Working = \"sal\", Open = \"mql\" }}\n"
    );
    assert_eq!(
        problems(&mapping),
        [
            "salesforce.toml:13:9: value \"Working\" here is never used: rule \"any case\" (line 5) decides it first — remove the entry, or move this rule above the other one"
        ]
    );
}

#[test]
fn a_guarded_rule_does_not_shadow_an_unguarded_one() {
    let mapping = format!(
        "{HEAD}[[objects.Lead.stage_rules]]\nname = \"guarded\"\nwhen = {{ IsConverted = false }}\nproperty = \"Status\"\nmap = {{ Working = \"sal\" }}\n\
         [[objects.Lead.stage_rules]]\nname = \"all\"\nproperty = \"Status\"\nmap = {{ Working = \"sal\" }}\n"
    );
    assert_eq!(problems(&mapping), Vec::<String>::new());
}

#[test]
fn stage_dates_name_known_stages_and_a_property_each() {
    let good = format!("{HEAD}[objects.Lead.stage_dates]\nsal = \"ConvertedDate\"\n");
    assert_eq!(problems(&good), Vec::<String>::new());
    let bad = format!("{HEAD}[objects.Lead.stage_dates]\nsql2 = \"ConvertedDate\"\nmql = 3\n");
    let found = problems(&bad);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("salesforce.toml:6:1: unknown stage \"sql2\""),
        "{found:#?}"
    );
    assert!(
        found[1].contains("salesforce.toml:7:") && found[1].contains("must be a string, found"),
        "{found:#?}"
    );
}
