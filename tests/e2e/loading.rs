//! Loading plugins: pins, missing and malformed files, incompatible contracts, and the
//! compiled-plugin cache.

use medic::host::{BUILTINS, CacheStatus, LoadError, PluginSource, fixtures};

use crate::support::*;

fn load_err(source: PluginSource, pin: Option<&str>) -> LoadError {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        host.load(&source, pin)
            .await
            .expect_err("the plugin should have been refused")
    })
}

#[test]
fn digest_mismatch_shows_both_digests() {
    let wrong = "0".repeat(64);
    let actual = BUILTINS
        .iter()
        .find(|b| b.name == "http-probe")
        .unwrap()
        .sha256;
    let err = load_err(PluginSource::Builtin("http-probe".into()), Some(&wrong)).to_string();
    assert!(err.contains(&format!("pinned:   {wrong}")), "{err}");
    assert!(err.contains(&format!("actual:   {actual}")), "{err}");
    assert!(
        err.starts_with("plugin builtin:http-probe does not match its pinned sha256"),
        "{err}"
    );
}

#[test]
fn a_correct_pin_loads_and_a_malformed_pin_is_explained() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let b = BUILTINS.iter().find(|b| b.name == "http-deploy").unwrap();
        let p = host
            .load(
                &PluginSource::Builtin(b.name.into()),
                Some(&b.sha256.to_uppercase()),
            )
            .await
            .unwrap();
        assert_eq!(p.sha256, b.sha256);
        assert_eq!(p.manifest.name, "http-deploy");
        assert!(p.manifest.supports_revert);
    });
    let err = load_err(PluginSource::Builtin("http-probe".into()), Some("abc")).to_string();
    assert!(err.contains("is not 64 hexadecimal characters"), "{err}");
}

#[test]
fn missing_file_and_unknown_builtin() {
    let err = load_err(PluginSource::File("/nonexistent/dir/p.wasm".into()), None).to_string();
    assert_eq!(
        err,
        "cannot read plugin file /nonexistent/dir/p.wasm: no such file"
    );
    let err = load_err(PluginSource::Builtin("http-prob".into()), None).to_string();
    assert!(
        err.starts_with(
            "there is no builtin plugin `http-prob` (builtins: http-probe, http-deploy, "
        ),
        "{err}"
    );
}

#[test]
fn non_component_and_non_wasm_files() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest valid core module: magic and version only.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = load_err(PluginSource::File(core.clone()), None).to_string();
    assert!(
        err.contains("is a core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(err.contains("wasm32-wasip2"), "{err}");

    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let err = load_err(PluginSource::File(text.clone()), None).to_string();
    assert_eq!(err, format!("{} is not a WebAssembly file", text.display()));

    // A component header with garbage after it.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let err = load_err(PluginSource::File(broken.clone()), None).to_string();
    assert!(
        err.starts_with(&format!("{} cannot be compiled:", broken.display())),
        "{err}"
    );
}

#[test]
fn incompatible_contract_names_both_versions() {
    let err = load_err(PluginSource::File(fixtures::INCOMPATIBLE.into()), None);
    assert!(
        matches!(err, LoadError::IncompatibleContract { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("was built for plugin contract medic:plugin@9.0.0"),
        "{msg}"
    );
    assert!(
        msg.contains("this medic supports medic:plugin@0.1.x"),
        "{msg}"
    );
}

#[test]
fn cache_hits_and_recovers_from_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let source = hostile_source();
        let first = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&first, &source).await;
        assert_eq!(p.cache, CacheStatus::Compiled);
        let entry = first.cache().unwrap().entry_path(&p.sha256);
        assert!(entry.exists());
        drop(first);

        // A new process (host) finds the entry, and wasmtime maps the file rather than
        // copying it.
        let second = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&second, &source).await;
        assert_eq!(p.cache, CacheStatus::Hit);
        // By its whole path: tests running beside this one map entries of the same name
        // from their own caches.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let path = entry.canonicalize().unwrap();
        let path = path.to_str().unwrap();
        assert!(maps.contains(path), "{path} is not mapped:\n{maps}");

        // Flip one byte in the middle of the compiled code: detected, recompiled, replaced.
        let mut bytes = std::fs::read(&entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&entry, &bytes).unwrap();
        let third = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&third, &source).await;
        assert_eq!(p.cache, CacheStatus::Replaced);
        let inv = third
            .invoke(
                &p,
                run_call(&[("mode", text("ok"))]),
                &ctx("after-corruption"),
                &Default::default(),
            )
            .await;
        assert!(inv.result.is_ok(), "{:?}", inv.result);

        // A truncated entry (a crash mid-write by an older version, a full disk) is also replaced.
        std::fs::write(&entry, &bytes[..100]).unwrap();
        let fourth = host_with_cache(Some(dir.path().to_owned()));
        assert_eq!(load(&fourth, &source).await.cache, CacheStatus::Replaced);
        let fifth = host_with_cache(Some(dir.path().to_owned()));
        assert_eq!(load(&fifth, &source).await.cache, CacheStatus::Hit);

        // Compiled code whose MAC is missing (a crash between the two writes) or truncated.
        let mac = entry.with_extension("mac");
        std::fs::remove_file(&mac).unwrap();
        let sixth = host_with_cache(Some(dir.path().to_owned()));
        assert_eq!(load(&sixth, &source).await.cache, CacheStatus::Replaced);
        let sealed = std::fs::read(&mac).unwrap();
        std::fs::write(&mac, &sealed[..sealed.len() - 1]).unwrap();
        let seventh = host_with_cache(Some(dir.path().to_owned()));
        assert_eq!(load(&seventh, &source).await.cache, CacheStatus::Replaced);
        let eighth = host_with_cache(Some(dir.path().to_owned()));
        assert_eq!(load(&eighth, &source).await.cache, CacheStatus::Hit);

        // A symlink at either name is never followed, even to a valid entry (copies of the
        // one just hit): whoever could place it chose what runs.
        let shelf = tempfile::tempdir().unwrap();
        for (i, name) in [entry.clone(), mac.clone()].into_iter().enumerate() {
            let valid = shelf.path().join(format!("{i}"));
            std::fs::copy(&name, &valid).unwrap();
            std::fs::remove_file(&name).unwrap();
            std::os::unix::fs::symlink(&valid, &name).unwrap();
            let host = host_with_cache(Some(dir.path().to_owned()));
            assert_eq!(
                load(&host, &source).await.cache,
                CacheStatus::Replaced,
                "{} was followed",
                name.display()
            );
            assert!(!std::fs::symlink_metadata(&name).unwrap().is_symlink());
        }
    });
}

