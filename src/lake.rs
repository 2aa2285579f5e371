//! Where the lake is: a local directory, or a prefix in an object store (S3, GCS, Azure Blob)
//! reached through the `object_store` crate. This module turns the `--parquet-dir` string into
//! a [`Location`] (pure parsing, [`parse_location`]: a store's scheme without its `//` is
//! refused, never taken for a directory named `s3:`), a location into its one spelling
//! ([`Location::normalized`]: `/x`, `file:/x` and `file:///x` are one place, which the
//! database records as its lake) and into an open [`Lake`] ([`Location::open`], reading the
//! store's standard environment variables). It writes nothing and knows nothing of Postgres or
//! of the files' layout; the sinks do.
//!
//! Credentials come only from the environment variables `object_store` reads (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`). They are never part of a [`Location`], a [`Lake`]'s `Display` or
//! `Debug`, or an error of this module. Plain http is allowed only to a loopback endpoint, as
//! for `TIM_API_BASE`: data leaves the host over TLS.

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What `--parquet-dir` accepts, for error messages and `--help`.
pub const ACCEPTED: &str =
    "a directory path, file:///ABSOLUTE/PATH (or file:/ABSOLUTE/PATH), s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX";

/// The schemes that name an object store (or that a user may take for one): written without
/// `//` they are refused, never taken for a directory named `s3:`.
const STORE_SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "gcs", "az", "abfs", "http", "https"];

/// The object stores the lake may live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `s3://`: Amazon S3 and S3-compatible stores (MinIO, moto, R2, ...).
    S3,
    /// `gs://`: Google Cloud Storage.
    Gcs,
    /// `az://`: Azure Blob Storage.
    Azure,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }
}

/// A parsed `--parquet-dir`: no credentials, no I/O done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this host (a bare path or `file://`).
    Local(PathBuf),
    /// A bucket (container) and a prefix inside it (no leading or trailing `/`, may be empty).
    Remote {
        scheme: Scheme,
        bucket: String,
        prefix: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Remote {
                scheme,
                bucket,
                prefix,
            } if prefix.is_empty() => write!(f, "{}://{bucket}", scheme.as_str()),
            Location::Remote {
                scheme,
                bucket,
                prefix,
            } => write!(f, "{}://{bucket}/{prefix}", scheme.as_str()),
        }
    }
}

impl Location {
    /// The location as one string whatever way it was written: `file:///ABSOLUTE/PATH` for a
    /// directory (made absolute against the working directory, `.` segments and a trailing
    /// `/` dropped, links not resolved: `/x`, `file:/x`, `file:///x` and `/x/./` are one),
    /// `scheme://bucket/prefix` for an object store. What the lake's identity records and
    /// what the Iceberg table's location starts with.
    pub fn normalized(&self) -> String {
        match self {
            Location::Local(path) => {
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                normalize_location(&abs.to_string_lossy())
            }
            remote => normalize_location(&remote.to_string()),
        }
    }
}

