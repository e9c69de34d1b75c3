//! Property tests for the mapper: the shipped mappings round-trip whatever else a record
//! carries, and `normalize` never panics on any property map.

use std::path::Path;
use std::sync::OnceLock;

use crmsync::mapping::{Mapper, ObjectMapping, StageOutcome, load_dir};
use crmsync::record::{Properties, SourceRecord};
use proptest::prelude::*;
use serde_json::Value;

fn mapper() -> &'static Mapper {
    static MAPPER: OnceLock<Mapper> = OnceLock::new();
    MAPPER.get_or_init(|| {
        load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
            .expect("shipped mappings compile")
    })
}

/// Every property any stage rule of any object reads.
fn rule_properties() -> Vec<String> {
    let mut names = Vec::new();
    for object in mapper().objects() {
        for rule in &object.rules {
            names.extend(rule.properties().map(str::to_string));
        }
        for field in &object.fields {
            if let crmsync::mapping::FieldSource::Property(name) = &field.source {
                names.push(name.clone());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn record_of(object: &ObjectMapping, properties: Properties) -> SourceRecord {
    SourceRecord {
        system: object.system,
        object: object.object.clone(),
        id: "prop".to_string(),
        modified_at: jiff::Timestamp::UNIX_EPOCH,
        properties,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".*".prop_map(Value::String),
        "[ a-zA-Z@._-]{0,30}".prop_map(Value::String),
        prop::sample::select(vec![
            "marketingqualifiedlead",
            "UNQUALIFIED",
            "IN_PROGRESS",
            "Closed Won",
            "true",
            "false",
            "2024-05-01T12:34:56.000+0000",
            "1714566896789",
            "Ann@Example.com",
            " ",
            "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn property_map(names: Vec<String>) -> impl Strategy<Value = Properties> {
    let name = prop_oneof![prop::sample::select(names), "[A-Za-z_]{1,12}"];
    prop::collection::btree_map(name, json_value(), 0..12).prop_map(|map| map.into_iter().collect())
}

fn object_index() -> impl Strategy<Value = usize> {
    0..mapper().objects().len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn normalize_never_panics(index in object_index(), properties in property_map(rule_properties())) {
        let object = mapper().objects()[index];
        let record = record_of(object, properties);
        let normalized = mapper().normalize(&record).expect("object is mapped");
        prop_assert_eq!(normalized.field_values.len(), object.fields.len());
    }

    /// What `check` promises: a written stage reads back as itself whatever else the record
    /// holds, including any value of the properties the rules read but the write leaves alone
    /// (only `requires` of the reverse mapping is assumed).
    #[test]
    fn written_stages_round_trip_whatever_else_the_record_holds(
        index in object_index(),
        write_index in any::<prop::sample::Index>(),
        noise in property_map(rule_properties()),
    ) {
        let object = mapper().objects()[index];
        prop_assume!(!object.reverse.stages.is_empty());
        let write = &object.reverse.stages[write_index.index(object.reverse.stages.len())];
        let mut properties = noise;
        for condition in &object.reverse.requires {
            properties.insert(condition.property.clone(), Value::String(condition.values[0].clone()));
        }
        for (property, value) in &write.properties {
            properties.insert(property.clone(), Value::String(value.clone()));
        }
        let record = record_of(object, properties);
        match mapper().normalize(&record).expect("mapped").stage {
            StageOutcome::Matched { stage, .. } => prop_assert_eq!(stage, write.stage),
            other => prop_assert!(false, "{} {}: {:?}", object.system, object.object, other),
        }
    }
}
