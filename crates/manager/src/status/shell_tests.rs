//! The shell's gate, without a cluster: every route but the sign-in form
//! needs a session, and a sign-in is checked before the state is read.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

async fn page() -> (Router, Shared, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = RaftNode::start(dir.path(), 7, &crate::raft::Timings::default()).await.expect("raft");
    let page = Arc::new(Page { raft, served_by: "m1".into(), sessions: Sessions::default() });
    (router(page.clone()), page, dir)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let mut req = req;
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 5000))));
    let response = app.clone().oneshot(req).await.expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("a request")
}

fn post(path: &str, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header(header::HOST, "stackd-manager:4443");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_string())).expect("a request")
}

#[tokio::test]
async fn the_page_needs_a_session() {
    let (app, _page, _dir) = page().await;
    let (code, headers, _) = send(&app, get("/", None)).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");

    // An unknown or closed session: the same, and the cookie goes.
    let (code, headers, _) = send(&app, get("/", Some(&format!("{COOKIE}=deadbeef")))).await;
    assert_eq!((code, &headers[header::LOCATION]), (StatusCode::SEE_OTHER, &HeaderValue::from_static("/login")));
    let cleared = headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cleared.contains("Max-Age=0") && cleared.contains("HttpOnly") && cleared.contains("Secure"), "{cleared}");

    let (code, headers, body) = send(&app, get("/login", None)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("name=\"token\""), "{body}");
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    let (code, _, _) = send(&app, get("/anything", None)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_lets_the_sign_in_form_through_to_the_page_and_sign_out_ends_it() {
    let (app, page, _dir) = page().await;
    let id = page.sessions.open("0123456789abcdef", now_ms());
    let cookie = format!("{COOKIE}={id}");
    let (code, headers, _) = send(&app, get("/login", Some(&cookie))).await;
    assert_eq!((code, &headers[header::LOCATION]), (StatusCode::SEE_OTHER, &HeaderValue::from_static("/")));
    let mut req = post("/logout", None, "");
    req.headers_mut().insert(header::COOKIE, cookie.parse().expect("a header"));
    let (code, _, _) = send(&app, req).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert!(page.sessions.get(&id, now_ms()).is_none(), "signed out");
}

#[tokio::test]
async fn a_sign_in_from_another_site_or_without_a_token_is_refused() {
    let (app, page, _dir) = page().await;
    let (code, _, body) = send(&app, post("/login", Some("https://evil.example"), "token=STKC-1-x")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("another site"), "{body}");
    let (code, _, body) = send(&app, post("/login", Some("https://stackd-manager:4443"), "token=")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("Paste a client token"), "{body}");

    // Too many failures from one address: refused before any check.
    for _ in 0..session::MAX_FAILURES {
        page.sessions.attempt("10.0.0.9".parse().expect("ip"), now_ms());
    }
    let (code, _, body) = send(&app, post("/login", None, "token=STKC-1-x")).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("Too many failed sign-ins"), "{body}");
}
