//! Named profiles of the AWS shared files: keys from `~/.aws/credentials`, the region from
//! `~/.aws/config` (paths overridden by `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`).
//! Only static keys are read; SSO and `credential_process` profiles are not supported.

use std::path::PathBuf;

use outflow_core::secret::Secret;

/// The keys and region of one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `aws_access_key_id`.
    pub access_key_id: Secret,
    /// `aws_secret_access_key`.
    pub secret_access_key: Secret,
    /// `aws_session_token`, when present.
    pub session_token: Option<Secret>,
    /// `region` from the config file (or the credentials file), when present.
    pub region: Option<String>,
}

fn aws_file(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name))
}

/// Loads `profile` from the shared files; the error names the profile and the file.
pub fn load(profile: &str) -> Result<Profile, String> {
    let creds_path = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .ok_or("cannot locate ~/.aws/credentials: HOME is not set")?;
    let creds = std::fs::read_to_string(&creds_path).map_err(|e| {
        format!("cannot read AWS profile '{profile}' from '{}': {e}", creds_path.display())
    })?;
    let config = aws_file("AWS_CONFIG_FILE", "config")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    parse(profile, &creds, &config).map_err(|missing| {
        format!("AWS profile '{profile}' in '{}' {missing}", creds_path.display())
    })
}

/// Reads `profile` out of the two files' text.
pub fn parse(profile: &str, credentials: &str, config: &str) -> Result<Profile, String> {
    let pairs = section(credentials, profile).ok_or("does not exist")?;
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let access_key_id = get("aws_access_key_id").ok_or("has no aws_access_key_id")?;
    let secret_access_key = get("aws_secret_access_key").ok_or("has no aws_secret_access_key")?;
    // In the config file, profiles other than `default` are written `[profile name]`.
    let config_section =
        section(config, &format!("profile {profile}")).or_else(|| section(config, profile));
    let region = config_section
        .and_then(|s| s.into_iter().find(|(k, _)| k == "region").map(|(_, v)| v))
        .or_else(|| get("region"));
    Ok(Profile {
        access_key_id: Secret::new(access_key_id),
        secret_access_key: Secret::new(secret_access_key),
        session_token: get("aws_session_token").map(Secret::new),
        region,
    })
}

/// The `key = value` pairs of `[name]`, or `None` when there is no such section.
fn section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if found.is_some() {
                break;
            }
            if header.split_whitespace().collect::<Vec<_>>().join(" ") == name {
                found = Some(Vec::new());
            }
            continue;
        }
        if let (Some(pairs), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
            pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDS: &str = "# comment\n[default]\naws_access_key_id = AKD\naws_secret_access_key = SKD\n\n[dev]\naws_access_key_id=AKDEV\naws_secret_access_key=SKDEV\naws_session_token = TOK\n[broken]\naws_access_key_id = X\n";
    const CONFIG: &str = "[default]\nregion = us-east-2\n[profile dev]\nregion = eu-west-1\n";

    #[test]
    fn reads_named_profiles() {
        let dev = parse("dev", CREDS, CONFIG).unwrap();
        assert_eq!(dev.access_key_id.expose(), "AKDEV");
        assert_eq!(dev.secret_access_key.expose(), "SKDEV");
        assert_eq!(dev.session_token.as_ref().map(Secret::expose), Some("TOK"));
        assert_eq!(dev.region.as_deref(), Some("eu-west-1"));
        let default = parse("default", CREDS, CONFIG).unwrap();
        assert_eq!(default.access_key_id.expose(), "AKD");
        assert_eq!(default.session_token, None);
        assert_eq!(default.region.as_deref(), Some("us-east-2"));
    }

    #[test]
    fn missing_profiles_and_keys_are_named() {
        assert_eq!(parse("prod", CREDS, "").unwrap_err(), "does not exist");
        assert_eq!(parse("broken", CREDS, "").unwrap_err(), "has no aws_secret_access_key");
    }
}
