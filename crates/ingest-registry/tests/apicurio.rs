//! The client against the real Apicurio Registry of the test stack (scripts/services.sh start
//! registry; SCHEMA_REGISTRY_URL from scripts/env.sh). Skipped, with a line saying so, when
//! SCHEMA_REGISTRY_URL is not set or does not answer.

use std::time::{SystemTime, UNIX_EPOCH};

use ingest_registry::{Client, Reference, RegistryConfig, RegistryError, SchemaType};

fn registry() -> Option<Client> {
    let url = std::env::var("SCHEMA_REGISTRY_URL").ok()?;
    let c = Client::new(RegistryConfig::new(&url).unwrap()).unwrap();
    match c.schema_by_id(u32::MAX) {
        Err(RegistryError::NotFound(_)) => Some(c),
        other => {
            eprintln!("skipped: {url} does not answer like a registry ({other:?})");
            None
        }
    }
}

#[test]
fn avro_and_protobuf_with_references_round_trip() {
    let Some(c) = registry() else { return };
    let tag = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let avro = format!(r#"{{"type":"record","name":"R{tag}","fields":[{{"name":"a","type":"long"}}]}}"#);
    let id = c.register(&format!("t{tag}-value"), &avro, SchemaType::Avro, &[]).unwrap();
    let s = c.schema_by_id(id).unwrap();
    assert_eq!((s.schema_type, s.references.len()), (SchemaType::Avro, 0));
    assert!(s.schema.contains(&format!("R{tag}")), "{}", s.schema);
    // Registering the same schema again gives the same id.
    assert_eq!(c.register(&format!("t{tag}-value"), &avro, SchemaType::Avro, &[]).unwrap(), id);

    let dep_subject = format!("dep{tag}.proto");
    let dep = format!("syntax = \"proto3\";\npackage d{tag};\nmessage D {{ int32 x = 1; }}\n");
    c.register(&dep_subject, &dep, SchemaType::Protobuf, &[]).unwrap();
    let main = format!("syntax = \"proto3\";\nimport \"dep.proto\";\nmessage M {{ d{tag}.D d = 1; }}\n");
    let refs = [Reference { name: "dep.proto".into(), subject: dep_subject.clone(), version: 1 }];
    let id = c.register(&format!("m{tag}-value"), &main, SchemaType::Protobuf, &refs).unwrap();
    let before = c.requests();
    let s = c.schema_by_id(id).unwrap();
    assert_eq!(s.schema_type, SchemaType::Protobuf);
    assert_eq!(s.references.len(), 1);
    assert_eq!((s.references[0].name.as_str(), s.references[0].subject.as_str()), ("dep.proto", dep_subject.as_str()));
    assert!(s.references[0].schema.contains("message D"), "{}", s.references[0].schema);
    assert_eq!(c.requests(), before + 2); // the id, then the reference
    c.schema_by_id(id).unwrap();
    assert_eq!(c.requests(), before + 2); // cached
}