/// Turns a `--parquet-dir` value into a location. A value without `scheme://` is a local path,
/// as it always was; `file://` is a local path too; `s3://`, `gs://` and `az://` name an object
/// store; any other scheme is refused (it would otherwise become a directory named `x:`).
/// The error is the problem, to follow the setting's name.
pub fn parse_location(value: &str) -> Result<Location, String> {
    let shown = redact_userinfo(value);
    let refuse = |why: &str| {
        Err(format!(
            "invalid value '{shown}': {why}; expected {ACCEPTED}"
        ))
    };
    if value.is_empty() {
        return refuse("empty");
    }
    if let Some(scheme) = bare_scheme(value) {
        // `file:/x` is a file URL; `s3:/bucket/x` or `s3:x` is a store location missing its `//`.
        if !scheme.eq_ignore_ascii_case("file") {
            return refuse(&format!(
                "'{scheme}:' without '//' is not a location (an object store location is \
                 {scheme}://BUCKET/PREFIX)"
            ));
        }
        return match file_url(value) {
            Some(location) => Ok(location),
            None => refuse(
                "a file: URL needs an absolute path on this host (file:/PATH or file:///PATH)",
            ),
        };
    }
    let Some((scheme, rest)) = split_scheme(value) else {
        return Ok(Location::Local(PathBuf::from(value)));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            return match file_url(value) {
                Some(location) => Ok(location),
                None => refuse("a file:// URL needs an absolute path on this host"),
            }
        }
        "s3" => Scheme::S3,
        "gs" => Scheme::Gcs,
        "az" => Scheme::Azure,
        other => return refuse(&format!("the scheme '{other}://' is not supported")),
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains(['@', ':', '?', '#']) {
        return refuse("the bucket (container) name is missing or malformed");
    }
    if prefix.contains(['?', '#']) {
        return refuse("a query or fragment is not part of a lake location");
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() && ObjectPath::parse(prefix).is_err() {
        return refuse("the prefix has an empty, '.' or '..' segment");
    }
    Ok(Location::Remote {
        scheme,
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

/// One spelling of a location in the lake, so that locations written by different engines
/// compare equal: `file:/x` (Hadoop, so Spark), `file:///x` (iceberg-rust, pyiceberg),
/// `file://localhost/x` and `/x` are one file on this host, all `file:///x`; `s3a://` and
/// `s3n://` (Hadoop's S3 clients) are `s3://`; repeated and trailing slashes of the path go.
/// Every comparison of two locations that may come from different writers goes through this
/// (Iceberg metadata against a listing, a table's location against the configured lake).
pub fn normalize_location(location: &str) -> String {
    let (scheme, rest) = match location.split_once(':') {
        Some((scheme, rest))
            if split_scheme(location).is_some() || scheme.eq_ignore_ascii_case("file") =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ if location.starts_with('/') => ("file".to_string(), location),
        _ => return location.to_string(),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => after.split_at(after.find('/').unwrap_or(after.len())),
        None => ("", rest),
    };
    let scheme = match scheme.as_str() {
        "s3a" | "s3n" => "s3",
        other => other,
    };
    let authority = match (scheme, authority) {
        ("file", "localhost") => "",
        (_, authority) => authority,
    };
    let mut clean = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty()) {
        clean.push('/');
        clean.push_str(part);
    }
    format!("{scheme}://{authority}{clean}")
}

/// The value with anything between `://` and an `@` of the authority hidden: a location never
/// carries credentials, but a mistaken one must not show them either.
fn redact_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]{}", &rest[at..]),
        None => value.to_string(),
    }
}

/// A local path for a `file:` URL naming an absolute path on this host (`file:/x`,
/// `file:///x`, `file://localhost/x`).
fn file_url(value: &str) -> Option<Location> {
    let url = url::Url::parse(value).ok()?;
    let local = url
        .host_str()
        .is_none_or(|h| h.is_empty() || h == "localhost");
    let rest = value.split_once(':')?.1;
    // `file:x` would parse as `/x`: a relative path is not a file URL.
    (local && rest.starts_with('/'))
        .then(|| url.to_file_path().ok())
        .flatten()
        .map(Location::Local)
}

/// The scheme of `file:/x`, `s3:/bucket/x` or `s3:x`: a known scheme followed by `:` but not
/// `://`. Any other `word:` stays a path, as it always was.
fn bare_scheme(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(':')?;
    let known = scheme.eq_ignore_ascii_case("file")
        || STORE_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme));
    (known && !rest.starts_with("//")).then_some(scheme)
}

