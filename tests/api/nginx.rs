//! A real nginx in front of the gateway with `auth_request` against GET /api/v1/auth/verify
//! (`make nginx-check` runs only this; `make test` runs it with the rest). nginx listens on a
//! unix socket in the test's own directory, so no port is guessed; it proxies the auth
//! subrequest to a gateway instance on port 0.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;

use crate::external::{self, WorkDir};
use crate::helpers::{spawn_isolated_app_with, TestDatabase};

/// nginx killed when the test ends, pass or fail. With `master_process off` it is one
/// process, so killing it leaves no worker behind.
pub struct Nginx(pub Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An nginx answer: status, headers (names lower-cased), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One GET over the unix socket, `Connection: close`, read to the end.
pub fn get(socket: &Path, path: &str, bearer: Option<&str>) -> std::io::Result<Answer> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(key) = bearer {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// The config: /protected/ behind auth_request, everything inside `work`.
fn config(work: &WorkDir, nginx_build: &str, gateway_port: u16) -> String {
    let dir = work.0.display();
    // The module-specific temp paths are valid directives only when the module is built in.
    let optional_temp_paths: String = ["fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| !nginx_build.contains(&format!("--without-http_{module}_module")))
        .map(|module| format!("    {module}_temp_path {dir}/tmp/{module};\n"))
        .collect();
    format!(
        r#"# Written by tests/api/nginx.rs for one run; everything lives in {dir}.
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;

events {{
    worker_connections 64;
}}

http {{
    access_log {dir}/access.log;
    default_type text/plain;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
{optional_temp_paths}
    server {{
        listen unix:{dir}/nginx.sock;

        location = /_ready {{
            return 204;
        }}

        # auth_request sends a subrequest to /_auth for EVERY request (nginx caches nothing
        # here, which is why a revocation applies to the very next request; proxy_cache on
        # /_auth would delay it by the cache's validity):
        #   - subrequest 2xx -> the request is allowed;
        #   - subrequest 401 -> 401, with nginx's own page (the gateway's JSON envelope is
        #     not passed on; only a WWW-Authenticate header would be, and it sends none);
        #   - subrequest 403 -> 403;
        #   - anything else  -> 500: the gateway's 429 or 503, or nginx's own 502/504 when
        #     the gateway is unreachable or slow. Fail closed, as an error.
        #
        # NOT `return 200 "protected ok";` here: `return` runs in the rewrite phase, BEFORE
        # the access phase where auth_request runs, so it would answer 200 to everyone. The
        # content comes from the content phase: a proxy_pass to the real upstream in
        # production, a static file here (try_files switches to it without an internal
        # redirect, so the subrequest happens exactly once).
        location /protected/ {{
            auth_request /_auth;
            # Identity from the verify response's headers, for the protected upstream.
            auth_request_set $org $upstream_http_x_logstitch_organization_id;
            add_header X-Org $org;
            root {dir}/html;
            try_files /protected.txt =404;
        }}

        location = /_auth {{
            internal;
            proxy_pass http://127.0.0.1:{gateway_port}/api/v1/auth/verify;
            # Verify needs only the key: never send the client's body to it.
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            # Passed by default anyway; explicit because it is the whole point. Without one
            # from the client, the header is left out and the gateway answers 401.
            proxy_set_header Authorization $http_authorization;
        }}
    }}
}}
"#
    )
}

#[actix_web::test]
async fn nginx_auth_request_admits_valid_keys_refuses_revoked_ones_at_once_and_fails_closed() {
    let Some(nginx) = external::program("nginx", "nginx auth_request check") else {
        return;
    };
    let build = external::run_ok(&nginx, &["-V"]);
    assert!(
        build.contains("--with-http_auth_request_module"),
        "{} is built without auth_request (install Debian's nginx-light or nginx): {build}",
        nginx.display()
    );
    let app = spawn_isolated_app_with(TestDatabase::create().await, |_| {}).await;
    let org = app.create_org("nginx-check").await;
    let (key_id, key) = app.new_project_key(&org).await;

    let work = WorkDir::new("nginx");
    for dir in ["tmp", "html"] {
        std::fs::create_dir_all(work.path(dir)).unwrap();
    }
    std::fs::write(work.path("html/protected.txt"), "protected ok\n").unwrap();
    std::fs::write(work.path("nginx.conf"), config(&work, &build, app.port)).unwrap();
    let conf = work.path("nginx.conf");
    let prefix = format!("{}/", work.0.display());
    // -e: the startup error log too, instead of the compiled-in /var/log/nginx/error.log.
    let args = [
        "-p",
        &prefix,
        "-c",
        conf.to_str().unwrap(),
        "-e",
        &work.path("error.log").display().to_string(),
    ];
    let mut test_args = vec!["-t", "-q"];
    test_args.extend(args);
    external::run_ok(&nginx, &test_args);
    let _nginx = Nginx(
        Command::new(&nginx)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path("nginx.out")).unwrap())
            .spawn()
            .expect("nginx starts"),
    );
    let socket = work.path("nginx.sock");
    let started = Instant::now();
    while !get(&socket, "/_ready", None).is_ok_and(|answer| answer.status == 204) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not answer within 10 s:\n{}\n{}",
            work.tail("error.log"),
            work.tail("nginx.out")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let protected = |bearer: Option<&str>| {
        get(&socket, "/protected/", bearer).unwrap_or_else(|error| {
            panic!(
                "no answer from nginx ({error}):\n{}",
                work.tail("error.log")
            )
        })
    };

    assert_eq!(protected(None).status, 401, "no key");
    assert_eq!(
        protected(Some("ls_not_a_real_key_0000000000000000")).status,
        401,
        "unknown key"
    );
    let admitted = protected(Some(&key));
    assert_eq!(admitted.status, 200, "valid project key: {}", admitted.body);
    assert_eq!(admitted.body, "protected ok\n");
    assert_eq!(
        admitted.header("x-org"),
        Some(org.organization_id.as_str()),
        "the identity reaches the upstream side"
    );

    let revoked = app.revoke_key(&org.master_key, &key_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    // No sleep, no retry: the very next request must be refused.
    assert_eq!(
        protected(Some(&key)).status,
        401,
        "revoked key, very next request"
    );

    // With the gateway gone the subrequest gets nginx's 502, which auth_request turns into
    // 500: never into a pass.
    drop(app);
    let unreachable = protected(Some(&org.master_key));
    assert_eq!(
        unreachable.status, 500,
        "gateway unreachable: {}",
        unreachable.body
    );
}
