//! Apps: one deployment exports for several Chat apps (production and staging, one app per
//! product or region). An app is declared once, as `NAME.toml` in the apps directory
//! (`--apps-dir` / `EXPORT_APPS_DIR`, default `./apps`):
//!
//! ```toml
//! sdkappid = 1400000001
//! region = "singapore"          # or api_base = "https://..." (not both)
//! identifier = "administrator"  # the app admin account (default: administrator)
//! secret_key_file = "/etc/receipt-exporter/prod-sg.key"
//! ```
//!
//! The key stays out of the file, as everywhere: only a key file is named. The TIM_* settings
//! are the app named `default`. Selecting an app ([`Settings::for_app`]) replaces the four API
//! settings and nothing else, so every command that calls the API or writes rows speaks for
//! exactly one app; its rows carry the app's SDKAppID.

use super::{
    check_key, invalid, parse_api_base, parse_identifier, parse_region, parse_sdkappid,
    read_key_file, read_small_file, ApiEndpoint, Origin, Settings, SettingsError, APP, APPS_DIR,
};
use std::path::{Path, PathBuf};

/// The app of the TIM_* settings.
pub const DEFAULT_APP: &str = "default";
/// The keys of an app file.
const KEYS: &[&str] = &[
    "sdkappid",
    "region",
    "api_base",
    "identifier",
    "secret_key_file",
];

/// An app name: a file stem, a metrics label and a log field, so short and plain: a lowercase
/// letter, then up to 39 lowercase letters, digits, `-` or `_`.
pub fn parse_name(value: &str, origin: &Origin) -> Result<String, SettingsError> {
    let v = value.trim();
    let ok = v.len() <= 40
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(v.to_string())
    } else {
        Err(invalid(
            origin,
            value,
            "an app name: a lowercase letter, then up to 39 lowercase letters, digits, - or _ (the stem of NAME.toml in the apps directory)",
        ))
    }
}

/// One app file, read and validated (its key file read too).
#[derive(Debug, Clone)]
pub struct AppFile {
    pub name: String,
    pub path: PathBuf,
    pub sdkappid: u64,
    pub endpoint: ApiEndpoint,
    pub identifier: String,
    pub secret_key: crate::secret::Secret,
    /// The key file is readable by others.
    pub key_warning: Option<String>,
}

/// Where app `name` is declared.
pub fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

/// Reads `NAME.toml` in `dir`.
///
/// (Over 60 lines: one check per key of the app file, each error naming the file and the key.)
pub fn load(dir: &Path, name: &str) -> Result<AppFile, SettingsError> {
    let path = file_of(dir, name);
    let at = |problem: String| SettingsError {
        origin: format!("app `{name}` ({})", path.display()),
        problem,
    };
    let text = match read_small_file(&path, super::MAX_CONFIG_FILE_BYTES) {
        Ok(text) => text,
        Err(e) if !path.exists() => {
            return Err(at(format!(
            "no such app: {e}. Declare it as {} with sdkappid, region (or api_base), identifier \
                 and secret_key_file, or set {} / {} to the directory holding it{}",
            path.display(),
            APPS_DIR.env,
            APPS_DIR.flag.unwrap_or_default(),
            known_apps(dir)
        )))
        }
        Err(e) => return Err(at(format!("cannot read the app file: {e}"))),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| at(format!("not valid TOML: {}", e.message())))?;
    let origin = |key: &'static str| Origin::File {
        path: path.clone(),
        key,
    };
    let get = |key: &'static str| -> Result<Option<String>, SettingsError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(at(format!(
                "key `{key}`: expected a string or an integer, got {}",
                other.type_str()
            ))),
        }
    };
    if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        let hint = if key == "secret_key" {
            " (an app file names a key file, `secret_key_file`, never the key itself)"
        } else {
            ""
        };
        return Err(at(format!(
            "unknown key `{key}`{hint}: the keys are {}",
            KEYS.join(", ")
        )));
    }
    let sdkappid = match get("sdkappid")? {
        Some(v) => parse_sdkappid(&v, &origin("sdkappid"))?,
        None => {
            return Err(at(
                "`sdkappid` is missing: the app's SDKAppID from the Chat console".into(),
            ))
        }
    };
    let endpoint = match (get("region")?, get("api_base")?) {
        (Some(_), Some(_)) => {
            return Err(at("both `region` and `api_base` are set: keep one".into()))
        }
        (Some(v), None) => ApiEndpoint::Region(parse_region(&v, &origin("region"))?),
        (None, Some(v)) => ApiEndpoint::Base(parse_api_base(&v, &origin("api_base"))?),
        (None, None) => {
            return Err(at(
                "neither `region` nor `api_base` is set: name the app's region (an app lives in exactly one)".into(),
            ))
        }
    };
    let identifier = match get("identifier")? {
        Some(v) => parse_identifier(&v, &origin("identifier"))?,
        None => "administrator".to_string(),
    };
    let Some(key_file) = get("secret_key_file")? else {
        return Err(at(
            "`secret_key_file` is missing: name a file holding the app's key (mode 0600)".into(),
        ));
    };
    // A relative key file is beside the app file, not wherever the command runs.
    let key_path = path
        .parent()
        .map_or_else(|| PathBuf::from(&key_file), |d| d.join(&key_file));
    let mut warnings = Vec::new();
    let key_origin = origin("secret_key_file");
    let secret_key = check_key(
        read_key_file(&key_path, &key_origin, &mut warnings)?,
        &key_origin,
    )?;
    Ok(AppFile {
        name: name.to_string(),
        path,
        sdkappid,
        endpoint,
        identifier,
        secret_key,
        key_warning: warnings.pop(),
    })
}

