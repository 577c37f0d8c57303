//! External references: where a secret that Airlock does not hold lives, parsed and
//! checked before anything is asked of a provider.
//!
//! - `vault+kv2://MOUNT/PATH[#field]`: OpenBao or Vault, KV version 2. MOUNT is one segment,
//!   PATH one or more, each `[A-Za-z0-9._-]`, never `.` or `..`. Without `#field` the secret
//!   must hold exactly one field.
//! - `aws-sm://NAME[#json-field]`: AWS Secrets Manager. NAME is a secret name
//!   (`[A-Za-z0-9/_+=.@-]`, at most 512 characters) or a full `arn:aws…:secretsmanager:` ARN.
//!   With `#field` the secret string is a JSON object and the value is that member.
//! - `gcp-sm://projects/P/secrets/S[#field]`: GCP Secret Manager (P a project id or number,
//!   S a secret id).
//!
//! Version pointers (`provider_version_ref`) are checked against the reference's provider by
//! [`VersionRef::parse`]. Error messages quote the part at fault only after checking it holds
//! no control character, so a hostile reference cannot forge a log line.

use std::fmt;

/// The longest reference accepted, in bytes.
pub const MAX_REF_LEN: usize = 1024;
const MAX_FIELD_LEN: usize = 256;
const MAX_AWS_NAME_LEN: usize = 2048;

/// The kinds of external store Airlock reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenBao or HashiCorp Vault, KV version 2.
    Vault,
    AwsSecretsManager,
    GcpSecretManager,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] =
        [ProviderKind::Vault, ProviderKind::AwsSecretsManager, ProviderKind::GcpSecretManager];

    /// The name used in the API and in provider configs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Vault => "vault",
            ProviderKind::AwsSecretsManager => "aws_secrets_manager",
            ProviderKind::GcpSecretManager => "gcp_secret_manager",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The reference scheme of this provider.
    pub fn scheme(self) -> &'static str {
        match self {
            ProviderKind::Vault => "vault+kv2",
            ProviderKind::AwsSecretsManager => "aws-sm",
            ProviderKind::GcpSecretManager => "gcp-sm",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a reference or a version pointer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, RefError> {
    Err(RefError(msg.into()))
}

/// A parsed, validated external reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExternalRef {
    VaultKv2 { mount: String, path: String, field: Option<String> },
    AwsSm { name: String, field: Option<String> },
    GcpSm { project: String, secret: String, field: Option<String> },
}