/// `("s3", "bucket/prefix")` for `s3://bucket/prefix`; `None` for a path (a scheme is letters,
/// digits, `+`, `-`, `.`, starting with a letter, followed by `://`).
fn split_scheme(value: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = value.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// The S3 settings taken from the standard variables, as `object_store` reads them: for other
/// S3 clients of the same lake (Iceberg's FileIO) to be configured from the same variables.
/// `Debug` hides the keys.
#[derive(Clone, Default)]
pub struct S3Env {
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else `AWS_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `AWS_ALLOW_HTTP=true` (accepted only with a loopback endpoint).
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<crate::secret::Secret>,
    pub session_token: Option<crate::secret::Secret>,
}

impl fmt::Debug for S3Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Env")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "[set]"),
            )
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

impl S3Env {
    /// Reads the variables (nothing is checked here; [`Location::open`] checks).
    pub fn from_env() -> S3Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secret = |name: &str| var(name).map(crate::secret::Secret::new);
        S3Env {
            endpoint: var("AWS_ENDPOINT_URL_S3")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .or_else(|| var("AWS_ENDPOINT")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            allow_http: var("AWS_ALLOW_HTTP").is_some_and(|v| is_true(&v)),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: secret("AWS_SECRET_ACCESS_KEY"),
            session_token: secret("AWS_SESSION_TOKEN"),
        }
    }
}

fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes"
    )
}

/// Checks an object store endpoint against its allow-http variable: https anywhere; plain http
/// only to a loopback address and only when `allow_var` is true; `allow_var` true without such
/// an endpoint is refused (it would let credentials travel in clear to a remote host).
pub fn check_endpoint(
    endpoint: Option<&str>,
    endpoint_var: &str,
    allow_http: bool,
    allow_var: &str,
) -> Result<(), String> {
    let Some(endpoint) = endpoint else {
        return match allow_http {
            true => Err(format!(
                "{allow_var}=true is accepted only with a loopback endpoint in {endpoint_var} (e.g. http://127.0.0.1:9000)"
            )),
            false => Ok(()),
        };
    };
    let url = url::Url::parse(endpoint)
        .map_err(|_| format!("{endpoint_var}: invalid endpoint '{endpoint}': expected a URL such as https://s3.eu-west-1.amazonaws.com"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match (url.scheme(), loopback, allow_http) {
        ("https", _, false) => Ok(()),
        ("http", true, true) => Ok(()),
        ("http", true, false) => Err(format!(
            "{endpoint_var} is plain http ({endpoint}): set {allow_var}=true to allow it (loopback only)"
        )),
        ("http", false, _) | ("https", false, true) => Err(format!(
            "{endpoint_var} ({endpoint}): plain http and {allow_var} are accepted only for a loopback address such as http://127.0.0.1:PORT; use https"
        )),
        ("https", true, true) => Ok(()),
        _ => Err(format!(
            "{endpoint_var}: invalid endpoint '{endpoint}': expected an https:// URL"
        )),
    }
}

/// An open lake.
#[derive(Clone, Debug)]
pub enum Lake {
    Local(PathBuf),
    Remote(Remote),
}

/// A lake in an object store: the store, and the prefix every key of the lake starts with.
#[derive(Clone)]
pub struct Remote {
    location: Location,
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl fmt::Debug for Remote {
    /// The location only: a store's own `Debug` may show its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({})", self.location)
    }
}

impl fmt::Display for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lake::Local(path) => write!(f, "{}", path.display()),
            Lake::Remote(remote) => write!(f, "{}", remote.location),
        }
    }
}

impl Lake {
    /// The local directory, for a lake on this host.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Lake::Local(dir) => Some(dir),
            Lake::Remote(_) => None,
        }
    }

    /// The object store, for a lake in one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Lake::Local(_) => None,
            Lake::Remote(remote) => Some(remote),
        }
    }

    /// The lake's location as one string whatever way it was written
    /// ([`Location::normalized`]).
    pub fn normalized(&self) -> String {
        match self {
            Lake::Local(dir) => Location::Local(dir.clone()).normalized(),
            Lake::Remote(remote) => remote.location.normalized(),
        }
    }

    /// Where a file is, as users name it: a path or a `scheme://bucket/key` URL.
    pub fn describe(&self, relative: &str) -> String {
        match self {
            Lake::Local(dir) => dir.join(relative).display().to_string(),
            Lake::Remote(remote) => format!("{}/{relative}", remote.location),
        }
    }
}

impl Remote {
    /// Opens a lake in an already built store (tests, tools).
    pub fn new(location: Location, store: Arc<dyn ObjectStore>) -> Remote {
        let prefix = match &location {
            Location::Remote { prefix, .. } => prefix.clone(),
            Location::Local(_) => String::new(),
        };
        Remote {
            location,
            store,
            prefix,
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The object key of a path relative to the lake's root (`receipt_snapshots/...`).
    /// The prefix is used as written (`ObjectPath::from` would percent-encode a `%`, `#`, `~`
    /// and more into `%25`, ..., a key no reader of `s3://BUCKET/PREFIX` would find, and that
    /// [`Remote::relative`] would not recognise); our own names need no encoding.
    pub fn key(&self, relative: &str) -> ObjectPath {
        let base = ObjectPath::parse(&self.prefix)
            .expect("parse_location accepts only a prefix ObjectPath::parse accepts");
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(base, |key, part| key.join(part))
    }

    /// The path relative to the lake's root of a key under it (`None`: not under the prefix).
    pub fn relative<'a>(&self, key: &'a ObjectPath) -> Option<&'a str> {
        let key = key.as_ref();
        match self.prefix.is_empty() {
            true => Some(key),
            false => key.strip_prefix(&self.prefix)?.strip_prefix('/'),
        }
    }
}

impl Location {
    /// Opens the lake: a local path as it is; an object store built from its standard
    /// environment variables (no request is made), each request retried for at most `bound`
    /// ([`Bounds`]). The error says what to fix, never a secret.
    pub fn open(&self, bound: std::time::Duration) -> Result<Lake, String> {
        let Location::Remote { scheme, bucket, .. } = self else {
            let Location::Local(path) = self else {
                unreachable!()
            };
            return Ok(Lake::Local(path.clone()));
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            Scheme::S3 => Arc::new(open_s3(bucket, Bounds::new(bound, "AWS_TIMEOUT"))?),
            Scheme::Gcs => Arc::new(open_gcs(bucket, Bounds::new(bound, "GOOGLE_TIMEOUT"))?),
            Scheme::Azure => Arc::new(open_azure(bucket, Bounds::new(bound, "AZURE_TIMEOUT"))?),
        };
        Ok(Lake::Remote(Remote::new(self.clone(), store)))
    }
}

/// The longest any one request to the lake may take, in every form (`--lake-timeout`), as the
/// settings gave it: the object store's client applies it itself ([`Bounds`]); the Iceberg
/// table's storage layer (iceberg-rust over OpenDAL, which retries for ~50 s whatever it is
/// told) is cut at it by [`crate::sink::iceberg::IcebergLake::within`].
static REQUEST_BOUND: std::sync::RwLock<Option<std::time::Duration>> = std::sync::RwLock::new(None);

/// Records the configured lake timeout (the settings do, when they open the lake).
pub fn set_request_bound(bound: std::time::Duration) {
    *REQUEST_BOUND.write().unwrap_or_else(|e| e.into_inner()) = Some(bound);
}

/// The configured lake timeout (60 s when no settings were read, as in a library test).
pub fn request_bound() -> std::time::Duration {
    REQUEST_BOUND
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(std::time::Duration::from_secs(60))
}

/// How long a request to the store may go on. object_store retries a failed request (a refused
/// connection, a timeout, a 5xx) with backoff for up to 3 minutes by default, saying nothing:
/// here for at most `retry` since its first attempt (`--lake-timeout`), each attempt cut after
/// `attempt` (30 s, object_store's default, or less when the bound is shorter; the store's own
/// `*_TIMEOUT` variable, when set, decides instead). A connection attempt is cut after 5 s
/// (object_store's default, `*_CONNECT_TIMEOUT`).
struct Bounds {
    retry: object_store::RetryConfig,
    attempt: Option<String>,
}

impl Bounds {
    fn new(bound: std::time::Duration, timeout_var: &str) -> Bounds {
        let retry = object_store::RetryConfig {
            retry_timeout: bound,
            ..Default::default()
        };
        let attempt = std::env::var_os(timeout_var).is_none().then(|| {
            let secs = bound.as_secs().clamp(1, 30);
            format!("{secs}s")
        });
        Bounds { retry, attempt }
    }
}

fn open_s3(bucket: &str, bounds: Bounds) -> Result<object_store::aws::AmazonS3, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::ClientConfigKey;
    let env = S3Env::from_env();
    // Named as set: the error must point at the variable the user wrote.
    let endpoint_var = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .into_iter()
        .find(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
        .unwrap_or("AWS_ENDPOINT_URL");
    check_endpoint(
        env.endpoint.as_deref(),
        endpoint_var,
        env.allow_http,
        "AWS_ALLOW_HTTP",
    )?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(bounds.retry);
    if let Some(timeout) = bounds.attempt {
        builder = builder.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout);
    }
    if let Some(region) = &env.region {
        builder = builder.with_region(region);
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_none()
    {
        if let Some(endpoint) = &env.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot use the S3 bucket '{bucket}': {e}"))
}

fn open_gcs(bucket: &str, bounds: Bounds) -> Result<object_store::gcp::GoogleCloudStorage, String> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    use object_store::ClientConfigKey;
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_retry(bounds.retry);
    if let Some(timeout) = bounds.attempt {
        builder = builder.with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), timeout);
    }
    let base = builder.get_config_value(&GoogleConfigKey::BaseUrl);
    let allow = std::env::var("GOOGLE_ALLOW_HTTP").is_ok_and(|v| is_true(&v));
    check_endpoint(
        base.as_deref(),
        "GOOGLE_BASE_URL",
        allow,
        "GOOGLE_ALLOW_HTTP",
    )?;
    builder
        .build()
        .map_err(|e| format!("cannot use the GCS bucket '{bucket}': {e}"))
}