#[test]
fn a_cache_on_a_file_system_mounted_noexec_is_still_used() {
    // Its files cannot be mapped executable: the checked bytes are copied into memory
    // instead, and the entry stays a hit rather than being recompiled at every load.
    let fs = Tmpfs::mount("size=64m,noexec");
    let dir = fs.dir.path().join("cache");
    let rt = runtime();
    rt.block_on(async {
        let source = hostile_source();
        let first = host_with_cache(Some(dir.clone()));
        assert_eq!(load(&first, &source).await.cache, CacheStatus::Compiled);
        drop(first);
        let second = host_with_cache(Some(dir.clone()));
        let p = load(&second, &source).await;
        assert_eq!(p.cache, CacheStatus::Hit);
        let inv = second
            .invoke(
                &p,
                run_call(&[("mode", text("ok"))]),
                &ctx("noexec"),
                &Default::default(),
            )
            .await;
        assert!(inv.result.is_ok(), "{:?}", inv.result);
    });
}

#[test]
fn a_compiled_entry_swapped_or_planted_in_the_cache_never_runs() {
    use medic::host::PluginSource;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let probe = PluginSource::Builtin("http-probe".into());
        let hostile = hostile_source();
        let first = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&first, &probe).await;
        let h = load(&first, &hostile).await;
        let cache = first.cache().unwrap();
        let probe_entry = cache.entry_path(&p.sha256);
        let hostile_entry = cache.entry_path(&h.sha256);
        // Swap: the hostile plugin's compiled code and its MAC under http-probe's name (a
        // valid entry of ours, for another plugin).
        std::fs::copy(&hostile_entry, &probe_entry).unwrap();
        let mac = |entry: &std::path::Path| entry.with_extension("mac");
        std::fs::copy(mac(&hostile_entry), mac(&probe_entry)).unwrap();
        drop(first);
        let second = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&second, &probe).await;
        assert_eq!(
            p.cache,
            CacheStatus::Replaced,
            "the swapped entry was trusted"
        );
        assert_eq!(p.manifest.name, "http-probe");

        // Planted: an entry written by someone without the key (here: the right header and
        // a plain sha256 as the checksum, as older versions wrote).
        let payload = std::fs::read(&hostile_entry).unwrap();
        use sha2::Digest;
        let planted = [&b"MEDICC03"[..], &sha2::Sha256::digest(&payload)].concat();
        std::fs::write(&probe_entry, &payload).unwrap();
        std::fs::write(mac(&probe_entry), planted).unwrap();
        let third = host_with_cache(Some(dir.path().to_owned()));
        let p = load(&third, &probe).await;
        assert_eq!(p.cache, CacheStatus::Replaced);
        assert_eq!(p.manifest.name, "http-probe");

        // The key is private to the user.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    });
}

#[test]
fn builtin_manifests_are_complete() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        for b in BUILTINS {
            let p = load(&host, &PluginSource::Builtin(b.name.into())).await;
            assert_eq!(p.manifest.name, b.name);
            assert!(
                !p.manifest.description.is_empty(),
                "{} has no description",
                b.name
            );
            assert_eq!(p.contract, "medic:plugin@0.1.1");
            assert!(p.validates(), "{} does not export validate", b.name);
            for param in &p.manifest.params {
                assert!(
                    !param.description.is_empty(),
                    "{}: parameter {} has no description",
                    b.name,
                    param.name
                );
            }
        }
    });
}