impl ExternalRef {
    pub fn parse(s: &str) -> Result<ExternalRef, RefError> {
        if s.is_empty() {
            return err("external_ref is empty");
        }
        if s.len() > MAX_REF_LEN {
            return err(format!("external_ref is {} bytes; at most {MAX_REF_LEN}", s.len()));
        }
        if let Some(at) = s.find(|c: char| c.is_control()) {
            return err(format!("external_ref has a control character at byte {at}"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return err("external_ref must start with vault+kv2://, aws-sm:// or gcp-sm://");
        };
        let (body, field) = match rest.split_once('#') {
            Some((body, field)) => (body, Some(check_field(field)?)),
            None => (rest, None),
        };
        match scheme {
            "vault+kv2" => parse_vault(body, field),
            "aws-sm" => parse_aws(body, field),
            "gcp-sm" => parse_gcp(body, field),
            other => {
                err(format!("unknown external_ref scheme '{}'; use vault+kv2://, aws-sm:// or gcp-sm://", shown(other)))
            }
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            ExternalRef::VaultKv2 { .. } => ProviderKind::Vault,
            ExternalRef::AwsSm { .. } => ProviderKind::AwsSecretsManager,
            ExternalRef::GcpSm { .. } => ProviderKind::GcpSecretManager,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ExternalRef::VaultKv2 { field, .. }
            | ExternalRef::AwsSm { field, .. }
            | ExternalRef::GcpSm { field, .. } => field.as_deref(),
        }
    }
}

impl fmt::Display for ExternalRef {
    /// The canonical text, which parses back to the same reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalRef::VaultKv2 { mount, path, .. } => write!(f, "vault+kv2://{mount}/{path}")?,
            ExternalRef::AwsSm { name, .. } => write!(f, "aws-sm://{name}")?,
            ExternalRef::GcpSm { project, secret, .. } => write!(f, "gcp-sm://projects/{project}/secrets/{secret}")?,
        }
        match self.field() {
            Some(field) => write!(f, "#{field}"),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for ExternalRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        ExternalRef::parse(s)
    }
}

/// `s` as it may appear in a message: already free of control characters (checked first),
/// and cut short.
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn check_field(field: &str) -> Result<String, RefError> {
    if field.is_empty() {
        return err("the #field after the reference is empty; drop the '#' or name a field");
    }
    if field.len() > MAX_FIELD_LEN {
        return err(format!("the #field is {} bytes; at most {MAX_FIELD_LEN}", field.len()));
    }
    if field.contains('#') {
        return err("a reference has at most one '#'");
    }
    Ok(field.to_owned())
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// One path segment: non-empty, `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_segment(seg: &str, what: &str) -> Result<(), RefError> {
    if seg.is_empty() {
        return err(format!("{what} has an empty segment (a leading, trailing or doubled '/')"));
    }
    if seg == "." || seg == ".." {
        return err(format!("{what} may not have a '.' or '..' segment"));
    }
    if let Some(c) = seg.chars().find(|&c| !is_segment_char(c)) {
        return err(format!("{what} has '{c}' in segment '{}'; segments are [A-Za-z0-9._-]", shown(seg)));
    }
    Ok(())
}

fn parse_vault(body: &str, field: Option<String>) -> Result<ExternalRef, RefError> {
    let Some((mount, path)) = body.split_once('/') else {
        return err("vault+kv2:// needs MOUNT/PATH, e.g. vault+kv2://secret/app/api#token");
    };
    check_segment(mount, "the KV mount")?;
    if path.is_empty() {
        return err("vault+kv2:// needs a secret path after the mount");
    }
    for seg in path.split('/') {
        check_segment(seg, "the secret path")?;
    }
    Ok(ExternalRef::VaultKv2 { mount: mount.to_owned(), path: path.to_owned(), field })
}

fn parse_aws(name: &str, field: Option<String>) -> Result<ExternalRef, RefError> {
    if name.is_empty() {
        return err("aws-sm:// needs a secret name or ARN");
    }
    if name.len() > MAX_AWS_NAME_LEN {
        return err(format!("the AWS secret name is {} bytes; at most {MAX_AWS_NAME_LEN}", name.len()));
    }
    let arn = name.starts_with("arn:");
    if arn {
        let parts: Vec<&str> = name.splitn(7, ':').collect();
        let ok = parts.len() == 7
            && parts[1].starts_with("aws")
            && parts[2] == "secretsmanager"
            && parts[5] == "secret"
            && !parts[6].is_empty();
        if !ok {
            return err("an ARN in aws-sm:// must be arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME");
        }
    } else if name.len() > 512 {
        return err(format!("the AWS secret name is {} bytes; at most 512", name.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c) || (arn && c == ':');
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return err(format!("the AWS secret name has '{c}'; names are [A-Za-z0-9/_+=.@-]"));
    }
    if name.split('/').any(|seg| seg == "." || seg == "..") {
        return err("the AWS secret name may not have a '.' or '..' segment");
    }
    Ok(ExternalRef::AwsSm { name: name.to_owned(), field })
}

fn parse_gcp(body: &str, field: Option<String>) -> Result<ExternalRef, RefError> {
    let parts: Vec<&str> = body.split('/').collect();
    let [projects, project, secrets, secret] = parts[..] else {
        return err("gcp-sm:// needs projects/PROJECT/secrets/SECRET");
    };
    if projects != "projects" || secrets != "secrets" {
        return err("gcp-sm:// needs projects/PROJECT/secrets/SECRET");
    }
    let project_ok = if project.bytes().all(|b| b.is_ascii_digit()) {
        (1..=30).contains(&project.len())
    } else {
        (6..=30).contains(&project.len())
            && project.starts_with(|c: char| c.is_ascii_lowercase())
            && !project.ends_with('-')
            && project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !project_ok {
        return err("the GCP project must be a project id ([a-z][a-z0-9-]{4,28}[a-z0-9]) or number");
    }
    let secret_ok =
        (1..=255).contains(&secret.len()) && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !secret_ok {
        return err("the GCP secret id must be 1-255 characters of [A-Za-z0-9_-]");
    }
    Ok(ExternalRef::GcpSm { project: project.to_owned(), secret: secret.to_owned(), field })
}

/// A pointer to one version of an external secret (`provider_version_ref`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// A KV2 version or a GCP version number (1 or more).
    Number(u64),
    /// An AWS version id (a UUID).
    AwsVersionId(String),
    /// An AWS staging label, such as `AWSCURRENT` or `AWSPREVIOUS`.
    AwsStage(String),
    /// GCP's `latest` alias.
    Latest,
}

impl VersionRef {
    /// Parses `s` as a version pointer for `kind`: a KV2 version (a number), an AWS version
    /// id (a UUID) or staging label, a GCP version number or `latest`.
    pub fn parse(kind: ProviderKind, s: &str) -> Result<VersionRef, RefError> {
        if s.is_empty() || s.len() > 256 {
            return err("provider_version_ref must be 1-256 characters");
        }
        if s.contains(|c: char| c.is_control()) {
            return err("provider_version_ref has a control character");
        }
        let number = || match s.parse::<u64>() {
            Ok(n) if n >= 1 && !s.starts_with('0') => Ok(VersionRef::Number(n)),
            _ => err(format!("provider_version_ref '{}' is not a version number (1 or more)", shown(s))),
        };
        match kind {
            ProviderKind::Vault => number(),
            ProviderKind::GcpSecretManager if s == "latest" => Ok(VersionRef::Latest),
            ProviderKind::GcpSecretManager => number(),
            ProviderKind::AwsSecretsManager if is_uuid(s) => Ok(VersionRef::AwsVersionId(s.to_owned())),
            ProviderKind::AwsSecretsManager => {
                if s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                    Ok(VersionRef::AwsStage(s.to_owned()))
                } else {
                    err("provider_version_ref for AWS is a version id (a UUID) or a staging label ([A-Za-z0-9_.-])")
                }
            }
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Number(n) => write!(f, "{n}"),
            VersionRef::AwsVersionId(s) | VersionRef::AwsStage(s) => f.write_str(s),
            VersionRef::Latest => f.write_str("latest"),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ExternalRef {
        ExternalRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str) -> String {
        ExternalRef::parse(s).expect_err(s).0
    }

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            ok("vault+kv2://secret/app/api#token"),
            ExternalRef::VaultKv2 { mount: "secret".into(), path: "app/api".into(), field: Some("token".into()) }
        );
        assert_eq!(ok("vault+kv2://kv/x"), ExternalRef::VaultKv2 { mount: "kv".into(), path: "x".into(), field: None });
        assert_eq!(
            ok("aws-sm://prod/db#password"),
            ExternalRef::AwsSm { name: "prod/db".into(), field: Some("password".into()) }
        );
        assert_eq!(ok("aws-sm://a+b=c.d@e-f_g"), ExternalRef::AwsSm { name: "a+b=c.d@e-f_g".into(), field: None });
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf";
        assert_eq!(ok(&format!("aws-sm://{arn}")), ExternalRef::AwsSm { name: arn.into(), field: None });
        assert_eq!(
            ok("gcp-sm://projects/my-proj-1/secrets/api_key#k"),
            ExternalRef::GcpSm { project: "my-proj-1".into(), secret: "api_key".into(), field: Some("k".into()) }
        );
        assert_eq!(ok("gcp-sm://projects/123456/secrets/s").kind(), ProviderKind::GcpSecretManager);
    }

    #[test]
    fn display_round_trips() {
        for s in ["vault+kv2://secret/app/api#token", "aws-sm://prod/db", "gcp-sm://projects/my-proj-1/secrets/s#f"] {
            assert_eq!(ok(s).to_string(), s);
        }
    }

    #[test]
    fn refuses_hostile_input_with_clear_errors() {
        assert!(bad("").contains("empty"));
        assert!(bad("vault+kv2://secret/app/../sys#x").contains("'..'"));
        assert!(bad("vault+kv2://secret/./a").contains("'.'"));
        assert!(bad("vault+kv2://../a").contains("'..'"));
        assert!(bad("vault+kv2://secret//a").contains("empty segment"));
        assert!(bad("vault+kv2://secret/a/").contains("empty segment"));
        assert!(bad("vault+kv2:///a").contains("empty segment"));
        assert!(bad("vault+kv2://secret").contains("MOUNT/PATH"));
        assert!(bad("vault+kv2://secret/").contains("secret path"));
        assert!(bad("vault+kv2://secret/a?version=2").contains("'?'"));
        assert!(bad("vault+kv2://secret/a%2F..").contains("'%'"));
        assert!(bad("vault+kv2://secret/a#").contains("empty"));
        assert!(bad("vault+kv2://secret/a#b#c").contains("one '#'"));
        assert!(bad("vault+kv2://secret/a\r\nX-Injected: 1").contains("control character"));
        assert!(bad("aws-sm://a\0b").contains("control character"));
        assert!(bad("aws-sm://a#f\n").contains("control character"));
        assert!(bad("aws-sm://").contains("name or ARN"));
        assert!(bad("aws-sm://a b").contains("' '"));
        assert!(bad("aws-sm://a/../b").contains("'..'"));
        assert!(bad("aws-sm://arn:aws:iam::1:user/x").contains("ARN"));
        assert!(bad("aws-sm://a:b").contains("':'"));
        assert!(bad("gcp-sm://projects/p/secrets/s").contains("project"));
        assert!(bad("gcp-sm://projects/my-proj/secrets/a.b").contains("secret id"));
        assert!(bad("gcp-sm://projects/my-proj/secrets/s/versions/1").contains("projects/PROJECT"));
        assert!(bad("gcp-sm://projects/my-proj").contains("projects/PROJECT"));
        assert!(bad("s3://bucket/key").contains("unknown external_ref scheme 's3'"));
        assert!(bad("secret/app").contains("must start with"));
        let long = format!("aws-sm://{}", "a".repeat(MAX_REF_LEN));
        assert!(bad(&long).contains("at most 1024"));
        let long_field = format!("aws-sm://a#{}", "f".repeat(MAX_FIELD_LEN + 1));
        assert!(bad(&long_field).contains("at most 256"));
        let long_name = format!("aws-sm://{}", "n".repeat(513));
        assert!(bad(&long_name).contains("at most 512"));
        // A message quotes at most 64 characters of what it refuses.
        let scheme = "x".repeat(200);
        assert!(bad(&format!("{scheme}://a")).len() < 200);
    }

    #[test]
    fn version_refs_follow_the_provider() {
        assert_eq!(VersionRef::parse(ProviderKind::Vault, "3"), Ok(VersionRef::Number(3)));
        assert!(VersionRef::parse(ProviderKind::Vault, "0").is_err());
        assert!(VersionRef::parse(ProviderKind::Vault, "01").is_err());
        assert!(VersionRef::parse(ProviderKind::Vault, "-1").is_err());
        assert!(VersionRef::parse(ProviderKind::Vault, "latest").is_err());
        assert!(VersionRef::parse(ProviderKind::Vault, "").is_err());
        let id = "0123abcd-90ab-cdef-fedc-ba9876543210".to_owned();
        assert_eq!(VersionRef::parse(ProviderKind::AwsSecretsManager, &id), Ok(VersionRef::AwsVersionId(id.clone())));
        assert_eq!(
            VersionRef::parse(ProviderKind::AwsSecretsManager, "AWSPREVIOUS"),
            Ok(VersionRef::AwsStage("AWSPREVIOUS".into()))
        );
        assert!(VersionRef::parse(ProviderKind::AwsSecretsManager, "a b").is_err());
        assert!(VersionRef::parse(ProviderKind::AwsSecretsManager, "a\r\nb").is_err());
        assert_eq!(VersionRef::parse(ProviderKind::GcpSecretManager, "latest"), Ok(VersionRef::Latest));
        assert_eq!(VersionRef::parse(ProviderKind::GcpSecretManager, "7"), Ok(VersionRef::Number(7)));
        assert!(VersionRef::parse(ProviderKind::Vault, &"9".repeat(300)).is_err());
    }

    #[test]
    fn kinds_have_names() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("local_encrypted"), None);
    }
}