fn open_azure(
    container: &str,
    bounds: Bounds,
) -> Result<object_store::azure::MicrosoftAzure, String> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::ClientConfigKey;
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .with_retry(bounds.retry);
    if let Some(timeout) = bounds.attempt {
        builder = builder.with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), timeout);
    }
    let endpoint = builder.get_config_value(&AzureConfigKey::Endpoint);
    let allow = std::env::var("AZURE_ALLOW_HTTP").is_ok_and(|v| is_true(&v));
    check_endpoint(
        endpoint.as_deref(),
        "AZURE_STORAGE_ENDPOINT",
        allow,
        "AZURE_ALLOW_HTTP",
    )?;
    builder
        .build()
        .map_err(|e| format!("cannot use the Azure container '{container}': {e}"))
}

/// One line for an object store's error: what the store answered (its HTTP status, S3's or
/// Azure's `<Code>` and `<Message>`) or that it did not answer (the innermost cause: refused, timed
/// out, DNS), then what to check. object_store's own message repeats each cause and the
/// server's whole XML body, several times over. No credential is in either.
pub fn describe_store_error(error: &object_store::Error) -> String {
    let full = error.to_string();
    if let object_store::Error::NotFound { path, .. } = error {
        if !full.contains("<Code>") {
            return format!("no object {path}");
        }
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = full.find(&open)? + open.len();
        let end = start + full[start..].find(&format!("</{name}>"))?;
        Some(clip(&full[start..end]))
    };
    let status = full.split("status code: ").nth(1).map(|rest| {
        let end = rest.find([':', '\n']).unwrap_or(rest.len());
        rest[..end].trim().to_string()
    });
    let Some(status) = status else {
        let mut root: &dyn std::error::Error = error;
        while let Some(next) = root.source() {
            root = next;
        }
        return format!(
            "no answer from the store ({}); check its endpoint (AWS_ENDPOINT_URL, GOOGLE_BASE_URL, \
             AZURE_STORAGE_ENDPOINT) and the network; a slow store needs a longer --lake-timeout",
            clip(&root.to_string())
        );
    };
    let code = tag("Code");
    let said = match (&code, tag("Message")) {
        (Some(code), Some(message)) => format!("{status}, {code}: {message}"),
        (Some(code), None) => format!("{status}, {code}"),
        _ => status.clone(),
    };
    let hint = match code.as_deref().unwrap_or_default() {
        "NoSuchBucket" | "ContainerNotFound" => {
            "the bucket (container) does not exist: create it, or fix the lake location"
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "InvalidToken"
        | "AuthenticationFailed" => {
            "the store refused the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
             AWS_SESSION_TOKEN (GOOGLE_*, AZURE_*) or the machine's role"
        }
        "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "IllegalLocationConstraintException" => {
            "the bucket is in another region: set AWS_REGION to it"
        }
        _ if status.starts_with("403") => {
            "the credentials may not do this: the exporter needs list, get, put, copy and delete \
             under the prefix"
        }
        _ => "see the store's answer",
    };
    format!("the store answered {said}; {hint}")
}

