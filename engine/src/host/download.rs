//! Plugins from `https://` URLs. A runbook must pin such a plugin's sha256 (validation says
//! so); the file is downloaded once into the cache directory under that digest and read from
//! there afterwards, so a run neither depends on the server nor trusts what it serves now.
//! Only HTTPS, with the system's CAs and `--ca-cert` (`MEDIC_CA_CERT`); redirects only within
//! the same host (a redirect elsewhere is refused, naming where it led); at most
//! [`crate::input::MAX_PLUGIN_BYTES`].

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::LoadError;

/// Where downloaded plugins are kept: beside the compiled ones.
fn kept(cache_dir: &Path, digest: &str) -> std::path::PathBuf {
    cache_dir.join("downloads").join(format!("{digest}.wasm"))
}

/// The plugin at `url`: from the cache when its pinned digest is there, else downloaded
/// (and, pinned and matching, kept). Returns its bytes and sha256.
pub(super) async fn fetch(
    url: &url::Url,
    pin: Option<&str>,
    cache_dir: Option<&Path>,
    ca_cert: Option<&Path>,
) -> Result<(Vec<u8>, String), LoadError> {
    let shown = url.to_string();
    let fail = |reason: String| LoadError::Download {
        url: shown.clone(),
        reason,
    };
    if url.scheme() != "https" {
        return Err(fail(
            "only https:// URLs are accepted (a plugin fetched in clear could be swapped on the way)"
                .into(),
        ));
    }
    let pin = pin.map(|p| p.trim().to_ascii_lowercase());
    if let (Some(dir), Some(pin)) = (cache_dir, pin.as_deref())
        && let Ok(bytes) =
            crate::input::read_bounded(&kept(dir, pin), crate::input::MAX_PLUGIN_BYTES)
        && hex::encode(Sha256::digest(&bytes)) == pin
    {
        return Ok((bytes, pin.to_owned()));
    }
    let bytes = download(url, ca_cert).await.map_err(fail)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if let (Some(dir), Some(pin)) = (cache_dir, pin.as_deref())
        && digest == pin
    {
        let path = kept(dir, pin);
        let saved = std::fs::create_dir_all(path.parent().expect("a parent"))
            .and_then(|()| crate::private::write_atomic(&path, &bytes));
        if let Err(e) = saved {
            // The cache only saves a download; the run goes on.
            tracing::warn!(url = %shown, "cannot keep the downloaded plugin in {}: {e}", path.display());
        }
    }
    Ok((bytes, digest))
}

async fn download(url: &url::Url, ca_cert: Option<&Path>) -> Result<Vec<u8>, String> {
    super::install_crypto_provider();
    let origin = (
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    );
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let to = attempt.url();
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if to.scheme() == "https"
            && (to.host_str().map(str::to_owned), to.port_or_known_default()) == origin
        {
            attempt.follow()
        } else {
            let to = to.to_string();
            attempt.error(format!("redirected to {to}, another host: refused"))
        }
    });
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(policy)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120));
    if let Some(ca) = ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca-cert {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("--ca-cert {}: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut response = client.get(url.clone()).send().await.map_err(|e| {
        // reqwest wraps the reason (a refused redirect, a certificate) in its sources.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    })?;
    if !response.status().is_success() {
        return Err(format!("the server answered {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > crate::input::MAX_PLUGIN_BYTES {
            return Err(format!(
                "larger than {}: not a plugin this medic loads",
                super::limits::format_bytes(crate::input::MAX_PLUGIN_BYTES)
            ));
        }
    }
    Ok(bytes)
}