/// The names of the apps declared in `dir` (sorted; empty when it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".toml").map(str::to_string)
        })
        .filter(|n| parse_name(n, &Origin::Default).is_ok() && n != DEFAULT_APP)
        .collect();
    names.sort();
    names
}

fn known_apps(dir: &Path) -> String {
    match names(dir).as_slice() {
        [] => String::new(),
        names => format!(" (declared there: {})", names.join(", ")),
    }
}

impl Settings {
    /// The SDKAppID rows are written under when no app is named: the default app's, if
    /// TIM_SDKAPPID is set; `None` otherwise (rows the default app's first run adopts).
    pub fn app_sdkappid(&self) -> Option<i64> {
        self.sdkappid.and_then(|a| i64::try_from(a).ok())
    }

    /// The settings of app `name` (`None` or `default`: these, the TIM_* settings): its
    /// SDKAppID, endpoint, admin account and key replace the TIM_* ones; nothing else changes.
    pub fn for_app(&self, name: Option<&str>) -> Result<Settings, SettingsError> {
        let name = name.or(self.app.as_deref()).unwrap_or(DEFAULT_APP);
        let mut settings = self.clone();
        settings.app = Some(name.to_string());
        if name == DEFAULT_APP {
            settings.app_name = DEFAULT_APP.to_string();
            return Ok(settings);
        }
        parse_name(name, &Origin::Flag(APP.flag.unwrap_or_default()))?;
        let app = load(&self.apps_dir, name)?;
        settings.app_name = app.name;
        settings.sdkappid = Some(app.sdkappid);
        settings.api = Some(app.endpoint);
        settings.identifier = app.identifier;
        settings.secret_key = Some(app.secret_key);
        settings.key_warning = app.key_warning;
        Ok(settings)
    }

    /// The SDKAppID a run writes its rows under: required (a run speaks for one app).
    pub fn require_app_id(&self) -> Result<i64, SettingsError> {
        let id = self.require_sdkappid()?;
        i64::try_from(id).map_err(|_| SettingsError {
            origin: "TIM_SDKAPPID".into(),
            problem: format!("{id} is too large for an SDKAppID"),
        })
    }

    /// Whether these are the default app's settings (the TIM_* ones).
    pub fn is_default_app(&self) -> bool {
        self.app_name == DEFAULT_APP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn an_app_file_replaces_the_api_settings_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "prod.key", "k".repeat(64).as_str());
        write(
            dir.path(),
            "prod-sg.toml",
            "sdkappid = 1400000001\nregion = \"singapore\"\nsecret_key_file = \"prod.key\"\n",
        );
        let app = load(dir.path(), "prod-sg").unwrap();
        assert_eq!(app.sdkappid, 1_400_000_001);
        assert_eq!(app.endpoint, ApiEndpoint::Region("singapore".into()));
        assert_eq!(app.identifier, "administrator");
        assert_eq!(names(dir.path()), vec!["prod-sg".to_string()]);
    }

    #[test]
    fn bad_app_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            "sdkappid = 1\nregion = \"x\"\nsecret_key_file = \"k\"\n",
        );
        let e = load(dir.path(), "a").unwrap_err().to_string();
        assert!(e.contains("region") && e.contains("singapore"), "{e}");
        write(dir.path(), "b.toml", "sdkappid = 1\nsecret_key = \"abc\"\n");
        let e = load(dir.path(), "b").unwrap_err().to_string();
        assert!(e.contains("secret_key_file"), "{e}");
        let e = load(dir.path(), "missing").unwrap_err().to_string();
        assert!(e.contains("no such app") && e.contains("a, b"), "{e}");
        write(
            dir.path(),
            "c.toml",
            "sdkappid = 1\nregion = \"seoul\"\napi_base = \"https://x\"\nsecret_key_file = \"k\"\n",
        );
        let e = load(dir.path(), "c").unwrap_err().to_string();
        assert!(e.contains("keep one"), "{e}");
        assert!(parse_name("Prod", &Origin::Default).is_err());
        assert!(parse_name("1400", &Origin::Default).is_err());
        assert!(parse_name("prod-sg_2", &Origin::Default).is_ok());
    }
}
