//! Copies of backups in an S3-compatible store (AWS, MinIO, Garage, Ceph, R2), through
//! `object_store`'s S3 client: it signs requests, retries, and uploads in parts. A copy is
//! streamed from the local file in parts (never the whole file in memory), carries the
//! backup's SHA-256 as object metadata, and is checked after the upload: its size, that
//! metadata, and its ETag against the MD5s of what was sent.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BackupError, Progress};

/// The object metadata key holding the backup's SHA-256 (sent as `x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// Parts of at least this size (S3 refuses smaller parts but the last).
const MIN_PART: usize = 8 << 20;
/// S3 allows at most 10,000 parts; parts grow for files past ~80 GB.
const MAX_PARTS: u64 = 9_000;
/// Parts in flight at once: memory stays at a few parts whatever the file's size.
const IN_FLIGHT: usize = 2;

/// How to reach the store. A field left `None` comes from the standard AWS environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Retries of a failed request (default 4).
    pub max_retries: Option<usize>,
    /// Part size of multipart uploads (default 8 MiB, more for very large files).
    pub part_size: Option<usize>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// An `s3://bucket/key` location (for a copy target, the key is a prefix, maybe empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// Whether `s` names an S3 location.
    pub fn is_s3(s: &str) -> bool {
        s.starts_with("s3://")
    }

    /// Parses `s3://bucket[/key]`, saying what is wrong with a bad one.
    pub fn parse(s: &str) -> Result<S3Url, BackupError> {
        let bad = |why: &str| BackupError::Unsupported(format!("`{s}` is not a valid s3://bucket/key location: {why}"));
        let rest = s.strip_prefix("s3://").ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's own rule for bucket names: 3 to 63 lower-case letters, digits, dots, dashes.
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        if !valid {
            return Err(bad("the bucket name must be 3 to 63 lower-case letters, digits, dots or dashes"));
        }
        let key = key.trim_matches('/');
        if !key.is_empty() {
            Key::parse(key).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() })
    }

    /// The object `name` under this prefix.
    pub fn join(&self, name: &str) -> S3Url {
        let key = if self.key.is_empty() { name.to_string() } else { format!("{}/{name}", self.key) };
        S3Url { bucket: self.bucket.clone(), key }
    }

    fn manifest(&self) -> S3Url {
        S3Url { bucket: self.bucket.clone(), key: format!("{}.json", self.key) }
    }

    fn object(&self) -> Result<Key, BackupError> {
        Key::parse(&self.key).map_err(|e| self.error(e))
    }

    fn error(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::Remote { url: self.to_string(), message: e.to_string() }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A client for `bucket`: the AWS environment, overridden by `s`. A plain-HTTP endpoint
/// (a store on the same host or network) is allowed because the operator named it.
pub fn store(bucket: &str, s: &S3Settings) -> Result<AmazonS3, BackupError> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(v) = &s.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &s.region {
        b = b.with_region(v);
    }
    if let Some(v) = &s.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &s.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if b.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some_and(|e| e.starts_with("http://")) {
        b = b.with_allow_http(true);
    }
    let retry = RetryConfig {
        max_retries: s.max_retries.unwrap_or(4),
        retry_timeout: Duration::from_secs(120),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
    };
    // Set key by key, so the client options the environment gave (a proxy) are kept.
    b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "10s")
        .with_retry(retry)
        .build()
        .map_err(|e| BackupError::Remote { url: format!("s3://{bucket}"), message: e.to_string() })
}

/// Uploads `file` (of `size` bytes and SHA-256 `sha256`) and then its `manifest` under
/// the prefix `to`, checks the upload, and returns the copy's `s3://` URL. A copy that
/// does not check out is deleted and reported.
pub(super) async fn upload(
    file: &Path,
    manifest: &Path,
    size: u64,
    sha256: &str,
    to: &S3Url,
    s: &S3Settings,
    progress: &dyn Progress,
) -> Result<String, BackupError> {
    let name = file.file_name().ok_or_else(|| BackupError::Unsupported(format!("{} has no name", file.display())))?;
    let url = to.join(&name.to_string_lossy());
    let store = store(&url.bucket, s)?;
    let key = url.object()?;
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::Metadata(SHA256_METADATA.into()), sha256.to_string().into());
    let part = part_size(size, s.part_size);
    progress.step("upload", Some(size));
    let etag = send(&store, &key, file, part, attributes, &url, progress).await?;
    if let Err(e) = check(&store, &key, &url, size, sha256, &etag).await {
        let _ = store.delete(&key).await;
        return Err(e);
    }
    let text = tokio::fs::read(manifest).await.map_err(|e| BackupError::io(manifest, e))?;
    let m = url.manifest();
    store.put(&m.object()?, PutPayload::from(text)).await.map_err(|e| m.error(e))?;
    Ok(url.to_string())
}

fn part_size(size: u64, configured: Option<usize>) -> usize {
    let needed = usize::try_from(size.div_ceil(MAX_PARTS)).unwrap_or(usize::MAX).next_multiple_of(1 << 20);
    configured.unwrap_or(MIN_PART).max(needed)
}