#[test]
fn a_plugin_built_before_the_tcp_capability_still_loads_and_runs() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::File(fixtures::LEGACY.into())).await;
        assert_eq!(plugin.contract, "medic:plugin@0.1.0");
        // Built before the optional `validate` export (0.1.1): it has none, and a check of
        // its parameters accepts them rather than failing.
        assert!(!plugin.validates());
        assert_eq!(host.check_params(&plugin, &[]).await, Ok(Vec::new()));
        let inv = host
            .invoke(&plugin, run_call(&[]), &ctx("old"), &Default::default())
            .await;
        assert_eq!(inv.result.unwrap().summary, "legacy plugin ran step old");
        assert_eq!(inv.logs[0].message, "still here");
    });
}

/// A local HTTPS server (Python's, with a certificate for 127.0.0.1 signed by a CA made
/// here) serving a plugin, redirects within and out of its host, and a log of what it
/// served.
struct PluginServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PluginServer {
    fn start(wasm: &std::path::Path) -> PluginServer {
        let dir = tempfile::tempdir().unwrap();
        crate::pglab::certificates(dir.path());
        std::fs::copy(wasm, dir.path().join("plugin.wasm")).unwrap();
        let port = crate::lab::free_port();
        let script = format!(
            r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("served.log", "a") as log:
            log.write(self.path + "\n")
        moves = {{"/same": "/plugin.wasm",
                 "/elsewhere": "https://localhost:{port}/plugin.wasm",
                 "/clear": "http://127.0.0.1:{port}/plugin.wasm"}}
        if self.path in moves:
            self.send_response(302)
            self.send_header("Location", moves[self.path])
            self.end_headers()
        elif self.path == "/plugin.wasm":
            body = open("plugin.wasm", "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()
    def log_message(self, *args):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.crt", "server.key")
s = http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#
        );
        let child = std::process::Command::new("python3")
            .args(["-c", &script])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the HTTPS server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        PluginServer { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn served(&self, path: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("served.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == path)
            .count()
    }
}

/// `https://` plugin sources: pinned, downloaded once into the cache, never over plain HTTP
/// nor through a redirect to another host; `medic plugin pin URL` gives the line to paste.
#[test]
fn plugins_from_https_urls_are_pinned_downloaded_once_and_never_redirected_elsewhere() {
    use crate::cli::{medic_command, stderr, stdout};
    use sha2::Digest;
    let wasm = std::path::PathBuf::from(fixtures::SCRIPTED_CHECK);
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&wasm).unwrap()));
    let server = PluginServer::start(&wasm);
    let ca = server.dir.path().join("ca.crt");
    let cache = tempfile::tempdir().unwrap();
    let medic = |args: &[&str]| {
        medic_command(cache.path())
            .env("MEDIC_CA_CERT", &ca)
            .args(args)
            .output()
            .unwrap()
    };

    let o = medic(&["plugin", "pin", &server.url("/plugin.wasm")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("sha256 = \"{digest}\""));

    let runbook = |source: &str, pin: Option<&str>| {
        let path = cache.path().join("rb.toml");
        std::fs::write(
            &path,
            format!(
                "[runbook]\nname = \"remote\"\n\n[plugins.check]\nsource = \"{source}\"\n{}grants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
                 [[steps]]\nid = \"look\"\nuses = \"check\"\n",
                pin.map(|p| format!("sha256 = \"{p}\"\n")).unwrap_or_default()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    // Not pinned: refused before anything is fetched, saying how to pin it.
    let served_before = server.served("/plugin.wasm");
    let o = medic(&["validate", &runbook(&server.url("/plugin.wasm"), None)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("comes from a URL but has no `sha256` pin")
            && stderr(&o).contains("medic plugin pin https://127.0.0.1:"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.served("/plugin.wasm"), served_before);

    // Pinned: downloaded once, then run from the cache (the server is not asked again).
    let rb = runbook(&server.url("/plugin.wasm"), Some(&digest));
    for _ in 0..2 {
        let o = medic(&["run", &rb]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    assert_eq!(server.served("/plugin.wasm"), served_before + 1);

    // A pin the file does not match: refused, both digests named.
    let o = medic(&[
        "validate",
        &runbook(&server.url("/same"), Some(&"0".repeat(64))),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("actual:   {digest}")),
        "{}",
        stderr(&o)
    );

    // Redirects: within the host followed; to another host or to plain HTTP refused.
    let o = medic(&["plugin", "pin", &server.url("/same")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (path, said) in [
        ("/elsewhere", "another host: refused"),
        ("/clear", "another host: refused"),
    ] {
        let o = medic(&["plugin", "pin", &server.url(path)]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", stdout(&o));
        assert!(stderr(&o).contains(said), "{path}: {}", stderr(&o));
    }
    let o = medic(&[
        "plugin",
        "pin",
        &format!("http://127.0.0.1:{}/plugin.wasm", server.port),
    ]);
    assert!(
        stderr(&o).contains("only https:// URLs are accepted"),
        "{}",
        stderr(&o)
    );

    // A server whose certificate nobody vouches for: refused.
    let o = medic_command(cache.path())
        .env_remove("MEDIC_CA_CERT")
        .args(["plugin", "pin", &server.url("/plugin.wasm")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot download plugin")
            && stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
}
