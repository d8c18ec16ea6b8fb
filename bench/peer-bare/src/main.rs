//! `make bench` only (xtask/src/bench/service.rs): the floor for `/healthz` and
//! `/api/v1/auth/verify`. One actix-web worker whose handlers do nothing but answer what the
//! gateway answered: status, headers and body recorded from a live gateway by the bench and
//! handed over in a file, so both send the same bytes and the difference in throughput is
//! what the gateway does per request (request id, metrics, throttle, auth, lastUsedAt).
//!
//! usage: peer-bare ANSWERS_FILE PORT_FILE
//! ANSWERS_FILE: `{"/healthz": {"status": 200, "headers": [["name", "value"], …], "body": "…"}, …}`
//! (listens on 127.0.0.1:0 and writes the port the kernel picked to PORT_FILE)

use std::io;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use serde_json::Value;

/// One recorded answer, parsed once; a request only clones it (reference counts, no copy).
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn answer(path: &str, recorded: &Value) -> io::Result<Answer> {
    let status = recorded["status"]
        .as_u64()
        .and_then(|code| StatusCode::from_u16(code as u16).ok())
        .ok_or_else(|| invalid(format!("{path}: no status")))?;
    let mut headers = Vec::new();
    for pair in recorded["headers"].as_array().into_iter().flatten() {
        let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
            return Err(invalid(format!("{path}: a header is not [name, value]")));
        };
        headers.push((
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?,
            HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?,
        ));
    }
    let body = recorded["body"]
        .as_str()
        .ok_or_else(|| invalid(format!("{path}: no body")))?;
    Ok(Answer {
        status,
        headers,
        body: Bytes::copy_from_slice(body.as_bytes()),
    })
}

async fn recorded(answer: web::Data<Answer>) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    for (name, value) in &answer.headers {
        response.insert_header((name.clone(), value.clone()));
    }
    response.body(answer.body.clone())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [answers, port_file] = args.as_slice() else {
        eprintln!("usage: peer-bare ANSWERS_FILE PORT_FILE");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(answers)?;
    let file: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let routes = file
        .as_object()
        .ok_or_else(|| invalid("the answers file is not an object".into()))?
        .iter()
        .map(|(path, recorded)| Ok((path.clone(), answer(path, recorded)?)))
        .collect::<io::Result<Vec<_>>>()?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            routes.iter().fold(App::new(), |app, (path, answer)| {
                app.service(
                    web::resource(path.as_str())
                        .app_data(web::Data::new(answer.clone()))
                        .route(web::get().to(recorded)),
                )
            })
        })
        .workers(1)
        .bind(("127.0.0.1", 0))?;
        std::fs::write(port_file, server.addrs()[0].port().to_string())?;
        server.run().await
    })
}
