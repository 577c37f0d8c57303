//! JSON Schemas of the domain types the wire types carry, for the OpenAPI document
//! (`server::openapi`). Written by hand because their serde forms are hand-written too: a
//! value is a string (never shown in examples), a path is a validated string, a policy is
//! the parsed policy as the server serializes it.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::domain::path::MAX_PATH_CHARS;
use crate::domain::policy::Policy;
use crate::domain::{Role, SecretPath, SecretValue, Tier};

impl JsonSchema for SecretValue {
    fn schema_name() -> Cow<'static, str> {
        "SecretValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A secret value: sent only where the endpoint says, never logged or audited."
        })
    }
}

impl JsonSchema for SecretPath {
    fn schema_name() -> Cow<'static, str> {
        "SecretPath".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Slash-separated segments of letters, digits, `-`, `_` and `.`: `production/openai/api-key`.",
            "minLength": 1,
            "maxLength": MAX_PATH_CHARS
        })
    }
}

impl JsonSchema for Tier {
    fn schema_name() -> Cow<'static, str> {
        "Tier".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": ["standard", "sensitive"] })
    }
}

impl JsonSchema for Role {
    fn schema_name() -> Cow<'static, str> {
        "Role".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": [Role::Admin.as_str(), Role::Deployer.as_str(), Role::Reader.as_str()] })
    }
}

impl JsonSchema for Policy {
    fn schema_name() -> Cow<'static, str> {
        "Policy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "The calling agent's parsed policy: egress, grants, inject rules, routes, `[[oauth2]]` and `[[sign]]` rules."
        })
    }
}

/// A value to write: a string, or a JSON object of fields (a structured value).
pub(super) struct TextOrObject;

impl JsonSchema for TextOrObject {
    fn schema_name() -> Cow<'static, str> {
        "TextOrObject".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "object"],
            "description": "A secret value: a string, or a JSON object of fields kept as its canonical JSON text."
        })
    }
}