/// At most 200 characters of a store's text, on one line.
fn clip(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(scheme: Scheme, bucket: &str, prefix: &str) -> Location {
        Location::Remote {
            scheme,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn paths_stay_local_and_urls_name_a_store() {
        let ok = |v: &str| parse_location(v).unwrap();
        assert_eq!(ok("./warehouse"), Location::Local("./warehouse".into()));
        assert_eq!(ok("/srv/lake"), Location::Local("/srv/lake".into()));
        assert_eq!(ok("file:///srv/lake"), Location::Local("/srv/lake".into()));
        assert_eq!(ok("file:/srv/lake"), Location::Local("/srv/lake".into()));
        assert_eq!(ok("FILE:/srv/lake"), Location::Local("/srv/lake".into()));
        assert_eq!(ok("s3://lake/a/b/"), remote(Scheme::S3, "lake", "a/b"));
        assert_eq!(ok("s3://lake"), remote(Scheme::S3, "lake", ""));
        assert_eq!(ok("gs://g/x"), remote(Scheme::Gcs, "g", "x"));
        assert_eq!(ok("az://c/x"), remote(Scheme::Azure, "c", "x"));
        assert_eq!(ok("s3://lake/a/b").to_string(), "s3://lake/a/b");
        assert_eq!(ok("file:/srv/lake"), Location::Local("/srv/lake".into()));
        assert_eq!(
            ok("file://localhost/srv/lake"),
            Location::Local("/srv/lake".into())
        );
        // A word and a colon that is no scheme of ours stays a directory, as it always was.
        assert_eq!(ok("notes:2026"), Location::Local("notes:2026".into()));
    }

    #[test]
    fn one_place_is_one_normalised_location_however_it_is_written() {
        let norm = |v: &str| parse_location(v).unwrap().normalized();
        for same in [
            "/srv/lake",
            "file:/srv/lake",
            "file:///srv/lake",
            "/srv/./lake/",
        ] {
            assert_eq!(norm(same), "file:///srv/lake", "{same}");
        }
        let here = std::env::current_dir().unwrap();
        assert_eq!(norm("./wh"), format!("file://{}/wh", here.display()));
        assert_eq!(norm("s3://b/p/"), "s3://b/p");
        assert_eq!(norm("s3://b"), "s3://b");
    }

    #[test]
    fn every_spelling_of_one_location_normalizes_to_one() {
        for same in [
            "file:/srv/lake/t/a.parquet",
            "file:///srv/lake/t/a.parquet",
            "file://localhost/srv/lake/t/a.parquet",
            "/srv/lake/t/a.parquet",
            "file:/srv//lake/t/a.parquet",
            "FILE:///srv/lake/t/a.parquet",
        ] {
            assert_eq!(
                normalize_location(same),
                "file:///srv/lake/t/a.parquet",
                "{same}"
            );
        }
        for same in ["s3://b/p/t", "s3a://b/p/t", "s3n://b/p/t/", "s3://b/p//t"] {
            assert_eq!(normalize_location(same), "s3://b/p/t", "{same}");
        }
        assert_ne!(
            normalize_location("file:/srv/lake/a"),
            normalize_location("file:/srv/lake/b")
        );
        assert_ne!(
            normalize_location("s3://b1/p"),
            normalize_location("s3://b2/p")
        );
        assert_eq!(normalize_location("gs://b/x"), "gs://b/x");
        assert_eq!(normalize_location("relative/x"), "relative/x");
    }

    #[test]
    fn other_schemes_and_malformed_urls_are_refused_naming_the_accepted_forms() {
        for bad in [
            "ftp://host/x",
            "http://127.0.0.1/x",
            "s3://",
            "s3:///x",
            "s3://user:pw@lake/x",
            "s3://lake/a/../b",
            "s3://lake/x?versionId=1",
            "file://otherhost/x",
            "file://relative",
            "file:relative",
            "s3:/lake/x",
            "s3:lake",
            "S3:/lake/x",
            "gs:/b/x",
            "az:c",
            "https:/host/x",
            "",
        ] {
            let e = parse_location(bad).unwrap_err();
            assert!(e.contains("s3://BUCKET/PREFIX"), "{bad}: {e}");
            assert!(!e.contains("pw@"), "{bad}: {e}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        let check = |e: Option<&str>, allow| check_endpoint(e, "E", allow, "A");
        assert!(check(None, false).is_ok());
        assert!(check(Some("https://s3.example.com"), false).is_ok());
        assert!(check(Some("http://127.0.0.1:9000"), true).is_ok());
        assert!(check(Some("http://localhost:9000"), true).is_ok());
        let needs_allow = check(Some("http://127.0.0.1:9000"), false).unwrap_err();
        assert!(needs_allow.contains("A=true"), "{needs_allow}");
        for (e, allow) in [
            (Some("http://s3.example.com"), true),
            (Some("http://10.0.0.1:9000"), false),
            (Some("https://s3.example.com"), true),
            (None, true),
        ] {
            let msg = check(e, allow).unwrap_err();
            assert!(msg.contains("loopback"), "{e:?} {allow}: {msg}");
        }
    }

    #[test]
    fn store_errors_are_one_line_with_what_to_check() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: text.to_string().into(),
        };
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n\
                    <Error><Code>ContainerNotFound</Code><Message>The specified container does \
                    not exist.\nRequestId:1</Message></Error>";
        let text = describe_store_error(&generic(body));
        assert!(text.starts_with("the store answered 404 Not Found, ContainerNotFound: The specified container does not exist. RequestId:1;"), "{text}");
        assert!(text.contains("create it"), "{text}");
        assert!(!text.contains('\n') && !text.contains("<?xml"), "{text}");
        let text = describe_store_error(&generic(
            "Server returned non-2xx status code: 403 Forbidden: ",
        ));
        assert!(text.contains("list, get, put, copy and delete"), "{text}");
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )),
        };
        assert!(describe_store_error(&refused).starts_with("no answer from the store (refused)"));
    }

    #[test]
    fn keys_join_the_prefix_and_relative_strips_it() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let lake = Remote::new(remote(Scheme::S3, "b", "p/q"), store.clone());
        let key = lake.key("receipt_snapshots/x.parquet");
        assert_eq!(key.as_ref(), "p/q/receipt_snapshots/x.parquet");
        assert_eq!(lake.relative(&key), Some("receipt_snapshots/x.parquet"));
        // A prefix with characters object_store would percent-encode is used as written.
        let Location::Remote { prefix, .. } = parse_location("s3://b/odd dir/50%~x").unwrap()
        else {
            panic!("remote")
        };
        let odd = Remote::new(remote(Scheme::S3, "b", &prefix), store.clone());
        let key = odd.key("receipt_snapshots/x.parquet");
        assert_eq!(key.as_ref(), "odd dir/50%~x/receipt_snapshots/x.parquet");
        assert_eq!(odd.relative(&key), Some("receipt_snapshots/x.parquet"));
        let bare = Remote::new(remote(Scheme::S3, "b", ""), store);
        assert_eq!(bare.key("a/b").as_ref(), "a/b");
        assert_eq!(
            format!("{:?}", Lake::Remote(bare)),
            "Remote(Remote(s3://b))"
        );
    }
}