/// Streams `file` to `key`: one request when it fits in a part, else a multipart upload
/// (aborted on failure, so no half object is left behind). Returns the ETag S3 computes
/// for what was sent: the MD5, or for parts the MD5 of their MD5s and their count.
async fn send(
    store: &AmazonS3,
    key: &Key,
    file: &Path,
    part: usize,
    attributes: Attributes,
    url: &S3Url,
    progress: &dyn Progress,
) -> Result<String, BackupError> {
    let mut f = tokio::fs::File::open(file).await.map_err(|e| BackupError::io(file, e))?;
    let mut first = vec![0u8; part];
    let n = read_full(&mut f, &mut first).await.map_err(|e| BackupError::io(file, e))?;
    first.truncate(n);
    let mut extra = [0u8; 1];
    let more = f.read(&mut extra).await.map_err(|e| BackupError::io(file, e))?;
    if more == 0 {
        let etag = hex::encode(Md5::digest(&first));
        let opts = PutOptions { attributes, ..Default::default() };
        store.put_opts(key, PutPayload::from(first), opts).await.map_err(|e| url.error(e))?;
        progress.at(n as u64);
        return Ok(etag);
    }
    let opts = PutMultipartOptions { attributes, ..Default::default() };
    let upload = store.put_multipart_opts(key, opts).await.map_err(|e| url.error(e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
    let mut parts = Md5::new();
    let mut count = 1u32;
    parts.update(Md5::digest(&first));
    writer.write(&first);
    let mut buf = first;
    buf[0] = extra[0];
    let mut filled = 1;
    let mut done = (n + 1) as u64;
    loop {
        let read = match read_full(&mut f, &mut buf[filled..]).await {
            Ok(r) => r,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(BackupError::io(file, e));
            }
        };
        filled += read;
        done += read as u64;
        if filled == 0 {
            break;
        }
        // Whole parts, as `WriteMultipart` cuts them, so the MD5s match its parts.
        if let Err(e) = writer.wait_for_capacity(IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(url.error(e));
        }
        parts.update(Md5::digest(&buf[..filled]));
        count += 1;
        writer.write(&buf[..filled]);
        progress.at(done);
        if filled < part {
            break;
        }
        filled = 0;
    }
    writer.finish().await.map_err(|e| url.error(e))?;
    Ok(format!("{}-{count}", hex::encode(parts.finalize())))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

/// Reads the object's head back: its size and SHA-256 metadata must be what was sent.
/// The ETag is compared when it has the MD5 form (stores that encrypt with their own keys
/// return other ETags, which say nothing about the content).
async fn check(
    store: &AmazonS3,
    key: &Key,
    url: &S3Url,
    size: u64,
    sha256: &str,
    etag: &str,
) -> Result<(), BackupError> {
    let head = store.get_opts(key, GetOptions { head: true, ..Default::default() }).await.map_err(|e| url.error(e))?;
    if head.meta.size != size {
        return Err(url.error(format!("the store holds {} bytes, {size} were sent", head.meta.size)));
    }
    let stored = head.attributes.get(&Attribute::Metadata(SHA256_METADATA.into())).map(|v| v.as_ref().to_string());
    if stored.as_deref() != Some(sha256) {
        return Err(url.error(format!("its sha256 metadata is {stored:?}, expected {sha256}")));
    }
    let got = head.meta.e_tag.unwrap_or_default().trim_matches('"').to_ascii_lowercase();
    let md5_form = got.split('-').next().is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_hexdigit()));
    if md5_form && got != etag {
        return Err(BackupError::Corrupt { file: url.to_string(), expected: etag.into(), actual: got });
    }
    if !md5_form {
        tracing::info!(%url, etag = %got, "the store's ETag is not an MD5: checked by size and metadata");
    }
    Ok(())
}

/// What a download brought: the object's SHA-256 metadata, and whether a manifest came.
pub(super) struct Downloaded {
    pub sha256_metadata: Option<String>,
}

/// Downloads `url` to `file` (and its manifest, when the store has one, beside it).
pub(super) async fn download(
    url: &S3Url,
    file: &Path,
    manifest: &Path,
    s: &S3Settings,
    progress: &dyn Progress,
) -> Result<Downloaded, BackupError> {
    let store = store(&url.bucket, s)?;
    let got = store.get(&url.object()?).await.map_err(|e| url.error(e))?;
    let sha256_metadata =
        got.attributes.get(&Attribute::Metadata(SHA256_METADATA.into())).map(|v| v.as_ref().to_string());
    progress.step("download", Some(got.meta.size));
    let mut out = tokio::fs::File::create(file).await.map_err(|e| BackupError::io(file, e))?;
    let mut stream = got.into_stream();
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| url.error(e))?;
        out.write_all(&chunk).await.map_err(|e| BackupError::io(file, e))?;
        done += chunk.len() as u64;
        progress.at(done);
    }
    out.sync_all().await.map_err(|e| BackupError::io(file, e))?;
    let m = url.manifest();
    match store.get(&m.object()?).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| m.error(e))?;
            tokio::fs::write(manifest, &bytes).await.map_err(|e| BackupError::io(manifest, e))?;
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(m.error(e)),
    }
    Ok(Downloaded { sha256_metadata })
}

/// Deletes the copy at `url` and its manifest; one already gone is fine.
pub(super) async fn remove(url: &S3Url, s: &S3Settings) -> Result<(), BackupError> {
    let store = store(&url.bucket, s)?;
    for u in [url.clone(), url.manifest()] {
        match store.delete(&u.object()?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(u.error(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::S3Url;

    #[test]
    fn locations_parse_or_say_what_is_wrong() {
        let u = S3Url::parse("s3://backups-1/j1msky/prod/").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("backups-1", "j1msky/prod"));
        assert_eq!(u.join("a.db").to_string(), "s3://backups-1/j1msky/prod/a.db");
        assert_eq!(S3Url::parse("s3://bk1").unwrap().join("a.db").to_string(), "s3://bk1/a.db");
        for bad in ["s3://", "s3://B/x", "s3://ab", "file:///x", "s3://bucket/a//b", "s3://bucket/../x"] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(super::part_size(10, None), 8 << 20);
        assert!(super::part_size(200_000_000_000, None) as u64 * super::MAX_PARTS >= 200_000_000_000);
    }
}
